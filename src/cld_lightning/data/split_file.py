"""``data.split_file``: a published pretraining subset, given as indices of the training split.

The long-tailed CIFAR splits of SDCLR (Jiang et al., NeurIPS 2021) and BCL (Zhou et al., ICML
2022), e.g. ``cifar10_imbalance100/split1_D_i.txt``, list the indices of the CIFAR training images
they keep, one per line. Such a file replaces the generated long tail (``data.imbalance_ratio``).

Formats: a ``.json`` file holding a list of integers; any other file, one integer per line (blank
lines and lines starting with ``#`` are skipped). Indices are 0-based positions in the data set's
training split, in the loader's order (for CIFAR: the order of the ``data_batch_*`` files).
A list of image paths is a file list: use ``data=filelist data.train_list=FILE`` instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def check_split_file(path: str | Path) -> Path:
    """The expanded path, or a one-line ``ValueError`` when no such file exists."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"data.split_file: no such file {str(p)!r}")
    return p


def _parse_json(p: Path) -> list[int]:
    try:
        values = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"data.split_file {str(p)!r}: not valid JSON ({err})") from None
    ok = isinstance(values, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    )
    if not ok:
        raise ValueError(f"data.split_file {str(p)!r}: a JSON split file holds a list of integers")
    return values


def _parse_lines(p: Path) -> list[int]:
    values = []
    for number, line in enumerate(p.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            values.append(int(text))
        except ValueError:
            raise ValueError(
                f"data.split_file {str(p)!r} line {number}: expected one integer index, got "
                f"{text[:60]!r} (a list of image paths is a file list: data=filelist "
                "data.train_list=FILE)"
            ) from None
    return values


def read_split_file(path: str | Path, num_train: int) -> np.ndarray:
    """The sorted indices listed in ``path``, checked against a training split of ``num_train``
    images: one-line ``ValueError`` naming the file for a missing or empty file, a value that is
    not an integer, an index outside ``[0, num_train)`` or an index listed twice."""
    p = check_split_file(path)
    values = _parse_json(p) if p.suffix.lower() == ".json" else _parse_lines(p)
    if not values:
        raise ValueError(f"data.split_file {str(p)!r} lists no index")
    idx = np.asarray(values, dtype=np.int64)
    bad = idx[(idx < 0) | (idx >= num_train)]
    if bad.size:
        raise ValueError(
            f"data.split_file {str(p)!r} holds index {int(bad[0])} ({bad.size} out of range in "
            f"all): the training split has {num_train} images, indices 0..{num_train - 1}"
        )
    unique, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"data.split_file {str(p)!r} lists index {int(unique[counts > 1][0])} more than once"
        )
    return unique
