"""Train the shapes fixtures: small ViTs that have really learned the procedural shapes (vit_feature_viz.data.shapes).

For each variant ("color": colour and shape tell the class; "shape": only the shape does) two ViTs that differ
in seed and width, as transformers ViTForImageClassification checkpoints with a ViTImageProcessor, into
vit_feature_viz/data/models/<short>/ together with training.json (validation accuracy, steps, seconds).
Every batch is freshly generated (an endless training set) and randomly flipped and rotated by multiples of 90
degrees; the validation images come from a seed no batch uses. Seeded and CPU-only, so a rerun gives the same
weights on the same torch build. CI never runs this; the weights are committed.

    nice -n 10 python scripts/train_shape_fixtures.py                  # all four
    nice -n 10 python scripts/train_shape_fixtures.py shapes-shape-vit-a --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vit_feature_viz.data.shapes import SHAPE_CLASSES, generate_shapes

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "vit_feature_viz" / "data" / "models"
IMAGE_SIZE, PATCH, DEPTH, HEADS = 64, 8, 6, 4
VALIDATION_SEED, VALIDATION_COUNT = 999_983, 1200


@dataclass(frozen=True)
class Fixture:
    short: str
    variant: str
    width: int
    seed: int
    steps: int
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 150
    easy_until: float = 0.0  # fraction of training over which the share of plain-background images falls 1 -> 0


FIXTURES = {
    f.short: f
    for f in (
        Fixture("shapes-color-vit-a", "color", width=96, seed=0, steps=500),
        Fixture("shapes-color-vit-b", "color", width=64, seed=1, steps=500),
        Fixture("shapes-shape-vit-a", "shape", width=96, seed=2, steps=2500, easy_until=0.5),
        Fixture("shapes-shape-vit-b", "shape", width=64, seed=3, steps=2500, easy_until=0.5),
    )
}


def build_model(fixture: Fixture):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH, hidden_size=fixture.width, num_hidden_layers=DEPTH,
        num_attention_heads=HEADS, intermediate_size=4 * fixture.width, num_labels=len(SHAPE_CLASSES),
        id2label=dict(enumerate(SHAPE_CLASSES)), label2id={name: i for i, name in enumerate(SHAPE_CLASSES)},
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(fixture.seed)
    return ViTForImageClassification._from_config(config, attn_implementation="eager")


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> the model's input: NCHW in [-1, 1] (mean and std 0.5, as the saved image processor says)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def simplify(batch, share: float, rng: np.random.Generator) -> np.ndarray:
    """Curriculum: replace the textured background of a `share` of the images by its plain mean colour.

    With random colours a ViT sits at chance for a long time: it must find the figure before it can read its
    outline. On plain backgrounds the figure is obvious; the share falls to 0, so it ends on the real images.
    The shape's own colour stays random, so colour never tells the class.
    """
    images = batch.images.copy()
    for i in np.flatnonzero(rng.random(len(images)) < share):
        background = ~batch.masks[i]
        images[i][background] = images[i][background].mean(0).astype(np.uint8)
    return images


def augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random element of the square's symmetry group per image: every class is closed under it."""
    flips = torch.rand(len(pixels), generator=generator) < 0.5
    pixels = torch.where(flips[:, None, None, None], pixels.flip(-1), pixels)
    turns = torch.randint(0, 4, (len(pixels),), generator=generator)
    return torch.stack([torch.rot90(p, int(k), dims=(1, 2)) for p, k in zip(pixels, turns)])


@torch.no_grad()
def accuracy(model, images: np.ndarray, labels: np.ndarray, batch: int = 200) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch):
        logits = model(pixel_values=to_pixels(images[start:start + batch])).logits
        correct += int((logits.argmax(-1).numpy() == labels[start:start + batch]).sum())
    model.train()
    return correct / len(labels)


def train(fixture: Fixture, out_dir: Path) -> dict:
    from transformers import ViTImageProcessor

    model = build_model(fixture)
    validation = generate_shapes(VALIDATION_COUNT, variant=fixture.variant, size=IMAGE_SIZE, seed=VALIDATION_SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=fixture.lr, weight_decay=fixture.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
        (step + 1) / fixture.warmup, 0.5 * (1 + math.cos(math.pi * step / fixture.steps))))
    generator = torch.Generator().manual_seed(fixture.seed)
    curriculum = np.random.default_rng(fixture.seed)
    wall, cpu = time.time(), time.process_time()
    history = []
    model.train()
    for step in range(fixture.steps):
        batch = generate_shapes(fixture.batch, variant=fixture.variant, size=IMAGE_SIZE,
                                seed=fixture.seed * 1_000_003 + step)  # never VALIDATION_SEED
        easy_share = max(0.0, 1.0 - step / (fixture.easy_until * fixture.steps)) if fixture.easy_until else 0.0
        pixels = augment(to_pixels(simplify(batch, easy_share, curriculum)), generator)
        loss = model(pixel_values=pixels, labels=torch.from_numpy(batch.labels)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if (step + 1) % max(1, fixture.steps // 10) == 0 or step + 1 == fixture.steps:
            acc = accuracy(model, validation.images, validation.labels)
            history.append({"step": step + 1, "loss": round(loss.item(), 4), "val_accuracy": acc,
                            "seconds": round(time.time() - wall, 1)})
            print(f"{fixture.short} step {step + 1}/{fixture.steps} loss {loss.item():.3f} "
                  f"val {acc:.3f} ({time.time() - wall:.0f} s)", flush=True)
    report = {
        "val_accuracy": history[-1]["val_accuracy"],
        "val_images": VALIDATION_COUNT,
        "val_seed": VALIDATION_SEED,
        "train_images": fixture.steps * fixture.batch,
        "train_seconds": round(time.time() - wall, 1),
        "train_cpu_seconds": round(time.process_time() - cpu, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "fixture": asdict(fixture),
        "history": history,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(out_dir)
    (out_dir / "training.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"fixtures to train, of {', '.join(FIXTURES)} (default: all four)")
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="parent folder of the model folders")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, default=None, help="override the steps (for a quick trial)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(FIXTURES))
    if unknown:
        parser.error(f"unknown fixtures {unknown}: pick from {', '.join(FIXTURES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.names or list(FIXTURES):
        fixture = FIXTURES[name]
        if args.steps:
            fixture = Fixture(**{**asdict(fixture), "steps": args.steps})
        report = train(fixture, args.out / name)
        size_mb = (args.out / name / "model.safetensors").stat().st_size / 1e6
        print(f"{name}: val accuracy {report['val_accuracy']:.3f} on {report['val_images']} held-out images, "
              f"{report['train_seconds']:.0f} s wall ({report['train_cpu_seconds']:.0f} s CPU), {size_mb:.1f} MB")


if __name__ == "__main__":
    main()
