"""Real images that need no download: scikit-learn's 1,797 handwritten digits (8x8, 16 grey
levels, from the UCI optical-digits set) as an ImageFolder of 28-px PNGs, split 80/20 per class
with a fixed seed (1,438 train, 359 test). Used by ``where_cld_pays.py --settings digits``:

    python benchmarks/build_digits_folder.py [--out outputs/digits_folder]
    cld-train experiment=fashion_mnist_moco_cld data=imagefolder data.root=outputs/digits_folder \\
        data.test_dir=test data.image_size=28 data.in_channels=1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def build(out: Path, size: int = 28, test_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "test": 0}
    for label in range(10):
        idx = np.flatnonzero(digits.target == label)
        rng.shuffle(idx)
        n_test = int(round(test_fraction * len(idx)))
        for split, part in (("test", idx[:n_test]), ("train", idx[n_test:])):
            folder = out / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in part:
                img = (digits.images[i] * (255.0 / 16.0)).round().astype(np.uint8)
                Image.fromarray(img, mode="L").resize((size, size), Image.BILINEAR).save(
                    folder / f"{i:04d}.png"
                )
                counts[split] += 1
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "outputs/digits_folder")
    args = p.parse_args()
    print(build(args.out))


if __name__ == "__main__":
    main()
