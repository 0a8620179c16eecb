"""Build the gallery shipped with the package (vit_feature_viz/data/builtin_gallery/), the one the app opens on
start so a newcomer sees learned features at once, offline.

It only runs the commands a user would: `vit-feature-viz gallery` (render with the `fast` recipe, then top
examples and patch maps from the built-in shapes set) for a few blocks of the default built-in model, and
`vit-feature-viz analyze` for the paper's experiments that apply to it, all into a fresh folder that then replaces
the shipped one (a failed build leaves the shipped gallery as it was). Only the gallery's own files are kept
(the card, data/*.parquet, analysis/<experiment>/*.csv|.png), nothing hidden.

The recipe is `fast`, not the library's default: the default is chosen on a real ViT (`fast-std`, see README: On
a real trained ViT), while on these 64 px shapes models `fast` measures better (bench_quality.py: median ratio
2.42 and 6 of 6 classes transferred, against 1.39 and 3 of 6).

    python scripts/build_builtin_gallery.py                       # rebuilds the shipped gallery (a few minutes)
    python scripts/build_builtin_gallery.py --out /tmp/g --layers 3 --features 0 --experiments per-block-cls
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vit_feature_viz.cli import main as cli  # noqa: E402
from vit_feature_viz.image_datasets import DEFAULT_BUILTIN_DATASET  # noqa: E402
from vit_feature_viz.models.builtin import DEFAULT_BUILTIN  # noqa: E402
from vit_feature_viz.store.builtin import BUILTIN_GALLERY_DIR  # noqa: E402
from vit_feature_viz.store.folder import GalleryFolder  # noqa: E402

LAYERS = (1, 3, 5)  # early, middle and last of the built-in model's 6 blocks
FEATURES = "0-7"  # one row of the app's grid per layer
TOP_K = 5
TOY_RECIPE = "fast"  # the best on the shapes models (see above), not the library's default chosen on a real ViT
EXPERIMENTS = ("per-block-cls", "cls-isolation", "token-pooling", "foreground-background", "frequency")
ANALYSIS_IMAGES = 600  # half the built-in test split: enough for stable accuracies, quick on a CPU


def build(out: Path, layers, features: str, top_k: int, experiments, max_images: int | None,
          steps: int | None = None, scan_images: int | None = None) -> None:
    """Every step through the CLI, into `out` (new or empty); `steps` and `scan_images` (None: the defaults,
    the recipe's steps and the whole split) make a quick trial build."""
    def run(*argv: str) -> None:
        print("+ vit-feature-viz", " ".join(argv), file=sys.stderr)
        if cli(list(argv)) != 0:
            raise SystemExit(f"vit-feature-viz {argv[0]} failed: the shipped gallery is unchanged")

    for layer in layers:
        run("gallery", DEFAULT_BUILTIN, "--layer", str(layer), "--features", features, "--recipe", TOY_RECIPE, "--dataset",
            DEFAULT_BUILTIN_DATASET, "--top-k", str(top_k), "--out", str(out), "--quiet", "--device", "cpu",
            "--precision", "fp32", *(["--steps", str(steps)] if steps else []),
            *(["--max-images", str(scan_images)] if scan_images else []))
    for experiment in experiments:
        run("analyze", experiment, DEFAULT_BUILTIN, "--dataset", DEFAULT_BUILTIN_DATASET, "--out", str(out),
            "--quiet", "--device", "cpu", "--precision", "fp32",
            *(["--max-images", str(max_images)] if max_images else []))


def gallery_files(folder: Path) -> list[Path]:
    """What a gallery consists of (what `push` would upload): card, shards, experiment results."""
    gallery = GalleryFolder(folder)
    return [gallery.card_path, *gallery.shard_paths(), *gallery.analysis_paths()]


def publish(built: Path, out: Path) -> int:
    """Copy the gallery's own files into a sibling of `out`, then swap it in; returns the bytes shipped."""
    staging = out.with_name(f".{out.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    for path in gallery_files(built):
        target = staging / path.relative_to(built)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=BUILTIN_GALLERY_DIR, help="folder replaced by the new gallery")
    parser.add_argument("--layers", type=int, nargs="+", default=list(LAYERS), help="blocks rendered")
    parser.add_argument("--features", default=FEATURES, help="features rendered per block")
    parser.add_argument("--top-k", type=int, default=TOP_K, help="dataset examples kept per feature")
    parser.add_argument("--experiments", nargs="*", default=list(EXPERIMENTS), help="analyses run (none: no analyses)")
    parser.add_argument("--max-images", type=int, default=ANALYSIS_IMAGES, help="images per analysis")
    parser.add_argument("--steps", type=int, default=None, help="render steps (default: the default recipe's)")
    parser.add_argument("--scan-images", type=int, default=None,
                        help="dataset images scanned for top examples (default: the whole split)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="builtin-gallery-") as scratch:
        built = Path(scratch) / "gallery"
        build(built, args.layers, args.features, args.top_k, args.experiments, args.max_images,
              args.steps, args.scan_images)
        size = publish(built, args.out.resolve())
    print(f"wrote {args.out} ({size / 2**20:.2f} MB) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
