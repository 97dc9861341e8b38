"""File-list data sets (ImageNet-LT / Places-LT style): lines ``relative/path.jpg label``.

Paths are relative to ``data.root`` (absolute paths are kept); labels are integers >= 0 and
``num_classes`` is the largest label in either list plus one. Blank lines and ``#`` comments are
ignored; a path may contain spaces (the label is the last field).
"""

from __future__ import annotations

from pathlib import Path

from .errors import DataLayoutError, DatasetNotFoundError
from .files import file_split
from .spec import DataOptions, SplitData


def read_filelist(list_path: str | Path, root: str | Path) -> tuple[list[str], list[int]]:
    """Parse a list file; every referenced image must exist."""
    list_path, root = Path(list_path), Path(root)
    if not list_path.is_file() and not list_path.is_absolute() and (root / list_path).is_file():
        list_path = root / list_path
    if not list_path.is_file():
        raise DatasetNotFoundError(
            "filelist", [list_path], "write a text file with one 'relative/path.jpg label' per line"
        )
    paths: list[str] = []
    labels: list[int] = []
    for n, line in enumerate(list_path.read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1)
        try:
            if len(parts) != 2:
                raise ValueError
            label = int(parts[1])
            if label < 0:
                raise ValueError
        except ValueError:
            raise DataLayoutError(
                f"{list_path}:{n}: expected 'relative/path.jpg label' with an integer label "
                f">= 0, got {line!r}"
            ) from None
        p = Path(parts[0])
        paths.append(str(p if p.is_absolute() else root / p))
        labels.append(label)
    if not paths:
        raise DataLayoutError(f"{list_path}: no entries")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise DatasetNotFoundError(
            "filelist",
            missing[:5] + ([f"... and {len(missing) - 5} more"] if len(missing) > 5 else []),
            f"{len(missing)} image(s) listed in {list_path} are missing; list paths are relative "
            f"to data.root={root}",
        )
    return paths, labels


def load_filelist(opts: DataOptions) -> SplitData:
    if opts.train_list is None or opts.test_list is None:
        raise ValueError("dataset=filelist needs data.train_list and data.test_list (file paths)")
    tr_paths, tr_labels = read_filelist(opts.train_list, opts.root)
    te_paths, te_labels = read_filelist(opts.test_list, opts.root)
    return file_split(
        opts,
        (tr_paths, tr_labels),
        (te_paths, te_labels),
        (f"filelist {opts.train_list}", f"filelist {opts.test_list}"),
        num_classes=max(tr_labels + te_labels) + 1,
    )
