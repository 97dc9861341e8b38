"""Training subprocess for the SIGTERM test: ``python sigterm_script.py OUT [CKPT]``.

Writes ``OUT/started`` after two steps, handles SIGTERM via GracefulShutdown, and writes
``OUT/result[_resumed].json`` with the first and last global step of this run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from cld_lightning.app.faults import GracefulShutdown
from cld_lightning.app.resume import ExactResume
from tests.helpers import TinyDataModule, make_npid, quiet_trainer


class Marker(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out, self.start = out, None

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == 2 and not (self.out / "started").exists():
            (self.out / "started").write_text("1")
        time.sleep(0.05)  # leave time for the signal to arrive mid-training


def main() -> None:
    out = Path(sys.argv[1])
    ckpt = sys.argv[2] if len(sys.argv) > 2 else None
    pl.seed_everything(0)
    marker = Marker(out)
    shutdown = GracefulShutdown()
    max_steps = -1
    if ckpt is not None:  # finish 3 more steps after the saved one
        max_steps = int(torch.load(ckpt, weights_only=False)["global_step"]) + 3
    trainer = quiet_trainer(
        max_epochs=1000 if ckpt is None else -1,
        max_steps=max_steps,
        callbacks=[
            ExactResume(0),
            shutdown,
            marker,
            ModelCheckpoint(dirpath=out / "checkpoints", every_n_epochs=1, save_last=True),
        ],
        enable_checkpointing=True,
    )
    trainer.fit(make_npid(), datamodule=TinyDataModule(), ckpt_path=ckpt)
    name = "result_resumed.json" if ckpt else "result.json"
    (out / name).write_text(
        json.dumps(
            {
                "start": marker.start,
                "end": trainer.global_step,
                "interrupted": shutdown.interrupted,
                "exit_code": shutdown.exit_code,
                "saved": str(shutdown.saved_path),
            }
        )
    )


if __name__ == "__main__":
    main()
