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

from cld_lightning.app.config_check import (
    CLD_SCHEMA,
    TRAIN_GROUPS,
    ConfigError,
    PlotsOptions,
    TrainOptions,
    check_cld,
    check_target_keys,
    check_train_config,
    check_train_options,
)
from cld_lightning.cld.config import CLDConfig
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


def test_train_options_schema_states_train_yaml_values(tmp_path: Path) -> None:
    """The top-level keys of train.yaml (not groups) are exactly TrainOptions' fields, with the
    schema's defaults as values; every experiment composes to a config the schema accepts."""
    own = OmegaConf.to_container(OmegaConf.load(CONF / "train.yaml"), resolve=False)
    own.pop("defaults")
    assert own == asdict(TrainOptions())
    assert set(own).isdisjoint(TRAIN_GROUPS)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("+final_knnn=false", "final_knnn"),  # typo of a top-level key
        ("+selection.num_image=100", r"selection\.num_image"),  # typo inside a block
        ("+plots.max_point=10", r"plots\.max_point"),
        ("final_knn=maybe", "final_knn"),  # wrong type
        ("selection.num_images=many", r"selection\.num_images"),
        ("selection.score=retreival", r"selection\.score"),  # invalid value
        ("plots.method=tnse", r"plots\.method"),
        ("plots.max_points=0", r"plots\.max_points"),
    ],
)
def test_train_options_reject_typos_naming_the_key(override: str, key: str, compose_train) -> None:
    cfg = compose_train(override)
    with pytest.raises(ConfigError, match=key):
        check_train_config(cfg)


def test_train_options_accept_the_composed_values(compose_train) -> None:
    cfg = compose_train("selection=null", "final_knn=false", "tags=[a,b]", "seed=3")
    opts = check_train_options(cfg)
    assert opts.selection is None and opts.final_knn is False and opts.tags == ["a", "b"]
    assert opts.seed == 3 and opts.plots == PlotsOptions()
    opts = check_train_options(compose_train("selection.score=group", "plots.method=pca"))
    assert opts.selection.score == "group" and opts.plots.method == "pca"


def test_cld_files_do_not_restate_the_dataclass() -> None:
    """`cld/on.yaml` and `cld/off.yaml` take every key from the registered `CLDConfig` schema;
    off.yaml states only what differs (`enabled`)."""
    on = OmegaConf.to_container(OmegaConf.load(CONF / "cld" / "on.yaml"))
    off = OmegaConf.to_container(OmegaConf.load(CONF / "cld" / "off.yaml"))
    assert on == {"defaults": [CLD_SCHEMA, "_self_"]}
    assert off == {"defaults": [CLD_SCHEMA, "_self_"], "enabled": False}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cld.weight=abc", "could not be converted to Float"),
        ("cld.num_clusters=2.5", "could not be converted to Integer"),
        ("cld.spherical=maybe", "is not a valid bool"),
        ("cld.wieght=2", "Key 'wieght' not in 'CLDConfig'"),
    ],
)
def test_cld_schema_types_overrides(override: str, message: str) -> None:
    """The `cld` group is typed by the schema: a wrong type or an unknown key fails at composition,
    naming the full key."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        with pytest.raises(Exception) as info:  # Hydra's OverrideError (wraps OmegaConf's)
            compose("train", overrides=[override])
    GlobalHydra.instance().clear()
    text = str(info.value) + str(info.value.__cause__)
    assert message in text and override.split("=")[0] in text


def test_cld_schema_values_reach_the_checker() -> None:
    """Overrides through the schema arrive typed (an int given for a float key becomes a float)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["cld.weight=2", "cld.hidden_dim=64", "cld=off"])
    GlobalHydra.instance().clear()
    cld = check_cld(cfg.cld)
    assert cld == CLDConfig(enabled=False, weight=2.0, hidden_dim=64)
    assert isinstance(cfg.cld.weight, float)
