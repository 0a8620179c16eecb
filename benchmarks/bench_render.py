"""Renderer speed against the paper's recipe run the naive way, on random-weight timm ViTs at 224 px.

Naive = what the authors' code does: the whole model forward in fp32 with weight gradients on, one feature at a
time, 8 augmented copies per step. Ours = `vit_feature_viz.render` (early exit at the target block, frozen
weights, explicit attention on CPU, bf16 only where the hardware has bf16 units, features batched).
Both use the same steps, copies, augmentations, TV and optimizer.

    python benchmarks/bench_render.py                 # ViT-S/16 and ViT-B/16, mid layer
    python benchmarks/bench_render.py --models vit_small_patch16_224 --steps 4 --features 2
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import timm
import torch

from vit_feature_viz import load_model, render
from vit_feature_viz.core.params import PixelImage
from vit_feature_viz.core.recipes import RECIPES
from vit_feature_viz.core.render import feature_seed
from vit_feature_viz.core.transforms import total_variation
from vit_feature_viz.device import cpu_has_bf16_units

PAPER_STEPS = 400


def build_checkpoint(arch: str, folder: str) -> None:
    """A random-weight timm checkpoint saved the way timm repos are (config.json + model.safetensors)."""
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False)
    timm.models.save_for_hf(model, folder, safe_serialization=True)


def naive_feature(module: torch.nn.Module, layer: int, feature: int, steps: int, size: int, mean, std) -> float:
    """One feature the authors' way; returns the final un-augmented activation."""
    recipe = RECIPES["paper"]
    stored = {}
    hook = module.blocks[layer].mlp.act.register_forward_hook(lambda m, i, o: stored.__setitem__("act", o))
    device = next(module.parameters()).device  # CPU or CUDA: bench_speed.py runs unchanged on a GPU
    norm_mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    norm_std = torch.tensor(std, device=device).view(1, 3, 1, 1)
    generators = [torch.Generator().manual_seed(feature_seed(0, layer, feature))]
    image = PixelImage(1, size, generators).to(device)
    optimizer = torch.optim.Adam(image.parameters(), lr=recipe.lr, betas=recipe.betas, eps=1e-8)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    augment = recipe.build_transforms(size, size)
    prefix = module.num_prefix_tokens

    def activation(x):
        module((x - norm_mean) / norm_std)  # the whole model runs, head included
        return stored["act"][:, prefix:, feature].mean(1)

    for step in range(steps):
        x = augment(image().repeat_interleave(recipe.copies, 0), generators, recipe.copies, step, steps)
        loss = -activation(x).mean() + recipe.tv_weight * total_variation(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        image.after_step()
    with torch.no_grad():
        final = float(activation(image()))
    hook.remove()
    return final


def bench(arch: str, steps: int, features: list[int]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        build_checkpoint(arch, folder)
        model = load_model(folder, device="cpu")
        layer = model.num_layers // 2
        render(model, layer, features[:1], steps=1, progress=False)  # warm-up
        start = time.perf_counter()
        ours = render(model, layer, features, steps=steps, progress=False)
        ours_s = (time.perf_counter() - start) / (steps * len(features))

        naive_model = timm.create_model(arch, pretrained=False)  # fused attention, fp32, weight grads on
        naive_model.load_state_dict(model.module.state_dict())
        naive_model.eval()
        naive_feature(naive_model, layer, features[0], 1, model.image_size, model.mean, model.std)  # warm-up
        start = time.perf_counter()
        naive = [naive_feature(naive_model, layer, f, steps, model.image_size, model.mean, model.std) for f in features]
        naive_s = (time.perf_counter() - start) / (steps * len(features))
    return {
        "model": arch,
        "layer": f"{layer} of {model.num_layers}",
        "precision": model.precision,
        "naive_s_per_step": naive_s,
        "ours_s_per_step": ours_s,
        "naive_features_per_hour": 3600 / (naive_s * PAPER_STEPS),
        "ours_features_per_hour": 3600 / (ours_s * PAPER_STEPS),
        "speedup": naive_s / ours_s,
        "naive_mean_activation": sum(naive) / len(naive),
        "ours_mean_activation": sum(r.activation for r in ours) / len(ours),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vit_small_patch16_224", "vit_base_patch16_224"])
    parser.add_argument("--steps", type=int, default=8, help="steps per feature (both runs)")
    parser.add_argument("--features", type=int, default=2, help="features per model")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16 units: {cpu_has_bf16_units()}")
    print("features/hour are for the paper's 400 steps x 8 copies per feature")
    header = f"{'model':<24}{'layer':>9}{'prec':>6}{'naive s/step':>14}{'ours s/step':>13}{'naive f/h':>11}{'ours f/h':>10}{'speedup':>9}{'act naive':>11}{'act ours':>10}"
    print(header)
    for arch in args.models:
        r = bench(arch, args.steps, list(range(args.features)))
        print(f"{r['model']:<24}{r['layer']:>9}{r['precision']:>6}{r['naive_s_per_step']:>14.3f}{r['ours_s_per_step']:>13.3f}"
              f"{r['naive_features_per_hour']:>11.1f}{r['ours_features_per_hour']:>10.1f}{r['speedup']:>8.2f}x"
              f"{r['naive_mean_activation']:>11.3f}{r['ours_mean_activation']:>10.3f}", flush=True)


if __name__ == "__main__":
    main()
