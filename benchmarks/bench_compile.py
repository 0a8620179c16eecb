"""Does torch.compile pay back its warm-up within one gallery? Timed on the step the default recipe runs most.

The step: a random-weight timm ViT-B/16 at 224 px up to block 6's MLP activation (where the renderer stops), 2
features x 2 copies (`fast`'s batch for a 2-feature request), input gradient only, eager against torch.compile
(inductor, default mode), in fp32 and, where the hardware has fast bf16 units, under bf16 autocast. Prints s/step
and the number of steps after which the compile time is paid back (a `fast` gallery batch is 128 steps).

The renderer itself is not compiled: it captures activations with hooks registered per call and stops the forward
with an exception, which Dynamo would retrace on every call; this measures the best case, a clean function.

    python benchmarks/bench_compile.py
"""

from __future__ import annotations

import time

import timm
import torch

from vit_feature_viz.device import cpu_has_bf16_units

LAYER, IMAGES, TIMED_STEPS = 6, 4, 6


def build():
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    for p in model.parameters():
        p.requires_grad_(False)

    def objective(x: torch.Tensor) -> torch.Tensor:
        x = model._pos_embed(model.patch_embed(x))
        for block in model.blocks[:LAYER]:
            x = block(x)
        block = model.blocks[LAYER]
        x = x + block.attn(block.norm1(x))
        hidden = block.mlp.act(block.mlp.fc1(block.norm2(x)))
        return hidden[:, 1:, :IMAGES].mean(1).sum()

    return objective


def step(fn, precision: str) -> None:
    x = torch.rand(IMAGES, 3, 224, 224, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = fn(x)
    loss.backward()


def seconds_per_step(fn, precision: str) -> float:
    step(fn, precision)
    start = time.perf_counter()
    for _ in range(TIMED_STEPS):
        step(fn, precision)
    return (time.perf_counter() - start) / TIMED_STEPS


def main() -> None:
    precisions = ["fp32", "bf16"] if cpu_has_bf16_units() else ["fp32"]
    for precision in precisions:
        objective = build()
        eager = seconds_per_step(objective, precision)
        compiled = torch.compile(objective)
        start = time.perf_counter()
        step(compiled, precision)
        warm_up = time.perf_counter() - start
        fast = seconds_per_step(compiled, precision)
        payback = f"pays back after {warm_up / (eager - fast):.0f} steps" if fast < eager else "never pays back"
        print(f"{precision}: eager {eager:.3f} s/step, compiled {fast:.3f} s/step ({eager / fast:.2f}x), "
              f"compile {warm_up:.1f} s: {payback}", flush=True)


if __name__ == "__main__":
    main()
