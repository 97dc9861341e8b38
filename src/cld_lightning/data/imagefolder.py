"""ImageFolder data sets: ImageNet, ImageNet-100 (class-list file), Kitchen-HC (32x32).

Layout: ``ROOT/<train_dir>/<class>/**/<image>`` and ``ROOT/<test_dir>/<class>/**/<image>``. Labels
are the sorted class-folder names (with a class list: the listed classes, sorted), as in
torchvision's ``ImageFolder``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataLayoutError, DatasetNotFoundError
from .files import IMG_EXTENSIONS, file_split
from .spec import DataOptions, SplitData

LAYOUT = "ROOT/<split>/<class_name>/<image>.{jpg,png,...}: one sub-folder per class"


def _images_under(d: Path) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(d, followlinks=True):
        out += [os.path.join(dirpath, f) for f in files if f.lower().endswith(IMG_EXTENSIONS)]
    return sorted(out)


def read_class_list(path: str | Path, root: str | Path | None = None) -> list[str]:
    """Class names from a text file, one per line (blank lines and ``#`` comments ignored)."""
    p = Path(path)
    if not p.is_file() and root is not None and not p.is_absolute() and (Path(root) / p).is_file():
        p = Path(root) / p
    if not p.is_file():
        raise FileNotFoundError(
            f"data.class_list: file {path} not found (expected one class folder name per line, "
            "e.g. the 100 ImageNet wnids of ImageNet-100)"
        )
    names = [ln.split("#")[0].strip() for ln in p.read_text().splitlines()]
    names = [n for n in names if n]
    if not names:
        raise DataLayoutError(f"data.class_list: {p} lists no classes")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataLayoutError(f"data.class_list: {p} repeats classes {dup[:5]}")
    return sorted(names)


def scan_imagefolder(
    d: Path, classes: list[str] | None = None, strict: bool = True
) -> tuple[list[str], list[int], list[str]]:
    """``(paths, labels, classes)`` of a class-folder tree.

    ``classes`` fixes the label order (missing folders are an error when ``strict``).
    """
    if not d.is_dir():
        raise DatasetNotFoundError(
            "imagefolder", [d], f"create the folder with the layout {LAYOUT}, or set data.root"
        )
    subdirs = sorted(p.name for p in d.iterdir() if p.is_dir())
    if classes is None:
        if not subdirs:
            loose = [p.name for p in d.iterdir() if p.name.lower().endswith(IMG_EXTENSIONS)]
            found = f"found {len(loose)} image file(s) directly in it" if loose else "it is empty"
            raise DataLayoutError(
                f"{d}: expected class sub-folders holding the images ({LAYOUT}); {found}"
            )
        classes = subdirs
    elif strict:
        missing = [c for c in classes if c not in subdirs]
        if missing:
            raise DataLayoutError(
                f"{d}: no folder for {len(missing)} listed class(es), e.g. {missing[:5]} ({LAYOUT})"
            )
    paths: list[str] = []
    labels: list[int] = []
    empty = []
    for label, c in enumerate(classes):
        if not (d / c).is_dir():
            continue
        imgs = _images_under(d / c)
        if not imgs and strict:
            empty.append(c)
        paths += imgs
        labels += [label] * len(imgs)
    if empty:
        raise DataLayoutError(
            f"{d}: class folder(s) without images ({', '.join(IMG_EXTENSIONS)}): {empty[:5]}"
        )
    if not paths:
        raise DataLayoutError(f"{d}: no images found ({LAYOUT})")
    return paths, labels, classes


#: held-out split folders tried, in order, when ``data.test_dir`` is not set
TEST_DIR_CANDIDATES = ("val", "test")


def resolve_test_dir(root: Path, test_dir: str | None, name: str = "imagefolder") -> Path:
    """``ROOT/<data.test_dir>``, or the first of ``val/``, ``test/`` that exists when unset."""
    if test_dir:
        d = root / test_dir
        if not d.is_dir():
            raise DatasetNotFoundError(
                name,
                [d],
                f"data.test_dir={test_dir!r}: no such folder under data.root; create it with the "
                f"layout {LAYOUT}, or set data.test_dir to the held-out split's folder name",
            )
        return d
    tried = [root / c for c in TEST_DIR_CANDIDATES]
    for d in tried:
        if d.is_dir():
            return d
    raise DatasetNotFoundError(
        name,
        tried,
        f"data.test_dir is not set and neither {' nor '.join(f'{c}/' for c in TEST_DIR_CANDIDATES)}"
        f" exists under data.root: set data.test_dir to the held-out split's folder ({LAYOUT})",
    )


def load_imagefolder(opts: DataOptions, name: str = "imagefolder") -> SplitData:
    root = Path(opts.root)
    train_dir = root / (opts.train_dir or "train")
    if not root.is_dir():
        raise DatasetNotFoundError(
            name,
            [root],
            f"put the data set at data.root with the layout {LAYOUT}, splits "
            f"'{train_dir.name}' and 'val' or 'test' (data.train_dir / data.test_dir)",
        )
    if not train_dir.is_dir():
        raise DatasetNotFoundError(
            name,
            [train_dir],
            f"data.train_dir={train_dir.name!r}: no such folder under data.root; create it with "
            f"the layout {LAYOUT}, or set data.train_dir",
        )
    test_dir = resolve_test_dir(root, opts.test_dir, name)
    classes = read_class_list(opts.class_list, root) if opts.class_list else None
    tr_paths, tr_labels, classes = scan_imagefolder(train_dir, classes)
    te_paths, te_labels, _ = scan_imagefolder(test_dir, classes, strict=False)
    if opts.class_list is None:
        extra = sorted(
            p.name for p in test_dir.iterdir() if p.is_dir() and p.name not in set(classes)
        )
        if extra:
            raise DataLayoutError(
                f"{test_dir}: class folder(s) {extra[:5]} do not exist in {train_dir}"
            )
    return file_split(
        opts,
        (tr_paths, tr_labels),
        (te_paths, te_labels),
        (f"{name} {train_dir}", f"{name} {test_dir}"),
        num_classes=len(classes),
        class_names=list(classes),
    )
