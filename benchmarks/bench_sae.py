"""Do SAE latents beat MLP channels? On built-in shapes models: train a TopK SAE on a layer's fc1 over the train
split of the model's own dataset, then compare the label purity of the top-16 test images of every SAE latent with
that of every MLP channel of the same layer (sae/purity.py). Purity is by shape on the model's own test split, and
by shape and by colour on the cue-conflict set (each image's shape drawn in another class's colour, so the two
labels disagree). Prints the SAE's measurements and the Markdown purity table of README's "Sparse autoencoders".

    python benchmarks/bench_sae.py --layer 3 --epochs 8 --k 8 --latents 1536 --out sae-gallery
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vit_feature_viz.image_datasets import builtin_dataset
from vit_feature_viz.models import load_model
from vit_feature_viz.sae.purity import PURE, feature_means, purity
from vit_feature_viz.sae.train import SaeSettings, train_sae

MODELS = {"shapes-shape-vit-a": "shape", "shapes-color-vit-a": "color"}
CUE_CONFLICT = "vit-feature-viz/shapes-cue-conflict"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=3)
    parser.add_argument("--latents", type=int, default=1536)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patches-per-image", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--top", type=int, default=16)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--out", default="sae-gallery")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dead-after", type=int, default=20_000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, measured = [], []
    start = time.time()
    for short in args.models:
        variant = MODELS[short]
        model = load_model(f"vit-feature-viz/{short}", device="cpu", precision="fp32")
        dataset = f"vit-feature-viz/shapes-{variant}"
        settings = SaeSettings(layer=args.layer, latents=args.latents, k=args.k, epochs=args.epochs,
                               patches_per_image=args.patches_per_image, lr=args.lr, buffer_tokens=32768,
                               dead_after=args.dead_after, image_batch=64)
        began = time.time()
        saved = train_sae(model, dataset, f"{args.out}/{short}", settings, split="train", progress=False,
                          eval_images=1200, eval_split="test", checkpoint_seconds=1e9)
        metrics = saved.config["metrics"]
        measured.append((short, metrics, saved.config["trained"], time.time() - began))
        print(short, json.dumps(metrics), flush=True)
        own = builtin_dataset(dataset, "test")
        conflict = builtin_dataset(CUE_CONFLICT, "test")
        for name, data, columns in ((dataset + " test", own, {"shape": "label"}),
                                    (CUE_CONFLICT + " test", conflict, {"shape": "shape", "colour": "color"})):
            means = feature_means(model, args.layer, data, "image", saved)
            for cue, column in columns.items():
                labels = torch.tensor(data[column])
                rows.append((short, name, cue, "MLP channels (fc1)", purity(means["channels"], labels, args.top)))
                rows.append((short, name, cue, "SAE latents (TopK code)", purity(means["latents"], labels, args.top, True)))
                rows.append((short, name, cue, "SAE latents (encoder pre-activation)", purity(means["pre"], labels, args.top)))
                rows.append((short, name, cue, "MLP channels, max patch", purity(means["channels max"], labels, args.top)))
                rows.append((short, name, cue, "SAE latents, max patch", purity(means["latents max"], labels, args.top, True)))
    print(f"\nlayer {args.layer}, {args.latents} latents, K={args.k}, {args.epochs} epochs over 1200 train images "
          f"({args.patches_per_image} patches each); {time.time() - start:.0f} s\n")
    print("| model | FVE | L0 | dead latents | accuracy | with the layer replaced | top-1 kept | train time |")
    print("|---|---|---|---|---|---|---|---|")
    for short, m, trained, seconds in measured:
        print(f"| {short} | {m['fve']:.3f} | {m['l0']:.1f} | {m['dead_latents']}/{m['latents']} | "
              f"{100 * m['accuracy']:.1f} | {100 * m['accuracy_spliced']:.1f} | {100 * m['top1_agreement']:.1f}% "
              f"| {seconds:.0f} s |")
    print(f"\n| model | images | label | features | scored | mean purity | median | pure (>= {PURE}) |")
    print("|---|---|---|---|---|---|---|---|")
    for short, name, cue, features, result in rows:
        r = result.row()
        print(f"| {short} | {name} | {cue} | {features} | {r['features']} | {r['mean']:.3f} | {r['median']:.3f} "
              f"| {r['pure']} ({100 * r['pure'] / max(r['features'], 1):.0f}%) |")


if __name__ == "__main__":
    main()
