"""Does a text prompt draw what it says? Images rendered for "a <colour> <shape>" on the built-in shapes CLIP.

For every colour x shape pair (6 x 6), the image rendered for the prompt on vit-feature-viz/shapes-clip is judged
from its saved PNG by two judges that are not the CLIP: its shape by the built-in shape-only classifier
shapes-shape-vit-b (trained where colours are random, so only an outline tells the class; independent of
shapes-shape-vit-a, which the CLIP's image tower started from), its colour by the dominant hue of its saturated
pixels (data/shape_captions.py: dominant_colour). Also the CLIP's zero-shot accuracy on the built-in shapes sets.

    python benchmarks/bench_prompts.py --threads 1                  # fast recipe, its default steps
    python benchmarks/bench_prompts.py --recipes fast fourier --steps 64 --layers 3 --save prompts.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from vit_feature_viz import load_model
from vit_feature_viz.data.shape_captions import SHAPE_COLORS, colour_prompt, shape_prompt
from vit_feature_viz.data.shapes import CLASS_COLORS, SHAPE_CLASSES, generate_shapes
from vit_feature_viz.quality import prompt_report, zero_shot

CLIP, JUDGE = "vit-feature-viz/shapes-clip", "vit-feature-viz/shapes-shape-vit-b"
ZERO_SHOT_IMAGES, ZERO_SHOT_SEED = 1200, 999_983  # the held-out images the built-in ViTs are scored on


def zero_shot_table(clip) -> list[tuple[str, float, float]]:
    """(set, shape accuracy, colour accuracy or nan) on the built-in shapes sets: shape-only (random colours, no
    colour names) and colour (each class its own colour: disc red, square green, ... see CLASS_COLORS)."""
    names = list(SHAPE_COLORS)
    # the colour variant's class colours, by the nearest named colour
    class_colour = [int(np.argmin([np.linalg.norm(np.array(SHAPE_COLORS[n]) - c) for n in names])) for c in CLASS_COLORS]
    rows = []
    for variant in ("shape", "color"):
        shapes = generate_shapes(ZERO_SHOT_IMAGES, variant=variant, seed=ZERO_SHOT_SEED)
        shape_acc = float(np.mean(zero_shot(clip, shapes.images, [shape_prompt(s) for s in SHAPE_CLASSES]) == shapes.labels))
        colour_acc = float("nan")
        if variant == "color":
            found = zero_shot(clip, shapes.images, [colour_prompt(c) for c in names])
            colour_acc = float(np.mean(found == np.array(class_colour)[shapes.labels]))
        rows.append((f"shapes-{variant} ({ZERO_SHOT_IMAGES} images)", shape_acc, colour_acc))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["fast"])
    parser.add_argument("--steps", type=int, default=None, help="default: each recipe's own")
    parser.add_argument("--layers", nargs="*", type=int, default=[], help="also prompt-cls at these blocks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--save", default=None, help="write the rendered images as one grid PNG (rows: shapes)")
    parser.add_argument("--no-zero-shot", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clip, judge = load_model(CLIP, device="cpu"), load_model(JUDGE, device="cpu")
    if not args.no_zero_shot:
        print("| set | zero-shot shape | zero-shot colour |\n|---|---|---|")
        for name, shape_acc, colour_acc in zero_shot_table(clip):
            print(f"| {name} | {shape_acc:.3f} | {'-' if np.isnan(colour_acc) else f'{colour_acc:.3f}'} |")
    print("\n| recipe | steps | site | shape hits | colour hits | both | mean cosine | s/prompt |\n|---|---|---|---|---|---|---|---|")
    for recipe in args.recipes:
        for layer in [None, *args.layers]:
            start = time.perf_counter()
            report = prompt_report(clip, judge, recipe, steps=args.steps, seed=args.seed, layer=layer)
            n = len(report.prompts)
            site = "image embedding" if layer is None else f"block {layer} CLS"
            print(f"| {recipe} | {args.steps or 'default'} | {site} | {report.shape_hits}/{n} | {report.colour_hits}/{n} | "
                  f"{report.both_hits}/{n} | {report.cosine.mean():.3f} | {report.seconds_per_prompt:.1f} |", flush=True)
            misses = [(p, SHAPE_CLASSES[s], c) for p, s, c, want_s, want_c in zip(
                report.prompts, report.predicted_shapes, report.found_colours, report.shapes, report.colours)
                if s != want_s or c != want_c]
            print("  misses (prompt -> judged shape, colour):",
                  "; ".join(f"{p} -> {s}, {c}" for p, s, c in misses) or "none", f"({time.perf_counter() - start:.0f} s)")
            if args.save:
                side = report.images[0].width
                grid = Image.new("RGB", (side * len(SHAPE_COLORS), side * len(SHAPE_CLASSES)))
                for k, image in enumerate(report.images):
                    grid.paste(image, ((k % len(SHAPE_COLORS)) * side, (k // len(SHAPE_COLORS)) * side))
                suffix = "" if layer is None else f"-block{layer}"
                grid.save(args.save.replace(".png", f"-{recipe}{suffix}.png"))


if __name__ == "__main__":
    main()
