"""Exact (bitwise, on the CPU) resume: RNG states, data order and augmentation randomness.

Lightning restores the model (memory bank, queue, EMA target are buffers), optimiser, scheduler and
loop progress. What it does not restore is made resumable here:

- :class:`ResumableSampler`: the data order is a function of ``(seed, epoch)`` only (all ranks draw
  the same permutation and take their DistributedSampler slice); after a mid-epoch resume it skips
  the samples the run already consumed in that epoch.
- :class:`SeededDataset`: each sample's augmentation RNG is seeded from ``(seed, epoch, index)``, so
  augmentations do not depend on the global RNG, the number of workers or prefetching.
- :class:`ExactResume`: a callback that installs both into the training loader and stores the
  per-rank RNG states (torch, CUDA, numpy, python) and the in-epoch position in every checkpoint.

Why not Lightning's own mechanism. Lightning 2.x saves and restores a training loader's position
only when the loader object itself is stateful (``state_dict``/``load_state_dict``, in practice
``torchdata``'s ``StatefulDataLoader``); a plain ``torch.utils.data.DataLoader`` (what every
datamodule returns) restarts the epoch, and Lightning stores no per-rank RNG states. A stateful
loader's state is its workers' iterator state: exact only with the same ``num_workers``, and its
position counts prefetched batches. Here the position is Lightning's own count of processed
batches, and augmentations are seeded per ``(seed, epoch, index)``, so a resumed run is bitwise
equal whatever the workers, prefetching or process count (tests/distributed/test_resume.py,
tests/test_train_plugin.py). Switching would add a dependency and weaken that guarantee, so the
callback stays; it wraps ``train_dataloader`` at ``setup`` and leaves other loaders alone.

The checks before a resume (readable checkpoint, fitting config) are in
:mod:`cld_lightning.app.checkpoints`.
"""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from cld_lightning.modules.distributed import dist_ready

CHECKPOINT_KEY = "cld_resume"

log = logging.getLogger("cld_lightning.app.resume")


# ----------------------------------------------------------------------------- RNG states
def collect_rng_states() -> dict[str, Any]:
    """The RNG states of this process: torch (CPU), CUDA (current device), numpy, python."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    states: dict[str, Any] = {  # plain types + tensors: loadable with torch.load(weights_only)
        "torch": torch.get_rng_state(),
        "numpy": [
            str(name),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(gauss),
        ],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`collect_rng_states`."""
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample in one epoch (independent streams via SeedSequence)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint64)[0] >> 1)


# ----------------------------------------------------------------------------- data order
class ResumableSampler(DistributedSampler):
    """DistributedSampler whose permutation depends on ``(seed, epoch)`` and that can skip.

    Yields ``(index, epoch)`` pairs, which :class:`SeededDataset` understands. Being a
    ``DistributedSampler``, Lightning does not replace it under DDP (``use_distributed_sampler``).
    ``len()`` is always the full epoch (Lightning counts the skipped batches as already seen).
    """

    def __init__(
        self,
        dataset: Any,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.skip = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch, skip = self.epoch, self.skip
        self.skip = 0  # a skip applies to one (the resumed) epoch only
        for index in list(super().__iter__())[skip:]:
            yield (int(index), epoch)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "seed": self.seed, "skip": self.skip}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.skip = int(state["skip"])


class SeededDataset(Dataset):
    """Wraps a map-style dataset: item ``(index, epoch)`` is produced under an RNG seeded from
    ``(seed, epoch, index)`` (torch, numpy and python), the global RNG states are left untouched.

    A dataset whose class sets ``draws_random = False`` (deterministic transform, e.g. the uint8
    images of ``augment_on=device``, augmented per batch) is read without seeding.
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        index, epoch = key if isinstance(key, tuple) else (int(key), 0)
        if not getattr(self.dataset, "draws_random", True):
            return self.dataset[index]
        s = sample_seed(self.seed, epoch, index)
        np_state, py_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also queue a (lazy) CUDA/XPU/MPS
            # seed with a formatted stack trace per call, ~0.3 ms a sample in a deep call stack
            torch.default_generator.manual_seed(s)
            np.random.seed(s % (2**32))
            random.seed(s)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)

    def __getattr__(self, name: str) -> Any:  # expose the wrapped dataset's attributes
        if name in ("dataset", "seed"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def make_resumable_loader(
    loader: DataLoader, seed: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True
) -> DataLoader:
    """Rebuild a training DataLoader with :class:`ResumableSampler` + :class:`SeededDataset`.

    Keeps batch size, ``drop_last``, workers, collate and pinning. The loader gets its own
    generator, so iterating it never draws from the global torch RNG.
    """
    if isinstance(loader.sampler, ResumableSampler):
        return loader
    if loader.batch_size is None:
        raise ValueError(
            "make_resumable_loader needs a DataLoader with batch_size (no batch_sampler)"
        )
    dataset = SeededDataset(loader.dataset, seed)
    sampler = ResumableSampler(
        dataset,
        num_replicas=num_replicas,
        rank=rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=loader.drop_last,
    )
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        drop_last=loader.drop_last,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers,
        generator=generator,
    )


# ----------------------------------------------------------------------------- callback
class ExactResume(pl.Callback):
    """Make ``trainer.fit(ckpt_path=...)`` continue exactly like an uninterrupted run.

    - ``setup``: wraps ``datamodule.train_dataloader`` (or the LightningModule's) so the training
      loader uses :func:`make_resumable_loader` with this rank's slice.
    - ``on_save_checkpoint``: stores every rank's RNG states (gathered; called on all ranks) and the
      epoch / number of batches already consumed in it.
    - ``on_load_checkpoint`` + ``on_train_start``: restores this rank's RNG states after the loaders
      and the sanity check were set up, and makes the sampler skip the consumed batches.

    Args:
        seed: data-order and augmentation seed (``cfg.seed``).
        wrap_loader: install the resumable loader (off: only RNG states are kept).
    """

    def __init__(self, seed: int = 0, wrap_loader: bool = True) -> None:
        self.seed = int(seed)
        self.wrap_loader = wrap_loader
        self._pending: dict[str, Any] | None = None
        self._loader: DataLoader | None = None

    # -- loader installation
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.wrap_loader:
            return
        owner: Any = trainer.datamodule if trainer.datamodule is not None else pl_module
        original = getattr(owner, "train_dataloader", None)
        if original is None or getattr(original, "_cld_resumable", False):
            return

        def train_dataloader() -> DataLoader:
            loader = make_resumable_loader(
                original(), self.seed, trainer.world_size, trainer.global_rank
            )
            self._loader = loader
            self._apply_position()
            return loader

        train_dataloader._cld_resumable = True  # type: ignore[attr-defined]
        owner.train_dataloader = train_dataloader

    def _apply_position(self) -> None:
        pos = (self._pending or {}).get("position")
        if pos is None or self._loader is None:
            return
        sampler = self._loader.sampler
        assert isinstance(sampler, ResumableSampler)
        batch_size = int(self._loader.batch_size or 1)
        # kept until on_train_start: Lightning may build the loader twice (estimated steps)
        sampler.load_state_dict({"epoch": pos["epoch"], "skip": pos["batches"] * batch_size})

    # -- checkpoint
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = collect_rng_states()
        if dist_ready():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, states)
        else:
            gathered = [states]
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        batches = int(progress.processed)
        if batches >= trainer.num_training_batches:  # end of epoch: nothing to skip
            batches = 0
        checkpoint[CHECKPOINT_KEY] = {
            "rng": gathered,
            "world_size": len(gathered),
            "position": {"epoch": int(trainer.current_epoch), "batches": batches},
            "seed": self.seed,
        }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is None:
            warnings.warn(
                "checkpoint has no cld_resume state: RNG and data order not restored", stacklevel=2
            )
            return
        rng = state["rng"]
        rank = trainer.global_rank
        if len(rng) != trainer.world_size:
            warnings.warn(
                f"checkpoint was written by {len(rng)} process(es), resuming with "
                f"{trainer.world_size}: RNG states are not restored exactly",
                stacklevel=2,
            )
        self._pending = {
            "rng": rng[rank] if rank < len(rng) else None,
            "position": state["position"] if state["position"]["batches"] else None,
        }
        if state.get("seed", self.seed) != self.seed:
            warnings.warn(
                f"resuming with seed {self.seed}, checkpoint used {state['seed']}", stacklevel=2
            )
        self._apply_position()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending and self._pending.get("rng") is not None:
            restore_rng_states(self._pending["rng"])
        self._pending = None
