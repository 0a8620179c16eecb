"""Block removal, occlusion and patch shuffling on the four trained built-in shapes models, each on the built-in
test set it was trained for (shape models on `vit-feature-viz/shapes-shape`, colour models on
`vit-feature-viz/shapes-color`, both with boxes). Prints the Markdown tables of README's "Robustness experiments"
and writes every run's CSV + PNG into --out (a gallery folder).

    python benchmarks/bench_robustness.py --images 300 --out robustness-gallery
"""

from __future__ import annotations

import argparse
import time

from vit_feature_viz.analysis import block_removal, occlusion, patch_shuffle
from vit_feature_viz.models import load_model

MODELS = {"shapes-shape-vit-a": "shape", "shapes-shape-vit-b": "shape", "shapes-color-vit-a": "color",
          "shapes-color-vit-b": "color"}
FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)
GRIDS = (1, 2, 4, 8, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--out", default="robustness-gallery")
    args = parser.parse_args()
    run = dict(max_images=args.images, batch_size=50, device="cpu", precision="fp32", progress=False)
    removal, dropped, shuffled = [], [], []
    start = time.time()
    for short, variant in MODELS.items():
        model = load_model(f"vit-feature-viz/{short}", device="cpu", precision="fp32")
        dataset = f"vit-feature-viz/shapes-{variant}"
        results = [block_removal(model, dataset, **run), occlusion(model, dataset, fractions=FRACTIONS, **run),
                   occlusion(model, dataset, fractions=(0.5,), drop="pixels", **run),
                   patch_shuffle(model, dataset, grids=GRIDS, **run)]
        for result in results:
            result.save(args.out)
        removal.append((short, results[0].rows))
        dropped.append((short, results[1].rows, results[2].rows))
        shuffled.append((short, results[3].rows))
        print(f"# after {short}: {time.time() - start:.0f} s", removal_table(removal), occlusion_table(dropped),
              shuffle_table(shuffled), sep="\n\n", flush=True)


def removal_table(runs) -> str:
    lines = ["| model | unchanged | block 0 removed | worst of blocks 1+ | best of blocks 1+ | mean drop: whole block "
             "| attention only | MLP only |", "|---|---|---|---|---|---|---|---|"]
    for short, rows in runs:
        natural = next(r["top1"] for r in rows if r["block"] is None)
        whole = {r["block"]: r["top1"] for r in rows if r["removed"] == "block"}
        later = [v for b, v in whole.items() if b]
        mean = {p: sum(r["top1_drop"] for r in rows if r["removed"] == p) / len(whole) for p in ("block", "attention", "mlp")}
        lines.append(f"| {short} | {natural:.1f} | {whole[0]:.1f} | {min(later):.1f} | {max(later):.1f} | "
                     f"{mean['block']:.1f} | {mean['attention']:.1f} | {mean['mlp']:.1f} |")
    return "\n".join(lines)


def occlusion_table(runs) -> str:
    lines = ["| model | order | " + " | ".join(f"{f:g}" for f in FRACTIONS) + " | 0.5 as black pixels |",
             "|---|---|" + "---|" * (len(FRACTIONS) + 1)]
    for short, rows, pixel_rows in runs:
        for order in dict.fromkeys(r["order"] for r in rows):
            values = [next(r["top1"] for r in rows if r["order"] == order and r["fraction"] == f) for f in FRACTIONS]
            pixels = next(r["top1"] for r in pixel_rows if r["order"] == order)
            lines.append(f"| {short} | {order} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {pixels:.1f} |")
    return "\n".join(lines)


def shuffle_table(runs) -> str:
    lines = ["| model | " + " | ".join(f"{g}x{g}" for g in GRIDS) + " |", "|---|" + "---|" * len(GRIDS)]
    for short, rows in runs:
        lines.append(f"| {short} | " + " | ".join(f"{r['top1']:.1f}" for r in rows) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
