"""Subprocess for the clean-exit tests: ``python exit_script.py hook`` or ``stress N``.

``hook``: one gloo process runs the ``setup`` hooks of a method and of ``CLDCallback``, then exits;
``dist.destroy_process_group`` is wrapped to print ``destroyed`` so the test sees the exit hook run.
``stress N``: N times, two spawned gloo ranks all-reduce, rank 0 lingers (as ``ddp_spawn``'s rank 0
does while it saves weights), each rank registers the exit hook; prints how many spawns aborted.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cld_lightning.cld.callback import CLDCallback
from cld_lightning.modules import distributed
from tests.helpers import free_port, make_npid


def _hook() -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    original = dist.destroy_process_group

    def destroy(*args, **kw):
        print("destroyed", flush=True)
        return original(*args, **kw)

    dist.destroy_process_group = destroy
    model = make_npid(cld={"num_clusters": 4, "out_dim": 8})
    model.setup("fit")
    CLDCallback().setup(None, model, "fit")  # registers nothing twice
    print(f"registered={distributed._exit_hook_registered}", flush=True)


def _rank(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    distributed.destroy_process_group_at_exit()
    t = torch.ones(4)
    dist.all_reduce(t)
    if rank == 0:
        time.sleep(0.5)


def _stress(n: int) -> None:
    aborted = 0
    for _ in range(n):
        try:
            mp.start_processes(_rank, args=(free_port(),), nprocs=2, start_method="spawn")
        except mp.ProcessExitedException:
            aborted += 1
    print(json.dumps({"spawns": n, "aborted": aborted}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "hook":
        _hook()
    else:
        _stress(int(sys.argv[2]))
