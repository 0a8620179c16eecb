"""What a gallery row is: its columns (the `datasets` features every shard shares), its key, and how rows with
the same key merge. Everything that reads or writes a gallery agrees on this, so it has no I/O of its own."""

from __future__ import annotations

from collections.abc import Iterable

from datasets import Features, Image, List, Value

KEY_COLUMNS = ("model_id", "layer", "feature", "objective")
FEATURES = Features(
    {
        "image": Image(),
        "model_id": Value("string"),
        "layer": Value("int32"),
        "feature": Value("int32"),
        "objective": Value("string"),
        "recipe": Value("string"),
        "steps": Value("int32"),
        "seed": Value("int64"),
        "image_size": Value("int32"),
        "activation": Value("float32"),
        "activation_init": Value("float32"),
        "dataset": Value("string"),
        "top_images": List(Image()),
        "top_scores": List(Value("float32")),
        "top_indices": List(Value("int64")),
        "patch_maps": List(Image()),
        "image_patch_map": Image(),
    }
)
# Columns the card is built from: everything but the images, so writing the card never decodes pixels.
IMAGE_COLUMNS = ("image", "image_patch_map", "top_images", "patch_maps")
CARD_COLUMNS = [n for n in FEATURES if n not in IMAGE_COLUMNS]
ANALYSIS_DIR = "analysis"  # experiment results (vit_feature_viz.analysis): analysis/<experiment>/<run>.csv|.png
ANALYSIS_SUFFIXES = (".csv", ".png")
# CLIP concept names written by `vit-feature-viz analyze clip-names` (vit_feature_viz.analysis.clip_names), kept
# in the gallery next to its shards: model_id, layer, feature, rank, name columns
CONCEPTS_DIR = f"{ANALYSIS_DIR}/clip_names"
Key = tuple  # (model_id, layer, feature, objective)


def merge_key(row: dict) -> Key:
    """The identity of a row: one visualization per model, layer, feature and objective."""
    missing = [c for c in KEY_COLUMNS if row.get(c) is None]
    if missing:
        raise ValueError(f"Gallery row lacks key field(s) {missing}: every row needs {list(KEY_COLUMNS)}.")
    return (str(row["model_id"]), int(row["layer"]), int(row["feature"]), str(row["objective"]))


def fold_by_key(rows: Iterable[dict]) -> dict[Key, dict]:
    """Collapse rows sharing a key (later ones merge over earlier ones), keeping first-seen order."""
    out: dict[Key, dict] = {}
    for row in rows:
        key = merge_key(row)
        out[key] = merge_rows(out[key], row) if key in out else row
    return out


def merge_rows(old: dict, new: dict) -> dict:
    """Field-wise merge: None or [] in ``new`` means 'not computed here', so it never erases ``old``."""
    out = dict(old)
    for name, value in new.items():
        if value is None or (isinstance(value, list) and not value):
            continue
        out[name] = value
    return out
