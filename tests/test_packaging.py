"""The plugin installs like one: the wheel ships the Hydra configs, ``cld-train`` runs from any
folder after a non-editable install, and users add their own config folder on the search path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG_CONF = ROOT / "src" / "cld_lightning" / "conf"
VENV_BIN = Path(sys.executable).parent


def _config_files() -> set[str]:
    return {p.relative_to(PKG_CONF).as_posix() for p in PKG_CONF.rglob("*.yaml")}


def _build_wheel(dest: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the project (the build never writes into the tree)."""
    src = dest / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    out = dest / "wheel"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*cmd, str(src), "-w", str(out)], check=True, capture_output=True, text=True)
    (wheel,) = out.glob("cld_lightning-*.whl")
    return wheel


def test_top_level_conf_is_the_package_conf() -> None:
    """The repository's ``conf/`` is a view of the shipped configs, not a second copy."""
    assert (ROOT / "conf").resolve() == PKG_CONF.resolve()
    from cld_lightning import evaluate, train

    assert Path(train.CONFIG_DIR).resolve() == PKG_CONF.resolve()
    assert Path(evaluate.CONFIG_DIR).resolve() == PKG_CONF.resolve()


def test_wheel_ships_every_config_and_the_console_scripts(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = zf.read(entry_points).decode()
    shipped = {n.removeprefix("cld_lightning/conf/") for n in names if n.endswith(".yaml")}
    expected = _config_files()
    assert len(expected) > 40 and {"train.yaml", "eval.yaml", "data/imagefolder.yaml"} <= expected
    assert shipped == expected
    assert "cld-train = cld_lightning.app.train:main" in scripts
    assert "cld-eval = cld_lightning.app.evaluate:main" in scripts


def _user_conf(tmp_path: Path) -> Path:
    user = tmp_path / "my_configs"
    (user / "experiment").mkdir(parents=True)
    (user / "experiment" / "my_exp.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /method: moco\nseed: 1234\n"
    )
    return user


def test_user_config_folder_on_the_search_path(tmp_path: Path) -> None:
    """``hydra.searchpath=[file://...]`` (and ``--config-dir``) add a user's experiments."""
    user = _user_conf(tmp_path)
    for how in (
        [f"hydra.searchpath=[file://{user}]"],
        ["--config-dir", str(user)],
    ):
        out = subprocess.run(
            [str(VENV_BIN / "cld-train"), *how, "experiment=my_exp", "--cfg", "job"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "seed: 1234" in out and "cld_lightning.methods.MoCo" in out


def _install_wheel(tmp_path: Path) -> tuple[Path, Path]:
    """``pip install`` of the wheel into a fresh venv (dependencies seen through a .pth file to this
    venv's site-packages, so nothing is downloaded); returns the venv and its site-packages."""
    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
        + ["--ignore-installed", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    return venv, site


@pytest.mark.slow
def test_non_editable_install_runs_cld_train_outside_the_repository(tmp_path: Path) -> None:
    """The installed wheel's ``cld-train`` from another folder."""
    venv, site = _install_wheel(tmp_path)
    py = venv / "bin" / "python"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": ""}
    where = subprocess.run(
        [str(py), "-c", "import cld_lightning; print(cld_lightning.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(site)), where  # the installed copy, not the checkout
    cli = str(venv / "bin" / "cld-train")
    help_text = subprocess.run(
        [cli, "--help"], cwd=elsewhere, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "experiment: " in help_text and "cifar10_npid_cld" in help_text

    from cld_lightning.data.synthetic import write_fake_fashion_mnist

    write_fake_fashion_mnist(tmp_path / "data", n_train=64, n_test=32)
    user = _user_conf(tmp_path)
    run = subprocess.run(
        [
            cli,
            f"hydra.searchpath=[file://{user}]",
            "experiment=my_exp",
            f"paths.data_dir={tmp_path / 'data'}",
            "data.download=false",
            "data.num_workers=0",
            "data.persistent_workers=false",
            "data.batch_size=8",
            "data.num_views=2",
            "backbone=small_cnn",
            "backbone.width=4",
            "trainer.fast_dev_run=true",
            "trainer.enable_progress_bar=false",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert list((elsewhere / "outputs" / "train" / "runs").glob("*/metrics.json"))


def test_installed_cld_report_works_without_the_plots_extra(tmp_path: Path) -> None:
    """A plain install (matplotlib, the ``[plots]`` extra, unimportable in the venv): the wheel's
    ``cld-report`` writes report.md and report.json, skips curves.png and says how to get it."""
    venv, site = _install_wheel(tmp_path)
    (site / "zz_no_plots.pth").write_text("import sys; sys.modules['matplotlib'] = None\n")
    py = str(venv / "bin" / "python")
    env = {**os.environ, "PYTHONPATH": ""}
    probe = "import cld_lightning; print(cld_lightning.__file__); import matplotlib"
    proc = subprocess.run([py, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.stdout.startswith(str(site)) and "ModuleNotFoundError" in proc.stderr
    run = tmp_path / "runs" / "0"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- cld.weight=0.5\n- seed=0\n")
    (run / "metrics.json").write_text('{"knn/top1": 71.5, "selection/retrieval_top1": 40.0}')
    out = tmp_path / "report"
    proc = subprocess.run(
        [str(venv / "bin" / "cld-report"), str(run.parent), "--out", str(out), "--wandb", "off"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'pip install "cld-lightning[plots]"' in proc.stdout
    assert "| (no further override) | 1 | 71.50 |" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["finished"] == 1
    assert not (out / "curves.png").exists()
