"""The application layer moved into ``cld_lightning.app``; old paths work for one release."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

from cld_lightning._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_warns_and_gives_the_new_module(old: str) -> None:
    sys.modules.pop(f"cld_lightning.{old}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(f"cld_lightning.{old}")
    new = importlib.import_module(MOVED[old])
    assert module is new  # one object: monkeypatching either path patches both
    messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert any(f"cld_lightning.{old} moved to {MOVED[old]}" in m for m in messages), messages


def test_old_names_resolve_through_old_paths() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from cld_lightning.config_check import ConfigError, check_train_config
        from cld_lightning.train import train

    from cld_lightning.app.errors import ConfigError as NewConfigError
    from cld_lightning.app.train import train as new_train

    assert train is new_train and ConfigError is NewConfigError and callable(check_train_config)


def test_python_dash_m_old_path_still_runs_the_command() -> None:
    out = subprocess.run(
        [sys.executable, "-W", "always::DeprecationWarning", "-m", "cld_lightning.train", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "cld-train" in out.stdout or "train is powered by Hydra" in out.stdout
    assert "moved to cld_lightning.app.train" in out.stderr


@pytest.mark.parametrize("package", ["cld_lightning.eval", "cld_lightning.data"])
def test_shot_groups_old_paths_warn_and_give_the_one_home(package: str) -> None:
    from cld_lightning.longtail import shot_groups

    module = importlib.import_module(package)
    with pytest.warns(DeprecationWarning, match="moved to cld_lightning.longtail.shot_groups"):
        old = module.shot_groups
    assert old is shot_groups
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018
