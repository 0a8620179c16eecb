"""A gallery folder is a Hugging Face dataset folder: ``README.md`` (dataset card) plus ``data/*.parquet`` shards.

One row per (model_id, layer, feature, objective). Every shard has the same schema (``FEATURES``) so shards
written at different times, or by different processes, load together with
``datasets.load_dataset(str(folder), split="train")`` and push to the Hub as plain files.

Writes are append-mostly: new keys go into a new shard, updated keys rewrite only the shard that holds them,
so a later upload only sends changed files. Every file is written to a temp file and ``os.replace``d, under a
``filelock`` so several processes can add at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image, List, Value
from filelock import FileLock, Timeout
from datasets.info import DatasetInfo, DatasetInfosDict
from huggingface_hub import DatasetCard, DatasetCardData

from ..errors import VizError
from ..markup import inert

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
CARD_COLUMNS = [n for n in FEATURES if n not in ("image", "image_patch_map", "top_images", "patch_maps")]

BASE_TAGS = ["feature-visualization", "vision-transformer"]
# The Hub's task list has no "feature visualization"; the rows describe what vision encoders extract from images.
TASK_CATEGORIES = ["image-feature-extraction"]
# Licence: a gallery is made of images rendered from someone's weights plus crops of someone's dataset, so its
# terms are those of the upstream models and datasets, which this tool cannot know or choose. The card therefore
# says `license: other` with a license_name saying so and a license_link to its own "License" section, which
# names (and links) each upstream model and dataset; `card_info={"license": "<hub licence id>"}` (or
# GalleryFolder.write_card) sets a real licence once its owner has checked the upstream terms.
UPSTREAM_LICENSE_NAME = "upstream-model-and-dataset-licenses"
UPSTREAM_LICENSE_LINK = "README.md"
HUB_URL = "https://huggingface.co"
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # namespace/name, never a path
CARD_INFO_KEY = "vit_feature_viz"  # YAML key holding extra card info, so the card can be regenerated later
LOCK_NAME = ".gallery.lock"
ANALYSIS_DIR = "analysis"  # experiment results (vit_feature_viz.analysis): analysis/<experiment>/<run>.csv|.png
ANALYSIS_SUFFIXES = (".csv", ".png")
LOCK_TIMEOUT_S = 600
GALLERY_MARK = "vit-feature-viz gallery"  # starts the card's config description: how a push knows a repo is a gallery
_SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
]
_PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

Key = tuple  # (model_id, layer, feature, objective)


def merge_key(row: dict) -> Key:
    """The identity of a row: one visualization per model, layer, feature and objective."""
    missing = [c for c in KEY_COLUMNS if row.get(c) is None]
    if missing:
        raise ValueError(f"Gallery row lacks key field(s) {missing}: every row needs {list(KEY_COLUMNS)}.")
    return (str(row["model_id"]), int(row["layer"]), int(row["feature"]), str(row["objective"]))


class GalleryFolder:
    """Read and grow one gallery folder; see the module docstring for the layout."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.data_dir = self.path / "data"
        self.card_path = self.path / "README.md"

    def __repr__(self) -> str:
        return f"GalleryFolder({str(self.path)!r})"

    # ----------------------------------------------------------------- reading

    def exists(self) -> bool:
        """True once at least one shard has been written (a card alone holds no rows)."""
        return bool(self.shard_paths())

    def rows(self) -> list[dict]:
        """All rows, decoded: images come back as PIL images, in shard-name (i.e. time) order."""
        out = []
        for shard in self._require_shards():
            for stored in _read_shard(shard).to_pylist():
                out.append(FEATURES.decode_example(stored))
        return out

    def keys(self) -> set[Key]:
        """The merge keys present, reading only the four key columns (no image bytes)."""
        return {key for keys in _keys_by_shard(self._require_shards()).values() for key in keys}

    def settings(self) -> list[dict]:
        """Every row's non-image columns (keys, recipe, steps, activations, ...), without reading image bytes:
        enough to tell which features a rerun may skip."""
        return _read_card_rows(self._require_shards())

    # ----------------------------------------------------------------- writing

    def add(
        self, rows: Iterable[dict], *, shard_prefix: str = "train", card_info: dict | None = None,
        into: Path | None = None,
    ) -> list[Path]:
        """Merge ``rows`` in by key and refresh the card; returns the shard files written (new or rewritten).

        New keys go to a new shard, or are appended to ``into`` (a shard path from ``new_shard_path`` that this
        writer owns), so a long run can save every batch at once without leaving a shard per batch."""
        if not _PREFIX_RE.match(shard_prefix):
            raise ValueError(f"shard_prefix {shard_prefix!r} must be letters, digits, '-' or '_'.")
        incoming = _fold_by_key(_encode_row(r) for r in rows)
        if not incoming:
            return []  # nothing to merge; use write_card() to change only the card
        self.path.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._check_writable()
            _remove_stale_temps(self.path, self.data_dir)
            written = self._merge_into_existing(incoming)
            if incoming:
                written.append(self._write_new_rows(list(incoming.values()), into or self.new_shard_path(shard_prefix)))
            self._write_card_unlocked(card_info)
        return written

    def new_shard_path(self, prefix: str = "train") -> Path:
        """A shard name unique across processes (nothing is written yet)."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        return self.data_dir / f"{prefix}-{stamp}-{uuid.uuid4().hex[:12]}.parquet"

    def check_destination(self) -> None:
        """Refuse, before any work is done for it, a destination that could not take the results: a file, a
        folder that is neither a gallery nor empty, or a place we may not write. Creates nothing."""
        existing = next(p for p in (self.path, *self.path.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise VizError(f"{existing} is a file, not a folder: choose a new or empty output folder for --out.")
        if existing == self.path:
            self._check_writable()
        try:
            handle, probe = tempfile.mkstemp(prefix=".vfv-write-probe-", dir=existing)
            os.close(handle)
            os.unlink(probe)
        except OSError as err:
            raise VizError(f"Cannot write to {self.path} ({err.strerror}): choose an output folder you can write to.") from None

    def write_card(self, card_info: dict | None = None) -> Path:
        """(Re)write README.md from the rows; ``card_info`` is merged into the info kept in the card's YAML."""
        self._require_shards()
        with self._locked():
            return self._write_card_unlocked(card_info)

    def card_text(self, card_info: dict | None = None) -> str:
        """The card README.md would get with ``card_info`` merged in, without writing anything (a push uses
        it to name the repo in the pushed card while the local folder stays as it is). Takes no lock, so it
        works on a read-only folder: every file is replaced atomically, so what it reads is whole."""
        self._require_shards()
        return self._card_text_unlocked(card_info)

    # ----------------------------------------------------------------- internals

    def shard_paths(self) -> list[Path]:
        """Shards as ``load_dataset`` sees them: ``data/*.parquet`` minus hidden files."""
        if not self.data_dir.is_dir():
            return []
        return sorted(p for p in self.data_dir.glob("*.parquet") if not p.name.startswith("."))

    def analysis_paths(self) -> list[Path]:
        """Experiment tables and plots, `analysis/<experiment>/<run>.csv|.png` (no hidden files): they are part of
        the gallery and pushed with it."""
        root = self.path / ANALYSIS_DIR
        if not root.is_dir():
            return []
        return sorted(
            p for p in root.glob("*/*")
            if p.suffix in ANALYSIS_SUFFIXES and p.is_file() and not p.name.startswith(".") and not p.parent.name.startswith(".")
        )

    def _require_shards(self) -> list[Path]:
        """Shards, or a VizError saying this is not a gallery folder."""
        shards = self.shard_paths()
        if not self.path.is_dir():
            raise VizError(
                f"Gallery folder {self.path} does not exist: render features into it first, or check the path."
            )
        if not shards:
            raise VizError(
                f"{self.path} is not a gallery folder (no data/*.parquet shards): "
                "point to a folder written by vit-feature-viz."
            )
        return shards

    @contextlib.contextmanager
    def _locked(self):
        """Serialize read-modify-write across processes (fcntl-backed, so a killed holder frees it)."""
        lock = FileLock(str(self.path / LOCK_NAME), timeout=LOCK_TIMEOUT_S)
        try:
            with lock:
                yield
        except Timeout:
            raise VizError(
                f"Another process has held {self.path / LOCK_NAME} for {LOCK_TIMEOUT_S}s: "
                "wait for it to finish or stop it."
            ) from None

    def _check_writable(self) -> None:
        """Refuse to turn an unrelated, non-empty folder into a gallery (we would overwrite its README)."""
        if self.shard_paths():
            return
        allowed = {"README.md", "data", LOCK_NAME, ANALYSIS_DIR}
        foreign = sorted(p.name for p in self.path.iterdir() if p.name not in allowed and not p.name.startswith("."))
        if foreign:
            raise VizError(
                f"{self.path} is not a gallery folder and not empty (has {foreign[0]}): "
                "choose a new or empty output folder."
            )

    def _merge_into_existing(self, incoming: dict[Key, dict]) -> list[Path]:
        """Merge rows whose key already exists into their shards; pops them from ``incoming``."""
        written = []
        for shard, keys in _keys_by_shard(self.shard_paths()).items():
            hits = set(keys) & incoming.keys()
            if not hits:
                continue  # untouched shards stay byte-identical
            stored = _read_shard(shard).to_pylist()
            merged = [_merge(r, incoming[merge_key(r)]) if merge_key(r) in hits else r for r in stored]
            _write_shard(shard, merged)
            written.append(shard)
            for key in hits:
                incoming.pop(key)
        return written

    def _write_new_rows(self, rows: list[dict], path: Path) -> Path:
        """All new keys of one ``add`` go into one shard: a new one, or appended to the writer's own."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stored = _read_shard(path).to_pylist() if path.exists() else []
        _write_shard(path, stored + rows)
        return path

    def _write_card_unlocked(self, card_info: dict | None) -> Path:
        """Build the card from the cheap columns plus stored info and write it atomically."""
        text = self._card_text_unlocked(card_info)
        _atomic_write(self.card_path, lambda f: f.write(text.encode("utf-8")))
        return self.card_path

    def _card_text_unlocked(self, card_info: dict | None) -> str:
        old = _load_card_data(self.card_path)
        info = merge_card_info(old.get(CARD_INFO_KEY) or {}, card_info or {})
        shards = self.shard_paths()
        chosen = info.get("license") or old.get("license")  # a licence set by hand in the card survives
        text = render_card(_read_card_rows(shards), info, license=chosen, fingerprint=_content_fingerprint(shards))
        DatasetCard(text)  # fail here, not on the Hub, if the YAML does not parse
        return text


# --------------------------------------------------------------------- encoding rows


def _encode_row(row: dict) -> dict:
    """Turn a user row (PIL images, missing keys) into the stored form: every column, images as PNG bytes."""
    unknown = set(row) - set(FEATURES)
    if unknown:
        raise ValueError(f"Unknown gallery column(s) {sorted(unknown)}: allowed are {list(FEATURES)}.")
    merge_key(row)
    return {name: _encode_value(feat, row.get(name), name) for name, feat in FEATURES.items()}


def _encode_value(feat: Any, value: Any, name: str) -> Any:
    """Encode one value for ``feat``; lists become [] when missing so 'nothing new' is one representation."""
    if isinstance(feat, List):
        return [_encode_value(feat.feature, v, name) for v in (value if value is not None else [])]
    if value is None:
        return None
    if isinstance(feat, Image):
        return {"bytes": _png_bytes(value), "path": None}
    if feat.dtype == "string":
        return str(value)
    if feat.dtype.startswith("int"):
        return int(value)
    if feat.dtype.startswith("float"):
        return float(value)
    raise TypeError(f"Unhandled feature type for column {name}: {feat}")


def _png_bytes(value: Any) -> bytes:
    """Always PNG bytes: datasets would store a file-backed PIL image as a *path* (broken once pushed) and
    keep JPEGs as JPEG; we want self-contained, lossless shards."""
    import numpy as np
    import PIL.Image

    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        value = PIL.Image.open(io.BytesIO(value))
    elif isinstance(value, (str, os.PathLike)):
        value = PIL.Image.open(value)
    elif isinstance(value, np.ndarray):
        value = PIL.Image.fromarray(value)
    if not isinstance(value, PIL.Image.Image):
        raise TypeError(f"Expected a PIL image, got {type(value).__name__}.")
    if value.mode not in _PNG_MODES:
        value = value.convert("RGBA" if "A" in value.getbands() else "RGB")
    buf = io.BytesIO()
    value.save(buf, format="PNG")
    return buf.getvalue()


def _fold_by_key(rows: Iterable[dict]) -> dict[Key, dict]:
    """Collapse rows sharing a key (later ones merge over earlier ones), keeping first-seen order."""
    out: dict[Key, dict] = {}
    for row in rows:
        key = merge_key(row)
        out[key] = _merge(out[key], row) if key in out else row
    return out


def _merge(old: dict, new: dict) -> dict:
    """Field-wise merge: None or [] in ``new`` means 'not computed here', so it never erases ``old``."""
    out = dict(old)
    for name, value in new.items():
        if value is None or (isinstance(value, list) and not value):
            continue
        out[name] = value
    return out


# --------------------------------------------------------------------- files


def _read_shard(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a shard after checking it has the gallery columns, so foreign or damaged files fail clearly."""
    try:
        names = pq.read_schema(path).names
        if set(names) == set(FEATURES):
            return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise VizError(f"{path} is not a readable parquet file ({str(err).splitlines()[0][:80]}): "
                       f"move it out of {path.parent} or restore it.") from None
    raise VizError(
        f"{path} is not a gallery shard (columns {names[:4]}...): "
        f"move it out of {path.parent} or use another folder."
    )


def shard_problem(path: Path) -> str | None:
    """Why `path` cannot join a gallery (not parquet, or not a gallery's columns), or None if it can: checked
    before a file from elsewhere (a pull) is written into a gallery folder."""
    try:
        names = pq.read_schema(path).names
        if set(names) != set(FEATURES):
            return f"not a gallery shard (columns {names[:4]}...)"
        pq.read_table(path, columns=list(KEY_COLUMNS))
    except (pa.ArrowException, OSError) as err:
        return f"not a readable parquet file ({first_error_line(err)})"
    return None


def first_error_line(err: BaseException, limit: int = 80) -> str:
    """An error's first line, cut short, for a one-line message (parquet's errors run over several lines)."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__


def linked_file(folder: Path, paths: Iterable[Path]) -> str | None:
    """What is wrong with the first of `paths` (files under `folder`) that is a symbolic link, lies behind one, or is
    not a regular file; None if all are plain files of the folder. A push or a download sends only those: a link
    in a gallery would carry a file from elsewhere on the machine (the folder itself may be a link)."""
    folder = Path(folder)
    for path in paths:
        relative = Path(path).relative_to(folder)
        for depth in range(1, len(relative.parts) + 1):
            step = folder.joinpath(*relative.parts[:depth])
            if step.is_symlink():
                inside = "" if depth == len(relative.parts) else f" (it holds {relative.as_posix()})"
                return f"{step.relative_to(folder).as_posix()} is a symbolic link{inside}"
        if not Path(path).is_file():
            return f"{relative.as_posix()} is not a regular file"
    return None


def _keys_by_shard(shards: list[Path]) -> dict[Path, list[Key]]:
    """Which keys each shard holds, read from the key columns only."""
    return {s: [merge_key(r) for r in _read_shard(s, columns=list(KEY_COLUMNS)).to_pylist()] for s in shards}


def _write_shard(path: Path, rows: list[dict]) -> None:
    """Write stored-form rows with datasets' parquet writer (features metadata, content-defined chunking,
    uncompressed PLAIN image bytes: what the Hub dedups best)."""
    ds = datasets.Dataset.from_list(rows, features=FEATURES)
    with _quiet_datasets():
        _atomic_write(path, ds.to_parquet)


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Write via a hidden temp file in the same folder then ``os.replace``: readers never see a partial file,
    and the temp name matches neither ``*.parquet`` nor README.md."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step (see ``_atomic_write``): for other modules' files that a kill
    must never leave half-written, such as saved progress."""
    _atomic_write(Path(path), lambda f: f.write(data))


def _remove_stale_temps(*folders: Path) -> None:
    """Temp files left by a killed writer; safe to delete because every writer holds the lock."""
    for folder in folders:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_datasets():
    """``to_parquet`` draws a progress bar per shard; hide it without changing the caller's setting."""
    was_disabled = datasets.are_progress_bars_disabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not was_disabled:
            datasets.disable_progress_bars()
        try:
            yield
        finally:
            if not was_disabled:
                datasets.enable_progress_bars()


# --------------------------------------------------------------------- card


def _load_card_data(path: Path) -> dict:
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


def _read_card_rows(shards: list[Path]) -> list[dict]:
    """Non-image columns of every row, sorted by key, for the card."""
    rows = [r for s in shards for r in _read_shard(s, columns=CARD_COLUMNS).to_pylist()]
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
    return bool(_HUB_ID_RE.match(str(name))) and not os.path.exists(str(name))


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


def _content_fingerprint(shards: list[Path]) -> str:
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
