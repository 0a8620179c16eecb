"""Which recipe makes the best pictures? Quality metrics per recipe on the trained shapes fixtures.

For each recipe at its own default steps (see vit_feature_viz/quality.py for what the numbers mean):
- ratio: median over features of a middle block of (activation of the saved PNG) / (best over generated images);
- transfer: logit visualizations of the 6 classes made on model a, classified by model b of the same variant
  (shape-only: only a drawn shape can transfer; colour: painting the class colour is enough);
- s/feature: wall-clock seconds per feature of the ratio renders (noisy when other jobs share the machine);
- compute: steps x copies x model-input pixels, relative to the paper recipe's 400 x 8.
Localization (pointing game of shape-selective features' patch maps) depends on the model, not the recipe, so it is
printed once per model.

    python benchmarks/bench_quality.py                       # all recipes, 8 features, about 5 minutes
    python benchmarks/bench_quality.py --features 4 --recipes paper default --natural 1000

Objectives beyond one channel (README: Directions, negatives and diverse sets), without the recipe table:

    python benchmarks/bench_quality.py --recipes --diversity 4 --diversity-weights 0.5 1 2 --negative

Accentuation of real images (README: Accentuation of a real image), on both built-in models and their datasets:

    python benchmarks/bench_quality.py --recipes --localization-images 0 --accentuate 12 --accentuate-weights 0 1 4 16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from vit_feature_viz import load_model, render
from vit_feature_viz.core.recipes import DEFAULT_RECIPE, RECIPES, get_recipe
from vit_feature_viz.data.shapes import generate_shapes
from vit_feature_viz.quality import (
    accentuation_report, activation_ratio, diversity_report, localization, negative_report, transfer,
)
from vit_feature_viz.specs import parse_features

MODELS = Path(__file__).resolve().parents[1] / "vit_feature_viz" / "data" / "models"
PAPER_COMPUTE = 400 * 8


def model_path(models: Path, variant: str, which: str) -> str:
    return str(models / f"shapes-{variant}-vit-{which}")


def recipe_names(names: list[str]) -> list[str]:
    """'default' stands for DEFAULT_RECIPE; each recipe once, in the order given."""
    out: list[str] = []
    for name in names:
        name = DEFAULT_RECIPE if name == "default" else name
        get_recipe(name)
        if name not in out:
            out.append(name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="*", default=["paper", "fourier", "maco", "default"])
    parser.add_argument("--features", type=int, default=8, help="random features of the middle block for the ratio")
    parser.add_argument("--natural", type=int, default=3000, help="generated images the ratio compares against")
    parser.add_argument("--steps", type=int, default=None, help="override every recipe's steps (quick checks)")
    parser.add_argument("--variants", nargs="+", default=["shape", "color"], help="transfer on these variants")
    parser.add_argument("--models", type=Path, default=MODELS, help="folder with shapes-{variant}-vit-{a,b}")
    parser.add_argument("--localization-images", type=int, default=2000, help="0: skip localization")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a busy machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--diversity", type=int, default=0, help="N: diverse sets of N images against N plain seeds")
    parser.add_argument("--diversity-weights", type=float, nargs="+", default=[None],
                        help="repulsion weights to compare (default: the library's DIVERSITY_WEIGHT)")
    parser.add_argument("--negative", action="store_true", help="negative images against the natural minimum")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="recipe of the diversity and negative renders")
    parser.add_argument("--accentuate", type=int, default=0, metavar="N",
                        help="accentuate N test images of each built-in dataset (against plain renders from noise)")
    parser.add_argument("--accentuate-weights", type=float, nargs="+", default=[None],
                        help="early-layer penalty weights to compare (default: the library's)")
    parser.add_argument("--accentuate-features", type=int, default=2, help="features per image (the most driven)")
    parser.add_argument("--accentuate-choice", choices=["mean", "peak"], default="mean",
                        help="features an image drives most by their mean over patches or their highest patch")
    parser.add_argument("--accentuate-steps", type=int, default=None, help="accentuation steps (default: the library's)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)

    ratio_variant = "shape" if "shape" in args.variants else args.variants[0]
    ratio_model = load_model(model_path(args.models, ratio_variant, "a"), device="cpu", precision="fp32")
    layer = ratio_model.num_layers // 2
    width = ratio_model.blocks[layer].features
    features = parse_features(f"random {args.features}", width, args.seed)
    natural = generate_shapes(args.natural, variant=ratio_variant, size=ratio_model.image_size, seed=12345)
    pairs = {
        v: (load_model(model_path(args.models, v, "a"), device="cpu", precision="fp32"),
            load_model(model_path(args.models, v, "b"), device="cpu", precision="fp32"))
        for v in args.variants
    }
    print(f"ratio: shapes-{ratio_variant}-vit-a, block {layer}, features {features}, best of {args.natural} generated images")
    if args.localization_images:
        for variant in args.variants:
            model = pairs[variant][0]
            shapes = generate_shapes(args.localization_images, variant=variant, size=model.image_size, seed=54321)
            report = localization(model, layer, shapes.images, shapes.boxes)
            print(f"localization shapes-{variant}-vit-a block {layer}: pointing-game hit rate {report.hit_rate:.2f} "
                  f"(chance {report.chance:.2f}) over features {report.features}")

    header = ["recipe", "steps x copies", "compute", "ratio", "ratio>1", *(f"transfer {v}" for v in args.variants),
              "s/feature"]
    rows = []
    for name in recipe_names(args.recipes):
        recipe = RECIPES[name]
        steps = recipe.steps if args.steps is None else args.steps
        start = time.perf_counter()
        ratio = activation_ratio(ratio_model, layer, features, recipe, natural.images, steps=steps, seed=args.seed)
        transfers = [transfer(*pairs[v], recipe, steps=steps, seed=args.seed) for v in args.variants]
        label = f"{name} (default)" if name == DEFAULT_RECIPE else name
        finite = ratio.ratios[np.isfinite(ratio.ratios)]
        rows.append([
            label, f"{steps} x {recipe.copies}", f"{steps * recipe.copies / PAPER_COMPUTE:.2f}x",
            f"{ratio.median:.2f}", f"{np.mean(finite > 1):.0%}",
            *(f"{t.hits}/{t.total}" for t in transfers), f"{ratio.seconds_per_feature:.1f}",
        ])
        print(f"  {label}: per-feature ratios {np.round(ratio.ratios, 2).tolist()}; predicted "
              + "; ".join(f"{v} {t.predicted.tolist()}" for v, t in zip(args.variants, transfers))
              + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    if rows:
        print_table(header, rows)
    if args.diversity:
        bench_diversity(args, ratio_model, pairs.get(ratio_variant, (None, None))[1], layer, features)
    if args.negative:
        bench_negative(args, pairs, layer, natural)
    if args.accentuate:
        bench_accentuate(args, pairs, layer)


def print_table(header, rows) -> None:
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def bench_diversity(args, model, judge, layer, features) -> None:
    """N repelled images per feature against the same N starting images without the repulsion (N plain seeds):
    pairwise distance in the judged layer's features and in an independent model (model b), at what activation."""
    header = ["weight", "images", "activation vs plain", "distance, judged layer (plain)",
              "distance, model b (plain)", "features more diverse (layer / model b)", "s"]
    rows = []
    plain = render(model, layer, list(features), recipe=args.recipe, steps=args.steps, seed=args.seed,
                   progress=False, diversity=args.diversity, diversity_weight=0.0)  # N plain seeds, shared
    for weight in args.diversity_weights:
        start = time.perf_counter()
        report = diversity_report(model, layer, features, args.recipe, facets=args.diversity, weight=weight,
                                  judge=judge, steps=args.steps, seed=args.seed, plain=plain)
        d, j = report.layer_distance, report.judge_distance
        rows.append([f"{report.weight:g}", f"{len(features)} x {args.diversity}", f"{report.activation_ratio:.0%}",
                     f"{d[:, 0].mean():.3f} ({d[:, 1].mean():.3f})", f"{j[:, 0].mean():.3f} ({j[:, 1].mean():.3f})",
                     f"{int((d[:, 0] > d[:, 1]).sum())}/{len(features)} / {int((j[:, 0] > j[:, 1]).sum())}/{len(features)}",
                     f"{time.perf_counter() - start:.0f}"])
        print(f"  diversity weight {report.weight:g}: activation repelled/plain per feature "
              f"{np.round(report.activation[:, 0] / report.activation[:, 1], 2).tolist()}", flush=True)
    print(f"\ndiversity: {args.recipe}, {args.diversity} images per feature, block {layer}, features {features}")
    print_table(header, rows)


def bench_negative(args, pairs, layer, natural) -> None:
    """Each feature's negative image against the lowest activation over the generated images, per built-in model."""
    header = ["model", "features", "below the natural minimum", "median rendered", "median natural minimum"]
    rows = []
    for variant, (model, _) in pairs.items():
        images = natural.images if variant == ("shape" if "shape" in args.variants else args.variants[0]) else \
            generate_shapes(args.natural, variant=variant, size=model.image_size, seed=12345).images
        features = parse_features(f"random {args.features}", model.blocks[layer].features, args.seed)
        report = negative_report(model, layer, features, args.recipe, images, steps=args.steps, seed=args.seed)
        rows.append([f"shapes-{variant}-vit-a", str(len(features)), f"{report.hits}/{len(features)}",
                     f"{np.median(report.rendered):.3f}", f"{np.median(report.natural_lowest):.3f}"])
        print(f"  negative shapes-{variant}-vit-a: rendered {np.round(report.rendered, 3).tolist()} natural lowest "
              f"{np.round(report.natural_lowest, 3).tolist()}", flush=True)
    print(f"\nnegative: {args.recipe}, block {layer}, against {args.natural} generated images")
    print_table(header, rows)


def bench_accentuate(args, pairs, layer) -> None:
    """Accentuation against plain rendering from noise, per built-in model and weight: activation, distance to the
    original (pixels and block 0) and the pointing game of the accentuated patch map's increase."""
    from vit_feature_viz.image_datasets import builtin_dataset

    header = ["model", "weight", "pairs", "activation: original / accentuated / plain", "gain vs plain",
              "pixel mean abs (plain)", "pixel rms (plain)", "block 0 distance (plain)", "pointing: increase", "pointing: map", "s"]
    rows = []
    for variant, (model, _) in pairs.items():
        data = builtin_dataset(f"vit-feature-viz/shapes-{variant}", "test").select(range(args.accentuate))
        images = np.stack([np.asarray(model.preprocess_uint8(row["image"]).permute(1, 2, 0)) for row in data])
        for weight in args.accentuate_weights:
            start = time.perf_counter()
            report = accentuation_report(model, layer, images, features_per_image=args.accentuate_features,
                                         weight=weight, steps=args.accentuate_steps, recipe=args.recipe,
                                         choose=args.accentuate_choice, seed=args.seed)
            a, p, r, e = report.activation, report.pixel_mean_abs, report.pixel_rms, report.early
            rows.append([f"shapes-{variant}-vit-a", f"{report.weight:g}", str(len(report.pairs)),
                         f"{a[:, 0].mean():.3f} / {a[:, 1].mean():.3f} / {a[:, 2].mean():.3f}",
                         f"{np.nanmedian(report.gain):.0%}", f"{p[:, 0].mean():.3f} ({p[:, 1].mean():.3f})",
                         f"{r[:, 0].mean():.3f} ({r[:, 1].mean():.3f})", f"{e[:, 0].mean():.3f} ({e[:, 1].mean():.3f})",
                         f"{int(report.hits.sum())}/{len(report.hits)} (chance {report.top_fraction:.0%})",
                         f"{int(report.kept.sum())}/{len(report.kept)}",
                         f"{time.perf_counter() - start:.0f}"])
            print(f"  accentuate shapes-{variant}-vit-a weight {report.weight:g}: pointing hit rate {report.hit_rate:.2f} "
                  f"(increase), {report.kept_rate:.2f} (map)",
                  flush=True)
    print(f"\naccentuation: block {layer}, {args.accentuate} test images x {args.accentuate_features} features each "
          f"(the most driven: {args.accentuate_choice}), plain: {args.recipe}")
    print_table(header, rows)


if __name__ == "__main__":
    main()
