"""The `data` and `cld` groups extend a base file through Hydra's defaults list; each composed
config must stay key-for-key what it was when every file listed every key.

``tests/golden/composed_configs.json`` holds the resolved dicts composed from the files as they
were before the split (``paths.data_dir=/DATA``, ``seed=7``); regenerate it only for an
intended change of a value.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from cld_lightning.cld.config import CLDConfig
from cld_lightning.config_check import ConfigError, check_cld, check_target_keys
from cld_lightning.data import SSLDataModule

CONF = Path(__file__).resolve().parents[1] / "conf"
GOLDEN = json.loads((Path(__file__).parent / "golden" / "composed_configs.json").read_text())
DATA_NAMES = sorted(p.stem for p in (CONF / "data").glob("*.yaml") if not p.stem.startswith("_"))


def compose_group(tmp_path: Path, group: str, name: str, group_dir: Path | None = None) -> dict:
    """Compose ``group=name`` alone under a minimal primary config; the resolved group dict."""
    primary = tmp_path / "conf"
    primary.mkdir(exist_ok=True)
    (primary / "train.yaml").write_text(
        f"defaults:\n  - {group}: null\n  - _self_\nseed: 7\npaths:\n  data_dir: /DATA\n"
    )
    link = primary / group
    if not link.exists():
        link.symlink_to(group_dir or CONF / group)
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(primary), version_base="1.3"):
        cfg = compose("train", overrides=[f"{group}={name}"])
    GlobalHydra.instance().clear()
    return OmegaConf.to_container(cfg[group], resolve=True)  # type: ignore[return-value]


def test_golden_covers_every_config() -> None:
    assert sorted(GOLDEN["data"]) == DATA_NAMES
    assert sorted(GOLDEN["cld"]) == ["off", "on"]


@pytest.mark.parametrize("name", DATA_NAMES)
def test_data_config_composes_to_the_same_values(name: str, tmp_path: Path) -> None:
    got = compose_group(tmp_path, "data", name)
    assert got == GOLDEN["data"][name]
    # every SSLDataModule argument is present, so any `data.<key>=...` override is accepted
    params = set(inspect.signature(SSLDataModule.__init__).parameters) - {"self"}
    assert set(got) - {"_target_"} == params
    check_target_keys(OmegaConf.create(got), "data")


def test_base_data_config_states_the_constructor_defaults(tmp_path: Path) -> None:
    # the shared values are SSLDataModule's own defaults, except where cld-train wires them
    base = OmegaConf.load(CONF / "data" / "_base.yaml")
    sig = inspect.signature(SSLDataModule.__init__).parameters
    wired = {"dataset": "???", "root": "${paths.data_dir}", "seed": "${seed}"}
    for key, value in OmegaConf.to_container(base, resolve=False).items():
        if key == "_target_":
            assert value == "cld_lightning.data.SSLDataModule"
        elif key in wired:
            assert value == wired[key], key
        else:
            assert value == sig[key].default, key


def test_data_files_state_only_what_differs() -> None:
    base = OmegaConf.to_container(OmegaConf.load(CONF / "data" / "_base.yaml"), resolve=False)
    for name in DATA_NAMES:
        own = OmegaConf.to_container(OmegaConf.load(CONF / "data" / f"{name}.yaml"), resolve=False)
        assert own.pop("defaults") == ["_base", "_self_"], name
        assert "dataset" in own, name
        same = [k for k, v in own.items() if k in base and base[k] == v]
        assert same == [], f"data/{name}.yaml restates {same}"


@pytest.mark.parametrize("name", ["on", "off"])
def test_cld_config_composes_to_the_same_values(name: str, tmp_path: Path) -> None:
    got = compose_group(tmp_path, "cld", name)
    assert got == GOLDEN["cld"][name]
    expected = asdict(CLDConfig())
    expected["enabled"] = name == "on"
    assert got == expected  # on.yaml = CLDConfig's defaults; off.yaml differs in `enabled` only
    assert check_cld(OmegaConf.create(got)) == CLDConfig(**expected)


@pytest.mark.parametrize("name", ["on", "off"])
def test_cld_checker_still_rejects_typos(name: str, tmp_path: Path) -> None:
    cfg = OmegaConf.create(compose_group(tmp_path, "cld", name))
    cfg.wieght = 2.0
    with pytest.raises(ConfigError, match="wieght"):
        check_cld(cfg)
