"""The dataset card (README.md) of a gallery: YAML the Hub and `datasets` read (features, configs, licence,
tags) and a short human summary, all built from the rows' cheap columns, never their images.

Licence: a gallery is made of images rendered from someone's weights plus crops of someone's dataset, so its
terms are those of the upstream models and datasets, which this tool cannot know or choose. The card therefore
says `license: other` with a license_name saying so and a license_link to its own "License" section, which
names (and links) each upstream model and dataset; `card_info={"license": "<hub licence id>"}` (or
GalleryFolder.write_card) sets a real licence once its owner has checked the upstream terms.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from datasets.info import DatasetInfo, DatasetInfosDict
from huggingface_hub import DatasetCard, DatasetCardData

from ..markup import inert
from ..specs import HUB_ID
from .schema import CARD_COLUMNS, FEATURES, merge_key
from .shards import read_shard

BASE_TAGS = ["feature-visualization", "vision-transformer"]
# The Hub's task list has no "feature visualization"; the rows describe what vision encoders extract from images.
TASK_CATEGORIES = ["image-feature-extraction"]
UPSTREAM_LICENSE_NAME = "upstream-model-and-dataset-licenses"
UPSTREAM_LICENSE_LINK = "README.md"
HUB_URL = "https://huggingface.co"
CARD_INFO_KEY = "vit_feature_viz"  # YAML key holding extra card info, so the card can be regenerated later
GALLERY_MARK = "vit-feature-viz gallery"  # starts the card's config description: how a push knows a repo is a gallery
_SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
]


def load_card_data(path: Path) -> dict:
    """YAML of the existing card, or {} if there is none or it does not parse."""
    if not path.is_file():
        return {}
    try:
        return DatasetCard.load(path).data.to_dict()
    except Exception:  # a broken card is regenerated, not fatal
        return {}


def is_gallery_card(text: str) -> bool:
    """Whether a README.md is a gallery's card (its config description starts with GALLERY_MARK, or its YAML holds
    the gallery's own info), so that a push may replace it."""
    try:
        data = DatasetCard(text).data.to_dict()
    except Exception:  # not a card at all
        return False
    configs = [c for c in data.get("configs") or [] if isinstance(c, dict)]
    return CARD_INFO_KEY in data or any(str(c.get("description", "")).startswith(GALLERY_MARK) for c in configs)


def read_card_rows(shards: list[Path]) -> list[dict]:
    """Non-image columns of every row, sorted by key, for the card."""
    rows = [r for s in shards for r in read_shard(s, columns=CARD_COLUMNS).to_pylist()]
    return sorted(rows, key=merge_key)


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` rows."""
    for limit, name in _SIZE_CATEGORIES:
        if n < limit:
            return name
    return "n>100M"


def _as_list(value) -> list:
    return [value] if isinstance(value, str) else list(value or [])


def merge_card_info(old: dict, new: dict) -> dict:
    """``new`` over ``old``, except ``backend``: a gallery holding models of several backends lists them all."""
    merged = {**old, **new}
    backends = list(dict.fromkeys(_as_list(old.get("backend")) + _as_list(new.get("backend"))))
    if backends:
        merged["backend"] = backends
    return merged


def _backend_tags(info: dict) -> list[str]:
    """Tags from ``backend`` (str or list) and ``tags`` in the card info."""
    return _as_list(info.get("backend")) + _as_list(info.get("tags"))


def is_hub_id(name: str) -> bool:
    """Whether ``name`` reads as a Hub repo id (namespace/name) rather than a local path."""
    return bool(HUB_ID.match(str(name))) and not os.path.exists(str(name))


def _hub_link(name: str, kind: str = "") -> str:
    """A Markdown link to a Hub repo, or the name as code when it is a local path (nothing to link to). A Hub id
    holds no character that makes markup; anything else is text through `inert`, in an HTML <code> because a
    Markdown code span would show its character references as typed."""
    return f"[{name}]({HUB_URL}/{kind}{name})" if is_hub_id(name) else f"<code>{inert(name)}</code>"


def _distinct(rows: list[dict], column: str) -> list:
    """Sorted distinct non-null values of a column."""
    return sorted({r[column] for r in rows if r[column] is not None})


def _fmt(values: list) -> str:
    """A short comma list of values from rows or card info, as text for the card ('-' when empty)."""
    return ", ".join(map(inert, values)) if values else "-"


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.4g}"


def content_fingerprint(shards: list[Path]) -> str:
    """A hash of the shards' names and bytes. `datasets` keys its cache of a local folder on the card's configs,
    not on the files, so without this a reload after adding rows returns the old rows."""
    digest = hashlib.sha256()
    for shard in sorted(shards):
        digest.update(shard.name.encode())
        digest.update(hashlib.sha256(shard.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _license_fields(chosen: str | None) -> dict:
    """A Hub licence id the owner chose, else `other` pointing at the card's License section (see the top)."""
    if chosen and chosen != "other":
        return {"license": str(chosen)}
    return {"license": "other", "license_name": UPSTREAM_LICENSE_NAME, "license_link": UPSTREAM_LICENSE_LINK}


def render_card(rows: list[dict], info: dict, *, license: str | None = None, fingerprint: str = "") -> str:
    """The whole README.md text (YAML front matter + body) for rows with ``CARD_COLUMNS``.

    The YAML declares the columns (`dataset_info.features`, with the image columns as Image features) the way
    `datasets.push_to_hub` does, so the Hub's dataset viewer shows the images.
    """
    models = _distinct(rows, "model_id")
    subject = models[0] if len(models) == 1 else f"{len(models)} ViT models"
    pretty = info.get("pretty_name") or f"Feature visualizations of {subject}"
    data = DatasetCardData(
        **_license_fields(license or info.get("license")),
        pretty_name=pretty,
        task_categories=TASK_CATEGORIES,
        size_categories=[size_category(len(rows))],
        tags=list(dict.fromkeys(BASE_TAGS + _backend_tags(info))),
        configs=[{
            "config_name": "default",
            "data_files": [{"split": "train", "path": "data/*.parquet"}],
            "description": f"{GALLERY_MARK}, content {fingerprint}",  # part of datasets' cache key
        }],
        **({CARD_INFO_KEY: info} if info else {}),
    )
    DatasetInfosDict({"default": DatasetInfo(features=FEATURES, config_name="default")}).to_dataset_card_data(data)
    body = "\n".join([f"# {inert(pretty)}", "", *_summary(rows, info, models), "", *_preview(rows), "", *_usage(info),
                      "", *_license_section(rows, license or info.get("license"), models)])
    return f"---\n{data.to_yaml()}\n---\n\n{body}\n"


def _license_section(rows: list[dict], chosen: str | None, models: list[str]) -> list[str]:
    """What the licence fields point at: the upstream repos whose terms apply (or the owner's choice)."""
    lines = ["## License", ""]
    if chosen and chosen != "other":
        return lines + [f"<code>{inert(chosen)}</code>, as chosen by the gallery's owner."]
    sources = [_hub_link(m) for m in models] + [_hub_link(d, "datasets/") for d in _distinct(rows, "dataset")]
    return lines + [
        "The images are rendered from the weights of the models below, and the dataset examples are crops of the "
        "datasets below, so the terms of those models and datasets apply: see their pages.",
        "",
        *[f"- {source}" for source in sources],
    ]


def _summary(rows: list[dict], info: dict, models: list[str]) -> list[str]:
    """Intro sentence and a key/value table of what the gallery covers."""
    features = {(r["model_id"], r["layer"], r["feature"]) for r in rows}
    n_examples = [len(r["top_scores"]) for r in rows if r["top_scores"]]
    links = ", ".join(_hub_link(m) for m in models)
    items = [
        ("Model" if len(models) == 1 else "Models", links),
        ("Layers", _fmt(_distinct(rows, "layer"))),
        ("Features", f"{len(features)} ({len(rows)} rows)"),
        ("Objectives", _fmt(_distinct(rows, "objective"))),
        ("Recipes", _fmt(_distinct(rows, "recipe"))),
        ("Steps", _fmt(_distinct(rows, "steps"))),
        ("Seeds", _fmt(_distinct(rows, "seed"))),
        ("Image sizes", _fmt(_distinct(rows, "image_size"))),
        ("Dataset examples", _examples_line(rows, n_examples)),
    ]
    hidden = ("tags", "pretty_name", "license", "repo_id")
    extras = [(inert(k.replace("_", " ").capitalize()), _fmt(_as_list(v) if k == "backend" else [v]))
              for k, v in info.items() if k not in hidden]
    lines = [
        f"Images that maximally activate features of {links}, with dataset examples and patch maps, "
        "made with `vit_feature_viz`. One row per (model_id, layer, feature, objective).",
        "",
        "| | |",
        "|---|---|",
    ]
    return lines + [f"| {k} | {v} |" for k, v in items + extras]


def _examples_line(rows: list[dict], n_examples: list[int]) -> str:
    """Which dataset the top images come from and how many per feature."""
    names = _distinct(rows, "dataset")
    if not names and not n_examples:
        return "none yet"
    top = f"top {max(n_examples)} per feature, {len(n_examples)} row(s)" if n_examples else "no rows yet"
    return f"{', '.join(_hub_link(d, 'datasets/') for d in names) or '-'} ({top})"


def _preview(rows: list[dict], limit: int = 10) -> list[str]:
    """A small table of the first rows (by key)."""
    lines = [
        "## Preview",
        "",
        "| layer | feature | objective | activation | activation_init | top score |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows[:limit]:
        top = max(r["top_scores"]) if r["top_scores"] else None
        lines.append(
            f"| {r['layer']} | {r['feature']} | {inert(r['objective'])} | {_num(r['activation'])} "
            f"| {_num(r['activation_init'])} | {_num(top)} |"
        )
    if len(rows) > limit:
        lines.append(f"\n…and {len(rows) - limit} more rows.")
    return lines


def _usage(info: dict) -> list[str]:
    """A load_dataset snippet: the repo id once pushed (push_gallery sets it), else the local folder's."""
    repo = info.get("repo_id") or "path/to/this/folder"
    return [
        "## Usage",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{inert(repo)}", split="train")',
        'row = ds[0]  # row["image"], row["top_images"], row["patch_maps"] are PIL images',
        "```",
    ]
