"""Faults: SIGTERM -> checkpoint + clean stop + resume; cld-train exits 128 + the signal's number,
starts no further -m job, and a second signal exits at once from a stuck step; NaN/inf loss ->
synced skip (1 and 2 processes); unwritable output folder fails before training, naming the path."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cld_lightning.app.config_check import ConfigError, check_output_dir
from tests.conftest import TINY
from tests.distributed.helpers import NaNNPID, SaveStates, script_env
from tests.helpers import FAST_TRAIN, TinyDataModule, make_npid, quiet_trainer

ROOT = Path(__file__).resolve().parents[2]


def _run_script(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("sigterm_script.py")), str(out), *extra],
        env=script_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigterm_writes_checkpoint_and_resume_continues(tmp_path) -> None:
    proc = _run_script(tmp_path)
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert result["interrupted"] and Path(result["saved"]) == ckpt and ckpt.is_file()
    assert result["exit_code"] == 143  # what cld-train exits with (the Python API decides)
    saved_step = int(torch.load(ckpt, weights_only=False)["global_step"])
    assert saved_step == result["end"] >= 2

    proc = _run_script(tmp_path, str(ckpt))
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log[-3000:]
    resumed = json.loads((tmp_path / "result_resumed.json").read_text())
    assert resumed["start"] == saved_step and resumed["end"] == saved_step + 3
    assert not resumed["interrupted"]


def test_nan_loss_skips_step_and_state_update() -> None:
    model = make_npid(method=NaNNPID, nan_step=2)
    snapshots = {}

    class Snap(__import__("pytorch_lightning").Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            snapshots[batch_idx] = {k: v.clone() for k, v in pl_module.state_dict().items()}

    trainer = quiet_trainer(max_epochs=1, callbacks=[Snap()])
    trainer.fit(model, datamodule=TinyDataModule())
    assert int(model.skipped_steps) == 1
    assert model.update_calls == 4  # 5 batches, one skipped
    before, after = snapshots[1], snapshots[2]
    # the NaN batch changed nothing but the counter: parameters, BatchNorm's running statistics
    # (updated by the forward pass, restored on the skip), memory bank, NCE state unchanged
    assert any("running_mean" in k for k in before)
    for k in before:
        if k != "skipped_steps":
            assert torch.equal(before[k], after[k]), k
    assert any(
        not torch.equal(snapshots[2][k], snapshots[3][k]) for k in before
    )  # training goes on
    assert all(
        torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()
    )
    assert float(trainer.callback_metrics["train/skipped_steps"]) == 1.0


def test_nan_on_one_rank_skips_on_all_ranks_ddp_spawn(tmp_path) -> None:
    model = make_npid(48, method=NaNNPID, nan_step=1, nan_rank=1)
    trainer = quiet_trainer(
        max_steps=3,
        strategy="ddp_spawn",
        devices=2,
        callbacks=[SaveStates(str(tmp_path), all_ranks=True)],
    )
    trainer.fit(model, datamodule=TinyDataModule(n=48, batch_size=4))
    # ddp_spawn copies rank 0's final weights back into `model`
    assert int(model.skipped_steps) == 1
    assert all(
        torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()
    )
    snaps = {(i, r): torch.load(tmp_path / f"step{i}_rank{r}.pt") for i in range(3) for r in (0, 1)}
    # step 1 (NaN on rank 1 only) changed no parameter, bank row, momentum nor buffer on either
    # rank: both ranks end it with the state every rank started it with (DDP broadcasts rank 0's
    # buffers at the forward pass), BatchNorm's running statistics included
    start = snaps[(0, 0)]
    assert any("running_mean" in k for k in start)
    for r in (0, 1):
        for k in start:
            if k != "skipped_steps":
                assert torch.equal(start[k], snaps[(1, r)][k]), (r, k)
        assert int(snaps[(1, r)]["skipped_steps"]) == 1
    assert not torch.equal(snaps[(1, 0)]["memory.bank"], snaps[(2, 0)]["memory.bank"])


def test_unwritable_output_dir_is_named(tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = blocker / "run"
    with pytest.raises(ConfigError, match=str(target)):
        check_output_dir(target)


def test_finite_guard_has_no_collective_on_one_process(tmp_path, monkeypatch) -> None:
    """An initialised one-process group (e.g. torchrun --nproc-per-node 1) costs no all-reduce."""
    import torch.distributed as dist

    model = make_npid()
    calls: list[int] = []
    real = dist.all_reduce
    monkeypatch.setattr(dist, "all_reduce", lambda *a, **k: calls.append(1) or real(*a, **k))
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert model._all_finite(torch.tensor(1.0)) is True
        assert model._all_finite(torch.tensor(float("nan"))) is False
        assert model._all_finite(torch.tensor(float("-inf"))) is False
    finally:
        dist.destroy_process_group()
    assert calls == []


# ------------------------------------------------------------------ cld-train's exit on a signal
KILLER = "tests.distributed.signal_callbacks.SignalAt"


def _cld_train(data_root: Path, *overrides: str) -> subprocess.Popen:
    """``cld-train`` on the fake CIFAR-10 (8 steps an epoch) in a subprocess (flags such as
    ``-m`` go first, as Hydra's parser wants)."""
    args = [
        *[o for o in overrides if o.startswith("-")],
        *FAST_TRAIN,
        "data=cifar10",
        f"paths.data_dir={data_root}",
        *TINY,
        "logger=none",
        "trainer.max_epochs=3",
        *[o for o in overrides if not o.startswith("-")],
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "cld_lightning.app.train", *args],
        env=script_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigterm_exits_143_after_saving_at_the_step_boundary(fake_data_root, tmp_path) -> None:
    proc = _cld_train(
        fake_data_root,
        f"hydra.run.dir={tmp_path}",
        f"+callbacks.killer._target_={KILLER}",
        "+callbacks.killer.step=2",
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM == 143, err[-3000:]
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert int(torch.load(last, weights_only=True)["global_step"]) == 3  # the step it was in
    assert "exit code 143" in out + err and "cld-train finished" not in out
    assert not (tmp_path / "metrics.json").exists()


def test_sigterm_under_multirun_starts_no_further_job(fake_data_root, tmp_path) -> None:
    proc = _cld_train(
        fake_data_root,
        "-m",
        "seed=0,1",
        f"hydra.sweep.dir={tmp_path}",
        f"+callbacks.killer._target_={KILLER}",
        "+callbacks.killer.step=2",
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert int(torch.load(tmp_path / "0" / "checkpoints" / "last.ckpt")["global_step"]) == 3
    assert not (tmp_path / "1").exists()  # job 1 never started


@pytest.mark.parametrize("stuck", ["sleep", "c"])
def test_second_signal_exits_at_once_from_a_stuck_step(fake_data_root, tmp_path, stuck) -> None:
    """The first SIGTERM waits for the step boundary; the step never ends (a Python sleep, or a
    C call that no handler can interrupt, as a hung collective): a second SIGTERM exits at once
    with 143, writing nothing (no checkpoint, no partial file)."""
    marker = tmp_path / "stuck"
    proc = _cld_train(
        fake_data_root,
        f"hydra.run.dir={tmp_path / 'run'}",
        f"+callbacks.killer._target_={KILLER}",
        "+callbacks.killer.step=2",
        f"+callbacks.killer.stuck={stuck}",
        f"+callbacks.killer.marker={marker}",
    )
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the step never got stuck"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)  # a safety net: without the fix it hangs for good
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("a second SIGTERM did not end a stuck step")
    assert proc.returncode == 143, err[-3000:]
    assert "second signal (SIGTERM): exiting now" in err
    folder = tmp_path / "run" / "checkpoints"
    assert not folder.exists() or not list(folder.iterdir())
