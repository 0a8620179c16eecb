"""Train the shapes fixtures: small ViTs that have really learned the procedural shapes (vit_feature_viz.data.shapes).

For each variant ("color": colour and shape tell the class; "shape": only the shape does) two ViTs that differ
in seed and width, as transformers ViTForImageClassification checkpoints with a ViTImageProcessor, into
vit_feature_viz/data/models/<short>/ together with training.json (validation accuracy, steps, seconds).
Every batch is freshly generated (an endless training set) and randomly flipped and rotated by multiples of 90
degrees; the validation images come from a seed no batch uses. The shape-only fixtures also get an auxiliary
per-patch loss from the masks (a head used in training only, not saved): without it a ViT sits at chance for
about a thousand steps, because with random colours it must find the figure before it can read its outline. Seeded and CPU-only, so a rerun gives the same
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
    patch_loss: float = 0.0  # weight of the auxiliary per-patch loss (see patch_labels)


FIXTURES = {
    f.short: f
    for f in (
        Fixture("shapes-color-vit-a", "color", width=96, seed=0, steps=500),
        Fixture("shapes-color-vit-b", "color", width=64, seed=1, steps=500),
        Fixture("shapes-shape-vit-a", "shape", width=96, seed=2, steps=4500, patch_loss=1.0),
        Fixture("shapes-shape-vit-b", "shape", width=64, seed=3, steps=6000, patch_loss=1.0),
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


def augment(pixels: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
    """A random element of the square's symmetry group per image (every class is closed under it), applied to
    the images and their shape masks alike."""
    both = torch.cat([pixels, masks[:, None].float()], dim=1)
    flips = torch.rand(len(both), generator=generator) < 0.5
    both = torch.where(flips[:, None, None, None], both.flip(-1), both)
    turns = torch.randint(0, 4, (len(both),), generator=generator)
    both = torch.stack([torch.rot90(x, int(k), dims=(1, 2)) for x, k in zip(both, turns)])
    return both[:, :3], both[:, 3]


def patch_labels(masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per patch (row-major, as the ViT orders them): the shape's class where the shape covers at least a quarter
    of the patch, else background (class index len(SHAPE_CLASSES))."""
    coverage = torch.nn.functional.avg_pool2d(masks[:, None], PATCH).flatten(1)  # [B, patches]
    background = torch.full_like(coverage, len(SHAPE_CLASSES), dtype=torch.long)
    return torch.where(coverage >= 0.25, labels[:, None].expand_as(background), background)


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
    patch_head = torch.nn.Linear(fixture.width, len(SHAPE_CLASSES) + 1)  # training only: not saved
    trained = [*model.parameters(), *(patch_head.parameters() if fixture.patch_loss else [])]
    optimizer = torch.optim.AdamW(trained, lr=fixture.lr, weight_decay=fixture.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
        (step + 1) / fixture.warmup, 0.5 * (1 + math.cos(math.pi * step / fixture.steps))))
    generator = torch.Generator().manual_seed(fixture.seed)
    wall, cpu = time.time(), time.process_time()
    history = []
    model.train()
    for step in range(fixture.steps):
        batch = generate_shapes(fixture.batch, variant=fixture.variant, size=IMAGE_SIZE,
                                seed=fixture.seed * 1_000_003 + step)  # never VALIDATION_SEED
        labels = torch.from_numpy(batch.labels)
        pixels, masks = augment(to_pixels(batch.images), torch.from_numpy(batch.masks), generator)
        tokens = model.vit(pixel_values=pixels).last_hidden_state  # what ViTForImageClassification classifies
        loss = torch.nn.functional.cross_entropy(model.classifier(tokens[:, 0]), labels)
        if fixture.patch_loss:  # dense supervision from the masks: every patch says what it is part of
            patch_logits = patch_head(tokens[:, 1:])
            loss = loss + fixture.patch_loss * torch.nn.functional.cross_entropy(
                patch_logits.flatten(0, 1), patch_labels(masks, labels).flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
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
