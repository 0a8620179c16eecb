"""The README's pictures of the real ViT: for each feature of a block, each recipe's image from bench_real.py's
pictures folder, then the feature's top photo crop and that crop's patch map (where the feature fires in it).

    python benchmarks/real_pictures.py --block 6 --recipes fast fast:noclean:std paper --out docs/real-block6.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

from bench_real import CHECKPOINT, RESULTS, picture_folder
from vit_feature_viz import load_model
from vit_feature_viz.core.patchmap import patch_map
from vit_feature_viz.data.photos import photo_crops
from vit_feature_viz.quality import feature_values, uint8_to_pixels

TILE = 160


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(CHECKPOINT))
    parser.add_argument("--block", type=int, default=6)
    parser.add_argument("--recipes", nargs="+", default=["fast", "fast:noclean:std", "paper"])
    parser.add_argument("--features", type=int, default=4, help="the first N features the benchmark rendered")
    parser.add_argument("--results", type=Path, default=RESULTS / "real.json")
    parser.add_argument("--pictures", type=Path, default=RESULTS / "real-pictures")
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--out", type=Path, default=Path("docs") / "real-block.png")
    args = parser.parse_args()
    rows = [r for r in json.loads(args.results.read_text()) if r["layer"] == args.block]
    features = next(r["features"] for r in rows if r["recipe"] == args.recipes[0])[: args.features]
    model = load_model(args.checkpoint, device="cpu")
    photos = photo_crops(model.image_size, args.photos, seed=0)  # the benchmark's pool (same seed)
    best = feature_values(model, args.block, uint8_to_pixels(photos))[:, features].argmax(0).tolist()
    columns = [*args.recipes, "top photo crop", "its patch map"]
    sheet = Image.new("RGB", (TILE * len(columns), TILE * len(features) + 24), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(columns):  # the default font has no colon: "fast:noclean:std" reads "fast + noclean + std"
        draw.text((c * TILE + 4, 6), title.replace(":", " + ").replace("@", " at "), fill="black")
    for r, (feature, photo_index) in enumerate(zip(features, best)):
        tiles = []
        for recipe in args.recipes:
            path = picture_folder(args.pictures, recipe, args.block) / f"feature{feature}.png"
            tiles.append(Image.open(path).convert("RGB") if path.exists() else None)
        photo = Image.fromarray(photos[photo_index])
        tiles += [photo, patch_map(model, photo, args.block, feature)]
        for c, tile in enumerate(tiles):
            if tile is not None:
                sheet.paste(tile.resize((TILE, TILE), Image.BICUBIC), (c * TILE, 24 + r * TILE))
        draw.text((4, 24 + r * TILE + 4), f"feature {feature}", fill="white")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
