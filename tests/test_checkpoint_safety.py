"""Checkpoints never run code, are written atomically and are never overwritten by a fresh run.

A real ``cld-train`` checkpoint with a pickle payload (an object whose ``__reduce__`` creates a
marker file) is given to every reader: the marker must never appear and each refusal is one line
naming the file and ``trust_checkpoint``. Old checkpoints of this project (a ``CLDConfig`` pickled
among the hyper-parameters) still load, as plain dicts.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from cld_lightning.app.checkpointing import SafeCheckpointIO, use_safe_checkpoint_io
from cld_lightning.app.checkpoints import read_checkpoint
from cld_lightning.app.config_check import check_eval_keys, eval_keys
from cld_lightning.app.errors import ConfigError
from cld_lightning.app.evaluate import load_pretrained
from cld_lightning.app.train import train
from cld_lightning.cld.config import CLDConfig
from cld_lightning.methods import MoCo
from cld_lightning.methods.base import backbone_from_checkpoint
from cld_lightning.modules.checkpoint_io import (
    UntrustedCheckpointError,
    atomic_save,
    load_checkpoint,
)
from tests.conftest import CONF_DIR, TINY
from tests.distributed.helpers import script_env
from tests.helpers import FAST_TRAIN, TinyDataModule, make_npid, quiet_trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this creates ``marker`` (``open(marker, "w")``): the stand-in for any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _compose(name: str, *overrides: str) -> Any:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    GlobalHydra.instance().clear()
    return cfg


def _train_overrides(data_root: Path, out: Path, *extra: str) -> list[str]:
    return [
        *FAST_TRAIN,
        "method=moco",
        "method.queue_size=32",
        "cld.num_clusters=4",
        "data=cifar10",
        f"paths.data_dir={data_root}",
        f"paths.output_dir={out}",
        *TINY,
        "logger=none",
        "trainer.max_steps=2",
        "trainer.max_epochs=-1",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory, fake_data_root) -> Path:
    """A ``cld-train`` checkpoint written by today's code (MoCo + CLD, 2 steps)."""
    out = tmp_path_factory.mktemp("train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(_compose("train", *_train_overrides(fake_data_root, out)))
    finally:
        torch.set_num_threads(threads)  # later tests' figures depend on the thread count
    return out / "checkpoints" / "last.ckpt"


def _with(src: Path, dst: Path, **entries: Any) -> Path:
    ckpt = load_checkpoint(src)
    ckpt.update(entries)
    torch.save(ckpt, dst)
    return dst


def _one_line_refusal(err: BaseException, path: Path) -> None:
    text = str(err)
    assert "\n" not in text and str(path) in text and "trust_checkpoint" in text, text


# ------------------------------------------------------------------ what a checkpoint holds
def test_todays_checkpoint_holds_only_plain_data(trained_ckpt: Path) -> None:
    """No allow-list needed: torch's own weights-only reader loads it; the config is plain."""
    ckpt = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
    assert type(ckpt["hyper_parameters"]["cld"]) is dict
    assert ckpt["hyper_parameters"]["cld"]["num_clusters"] == 4
    assert ckpt["cld_lightning_config"]["trust_checkpoint"] is False
    assert ckpt["global_step"] == 2


def test_old_checkpoint_with_a_config_record_loads_as_plain_dicts(
    trained_ckpt: Path, tmp_path: Path
) -> None:
    """Checkpoints written before the hyper-parameters were made plain held a ``CLDConfig``:
    they load safely, the record as a dict, through every reader."""
    old = load_checkpoint(trained_ckpt)
    old["hyper_parameters"]["cld"] = CLDConfig(num_clusters=4, weight=0.25)
    path = tmp_path / "old.ckpt"
    torch.save(old, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)  # the old format: torch alone refuses it
    loaded = load_checkpoint(path)
    assert type(loaded["hyper_parameters"]["cld"]) is dict
    assert loaded["hyper_parameters"]["cld"]["weight"] == 0.25
    assert read_checkpoint(path)["hyper_parameters"]["cld"]["num_clusters"] == 4
    model = MoCo.load_from_checkpoint(path)
    assert CLDConfig.from_any(model.hparams["cld"]) == CLDConfig(num_clusters=4, weight=0.25)
    reference = load_checkpoint(trained_ckpt)["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    assert backbone_from_checkpoint(path).feature_dim == model.feature_dim


# ------------------------------------------------------------------ a payload never runs
def test_payload_never_runs_in_any_python_reader(trained_ckpt: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = _with(trained_ckpt, tmp_path / "evil.ckpt", extra=Payload(marker))
    readers = {
        "load_checkpoint": lambda: load_checkpoint(evil),
        "read_checkpoint": lambda: read_checkpoint(evil),
        "load_pretrained": lambda: load_pretrained(evil),
        "load_from_checkpoint": lambda: MoCo.load_from_checkpoint(evil),
        "backbone_from_checkpoint": lambda: backbone_from_checkpoint(evil),
        "file object": lambda: backbone_from_checkpoint(open(evil, "rb")),  # noqa: SIM115
    }
    for name, read in readers.items():
        with pytest.raises((UntrustedCheckpointError, ConfigError)) as info:
            read()
        assert "io.open" in str(info.value), name
        _one_line_refusal(info.value, evil)
        assert not marker.exists(), name
    # Lightning's own resume (Python API): the safe IO refuses it before any unpickling
    trainer = quiet_trainer(max_steps=1)
    use_safe_checkpoint_io(trainer)
    with pytest.raises(UntrustedCheckpointError):
        trainer.fit(make_npid(), datamodule=TinyDataModule(), ckpt_path=str(evil))
    assert not marker.exists()
    # the opt-in does what it says (and is the only way the payload runs)
    load_checkpoint(evil, trust=True)
    assert marker.exists()


def test_stored_config_cannot_name_foreign_code(trained_ckpt: Path, tmp_path: Path) -> None:
    """The config inside a checkpoint is data until Hydra builds it: a ``_target_`` outside this
    project's builders (here nested in the backbone's arguments) is refused before anything is
    built, in cld-eval, ``load_from_checkpoint`` and ``backbone_from_checkpoint``."""
    marker = tmp_path / "PWNED"
    config = load_checkpoint(trained_ckpt)["cld_lightning_config"]
    config["backbone"]["width"] = {"_target_": "os.system", "command": f"touch {marker}"}
    evil = _with(trained_ckpt, tmp_path / "target.ckpt", cld_lightning_config=config)
    for read in (
        lambda: load_pretrained(evil),
        lambda: MoCo.load_from_checkpoint(evil),
        lambda: backbone_from_checkpoint(evil),
    ):
        with pytest.raises((UntrustedCheckpointError, ConfigError), match="os.system") as info:
            read()
        _one_line_refusal(info.value, evil)
        assert "backbone.width._target_" in str(info.value)
    assert not marker.exists()


def test_cli_refuses_a_payload_in_one_line(trained_ckpt: Path, tmp_path: Path) -> None:
    """cld-train resume (its pre-check) and cld-eval, as a user runs them."""
    marker = tmp_path / "PWNED"
    evil = _with(trained_ckpt, tmp_path / "evil.ckpt", extra=Payload(marker))
    config = load_checkpoint(trained_ckpt)["cld_lightning_config"]
    runs = {
        "cld-train": [
            "cld_lightning.app.train",
            *_train_overrides(Path(config["paths"]["data_dir"]), tmp_path / "run"),
            f"ckpt_path={evil}",
        ],
        "cld-eval": ["cld_lightning.app.evaluate", f"ckpt_path={evil}", "progress=false"],
    }
    for name, args in runs.items():
        proc = subprocess.run(
            [sys.executable, "-m", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=script_env(),
            cwd=tmp_path,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, (name, out[-2000:])
        assert "Traceback" not in out, (name, out[-2000:])
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{name}: ")]
        assert len(lines) == 1 and str(evil) in lines[0] and "trust_checkpoint=true" in lines[0]
        assert not marker.exists(), name


def test_trust_checkpoint_is_a_checked_key() -> None:
    cfg = _compose("train", "+trust_checkpont=true")
    from cld_lightning.app.config_check import check_train_options

    with pytest.raises(ConfigError, match="unknown key trust_checkpont"):
        check_train_options(cfg)
    assert check_train_options(_compose("train", "trust_checkpoint=true")).trust_checkpoint
    with pytest.raises(ConfigError, match=r"unknown key\(s\) trust_checkpont"):
        check_eval_keys(_compose("eval", "ckpt_path=x", "+trust_checkpont=true"))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) knn.kk"):
        check_eval_keys(_compose("eval", "ckpt_path=x", "+knn.kk=3"))
    check_eval_keys(_compose("eval", "ckpt_path=x", "trust_checkpoint=true"))


def test_eval_keys_are_the_files() -> None:
    keys = eval_keys()
    assert {"ckpt_path", "trust_checkpoint", "output_dir", "knn", "paths", "data"} <= keys[""]
    assert "defaults" in keys[""] and "data_overrides" not in keys  # free-form node
    assert {"enabled", "k", "temperature"} <= keys["knn"]


# ------------------------------------------------------------------ atomic writes
def _fail_half_way(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
    f.write(b"PK\x03\x04" + b"\0" * 4096)  # a partial zip
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_leaves_the_previous_last_ckpt_intact(
    trained_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(trained_ckpt.read_bytes())
    before = last.read_bytes()
    # the IO cld-train (and LastCheckpoint) installs, through a real Trainer
    trainer = quiet_trainer(max_steps=1, default_root_dir=tmp_path)
    use_safe_checkpoint_io(trainer)
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)
    trainer.fit(make_npid(), datamodule=TinyDataModule())
    monkeypatch.setattr(torch, "save", _fail_half_way)
    with pytest.raises(OSError, match="No space left"):
        trainer.save_checkpoint(last)
    with pytest.raises(OSError, match="No space left"):
        atomic_save({"x": 1}, last)
    monkeypatch.undo()
    assert last.read_bytes() == before
    assert load_checkpoint(last)["global_step"] == 2
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no temp file left
    trainer.save_checkpoint(last)  # and a write that succeeds replaces it
    assert load_checkpoint(last)["global_step"] == 1


# ------------------------------------------------------------------ never overwrite a run
def test_fresh_run_into_a_used_folder_is_refused_and_auto_resumes(
    fake_data_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    train(_compose("train", *_train_overrides(fake_data_root, out)))
    before = last.read_bytes()
    with pytest.raises(ConfigError) as info:
        train(_compose("train", *_train_overrides(fake_data_root, out)))
    text = str(info.value)
    assert "\n" not in text and str(last) in text and "ckpt_path=auto" in text, text
    assert last.read_bytes() == before
    # the requeue pattern: resume when last.ckpt exists ...
    resume = ("ckpt_path=auto", "trainer.max_steps=4")
    train(_compose("train", *_train_overrides(fake_data_root, out, *resume)))
    assert load_checkpoint(last)["global_step"] == 4
    # ... else start fresh
    fresh = tmp_path / "fresh"
    train(_compose("train", *_train_overrides(fake_data_root, fresh, "ckpt_path=auto")))
    assert load_checkpoint(fresh / "checkpoints" / "last.ckpt")["global_step"] == 2
