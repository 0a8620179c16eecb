"""Browsing galleries made by the real renderer and dataset scan: from a folder, and from the loopback Hub by id."""

from __future__ import annotations

import io
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gallery_fixtures import MODEL, TOP_K, browse_gallery, one_colour_png, write_synthetic_gallery  # noqa: F401
from hub_fixtures import IGNORE_CLIENT_UPLOAD_WARNING
from hub_server import closed_port_url
from vit_feature_viz.app.links import DeepLink, deep_link, feature_link, parse_deep_link
from vit_feature_viz.errors import VizError
from vit_feature_viz.core.registries import DEFAULT_RECIPE
from vit_feature_viz.store import pages
from vit_feature_viz.store.folder import GalleryFolder
from vit_feature_viz.store.hub import push_gallery
from vit_feature_viz.store.index import GalleryIndex, CONCEPT_BYTES
from vit_feature_viz.store.pages import MAX_EXAMPLES, GalleryCache, open_gallery
from vit_feature_viz.store.schema import CONCEPTS_DIR, IMAGE_COLUMNS

pytestmark = IGNORE_CLIENT_UPLOAD_WARNING


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def stored_rows(folder: Path) -> dict:
    return {(r["layer"], r["feature"]): r for r in GalleryFolder(folder).rows()}


def check_gallery(gallery, folder: Path) -> None:
    """What a browser of `gallery` sees matches the rows written to `folder`, pixel for pixel."""
    rows = stored_rows(folder)
    model = MODEL
    assert gallery.models() == [model] and gallery.layers() == [1, 2]
    assert gallery.objectives(model, 1) == ["feature"]
    layer1 = gallery.features(None, 1)
    assert [e.feature for e in layer1] == [0, 1, 2, 3]
    assert [e.activation for e in layer1] == pytest.approx([rows[1, f]["activation"] for f in range(4)])
    thumbs = gallery.thumbnails(layer1[:2])
    assert all(same_pixels(t, rows[1, f]["image"]) for f, t in enumerate(thumbs))

    page = gallery.feature_page(model, 1, 2)
    stored = rows[1, 2]
    assert (page.previous, page.next) == (1, 3)
    [viz] = page.visualizations
    assert viz.row.recipe == DEFAULT_RECIPE and viz.row.activation == pytest.approx(stored["activation"])
    assert same_pixels(viz.image, stored["image"]) and same_pixels(viz.patch_map, stored["image_patch_map"])
    assert len(page.examples) == TOP_K
    for example, image, patch, score in zip(page.examples, stored["top_images"], stored["patch_maps"],
                                            stored["top_scores"]):
        assert same_pixels(example.image, image) and same_pixels(example.patch_map, patch)
        assert example.score == pytest.approx(score)
    assert page.stats["activation"] == pytest.approx(stored["activation"])
    assert page.stats["top example score"] == pytest.approx(max(stored["top_scores"]))
    rank = sorted((r["activation"] for (layer, _), r in rows.items() if layer == 1), reverse=True)
    assert page.stats["rank in layer"] == f"{rank.index(stored['activation']) + 1} of 4"
    assert page.concept_names == []

    first = gallery.feature_page(None, 2, 0)  # no examples for layer 2: the page still opens
    assert first.previous is None and first.next == 1 and first.examples == [] and len(first.visualizations) == 1


def test_browse_a_gallery_folder(browse_gallery):
    gallery = open_gallery(browse_gallery)
    check_gallery(gallery, browse_gallery)
    page = gallery.feature_page(None, 1, 3)
    assert page.next is None
    gallery_param = quote(str(browse_gallery), safe="/")
    assert feature_link(page, "http://127.0.0.1:7860/") == f"http://127.0.0.1:7860/?gallery={gallery_param}&layer=1&feature=3"


def columns_read(gallery) -> set[str]:
    """The columns of row groups the gallery has read since it was opened (its index reads only the keys)."""
    return {column for (_, _, columns) in gallery.index._chunks for column in columns}


def test_browse_reads_only_the_images_a_view_needs(browse_gallery):
    gallery = open_gallery(browse_gallery)
    assert gallery.layers() == [1, 2] and len(gallery.layer_rows(None, 1)) == 4
    assert columns_read(gallery) == set()  # opening and listing read no row group beyond the key columns
    entries = gallery.features(None, 2)
    assert not columns_read(gallery) & set(IMAGE_COLUMNS)  # a row's numbers, no pixels
    gallery.thumbnails(entries)
    assert columns_read(gallery) & set(IMAGE_COLUMNS) == {"image"}


def test_bad_requests_are_one_line_vizerrors(browse_gallery, tmp_path):
    gallery = open_gallery(browse_gallery)
    cases = [
        (lambda: gallery.features(None, 7), "no layer 7", "pick one of 1-2"),
        (lambda: gallery.feature_page(None, 1, 9), "no feature 9 in layer 1", "it has 0-3"),
        (lambda: gallery.feature_page("other/model", 1, 0), "no model other/model", "tiny-org/vit-classifier"),
        (lambda: gallery.feature_page(None, "x", 0), "layer must be a whole number", ""),
        (lambda: gallery.features(None, 1, "logit"), "no 'logit' rows", "feature"),
        (lambda: open_gallery(tmp_path / "missing"), "does not exist", "Hub dataset id"),
        (lambda: open_gallery(tmp_path), "is not a gallery folder", "vit-feature-viz"),
        (lambda: open_gallery(""), "No gallery given", "org/name"),
        (lambda: open_gallery(str(browse_gallery), allow_local=False), "is a local path", "Hub dataset id"),
        (lambda: open_gallery("just-a-name", allow_local=False), "not a Hub dataset id", "namespace/name"),
    ]
    for call, *needles in cases:
        with pytest.raises(VizError) as err:
            call()
        message = str(err.value)
        assert all(n in message for n in needles) and "\n" not in message, message


def test_concept_names_show_when_the_gallery_has_them(browse_gallery, tmp_path):
    """A gallery with the optional `concept_names` column (CLIP concepts) shows them on the feature page."""
    folder = tmp_path / "with-concepts"
    shutil.copytree(browse_gallery, folder)
    for shard in sorted((folder / "data").glob("*.parquet")):
        table = pq.read_table(shard)
        names = [[f"concept {r['feature']}", "stripes"] for r in table.select(["feature"]).to_pylist()]
        pq.write_table(table.append_column("concept_names", pa.array(names, pa.list_(pa.string()))), shard)
    page = open_gallery(folder).feature_page(None, 1, 2)
    assert page.concept_names == ["concept 2", "stripes"]


def test_deep_links_round_trip():
    link = deep_link("https://x.hf.space/?old=1", gallery="org/name", layer=5, feature=812, model=None)
    assert link == "https://x.hf.space/?gallery=org/name&layer=5&feature=812"
    assert parse_deep_link({"gallery": "org/name", "layer": "5", "feature": "812"}).feature == 812
    assert parse_deep_link({"gallery": "https://huggingface.co/datasets/org/name"}).gallery == "org/name"
    assert parse_deep_link({}) is None
    assert parse_deep_link({"model": "org/vit", "layer": "2"}) == DeepLink(None, "org/vit", 2)  # render/explore it
    with pytest.raises(VizError, match="layer must be at least 0"):
        parse_deep_link({"gallery": "org/name", "layer": "-1"})
    with pytest.raises(VizError, match="feature must be a whole number"):
        parse_deep_link({"gallery": "org/name", "feature": "abc"})


def test_browse_a_pushed_gallery_by_repo_id(hub, browse_gallery, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub.write_token)
    push_gallery(browse_gallery, "alice/browse-me")
    monkeypatch.delenv("HF_TOKEN")  # anyone can browse a public gallery
    gallery = open_gallery("alice/browse-me")
    assert re.fullmatch(r"[0-9a-f]{40}", gallery.source.revision)  # reads are pinned to one commit
    check_gallery(gallery, browse_gallery)
    by_url = open_gallery("https://huggingface.co/datasets/alice/browse-me")
    assert by_url.source.key == gallery.source.key and by_url.features(None, 1) == gallery.features(None, 1)

    cache = GalleryCache(max_size=1)
    first, again = (cache.get(name, allow_local=False) for name in ("alice/browse-me", " alice/browse-me "))
    assert first.index is again.index  # one index per revision, whoever opens it

    with pytest.raises(VizError, match="dataset repo alice/nothing-here not found"):
        open_gallery("alice/nothing-here")


def test_hub_errors_are_one_line(hub, monkeypatch, tmp_path):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=hub.write_token)
    api.create_repo("alice/plain", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"hello", path_in_repo="README.md", repo_id="alice/plain", repo_type="dataset")
    with pytest.raises(VizError, match="alice/plain is not a gallery"):
        open_gallery("alice/plain")

    from hub_fixtures import point_clients_at

    point_clients_at(monkeypatch, closed_port_url(), tmp_path / "down")
    with pytest.raises(VizError, match="cannot reach the Hub at") as err:
        open_gallery("alice/browse-me")
    assert "\n" not in str(err.value)


def test_concept_names_from_the_galleries_clip_names_tables(hub, browse_gallery, monkeypatch, tmp_path):
    """Names saved by `analyze clip-names` (analysis/clip_names/<run>.csv, the analysis package's own writer)
    show on the feature page, from the folder and from the Hub after a push."""
    from matplotlib.figure import Figure

    from vit_feature_viz.analysis.clip_names import EXPERIMENT, feature_names
    from vit_feature_viz.analysis.common import AnalysisResult

    folder = tmp_path / "named"
    shutil.copytree(browse_gallery, folder)
    rows = [{"model_id": MODEL, "layer": 1, "feature": 2, "rank": rank, "name": name, "score": 1.0 / rank,
             "top_image_indices": "0 1"} for rank, name in [(2, "stripes"), (1, "zebra")]]
    AnalysisResult(EXPERIMENT, rows, {"experiment": EXPERIMENT, "dataset": "test"}, Figure()).save(folder)
    assert feature_names(folder, MODEL, 1, 2) == ["zebra", "stripes"]  # what the analysis package reads back

    assert open_gallery(folder).feature_page(None, 1, 2).concept_names == ["zebra", "stripes"]
    assert open_gallery(folder).feature_page(None, 1, 1).concept_names == []
    monkeypatch.setenv("HF_TOKEN", hub.write_token)
    push_gallery(folder, "alice/named")
    assert open_gallery("alice/named").feature_page(None, 1, 2).concept_names == ["zebra", "stripes"]


# --- bounded cost for any gallery a visitor can name -----------------------------------------------------------
@pytest.fixture
def decoded(monkeypatch) -> list[tuple[int, int]]:
    """The (width, height) of every stored image decoded from now on (the library's one decoder, instrumented)."""
    sizes: list[tuple[int, int]] = []
    real = pages.decode_image

    def counting(value, label, size=None):
        image = real(value, label, size)
        if image is not None:
            sizes.append(image.size)
        return image

    monkeypatch.setattr(pages, "decode_image", counting)
    return sizes


@pytest.fixture(scope="module")
def huge_gallery(tmp_path_factory) -> Path:
    """2,000,000 rows in 18 MB of parquet: twice what open_gallery accepts by default (written in ~3 s)."""
    return write_synthetic_gallery(tmp_path_factory.mktemp("huge") / "gallery", 1, 2_000_000, image=b"",
                                   row_group_size=1_000_000)


def test_a_gallery_declaring_too_many_rows_is_refused_from_its_footers(huge_gallery, monkeypatch):
    def no_column_reads(*args, **kwargs):
        raise AssertionError("a column was read")

    monkeypatch.setattr(pq.ParquetFile, "read", no_column_reads)
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", no_column_reads)
    started = time.perf_counter()
    with pytest.raises(VizError) as err:
        open_gallery(huge_gallery)
    assert str(err.value) == (f"The gallery {huge_gallery} declares 2,000,000 rows, more than the 1,000,000 that can "
                              "be opened at once: open a smaller gallery (split it by model or by layers).")
    assert time.perf_counter() - started < 5  # the footer alone: milliseconds (reading every row took 54 s)
    with pytest.raises(VizError, match="declares 2,000,000 rows, more than the 10 that"):
        GalleryCache(max_rows=10).get(huge_gallery)


def test_a_large_gallery_opens_into_a_compact_index_and_a_page_reads_only_its_rows(tmp_path, decoded):
    folder = write_synthetic_gallery(tmp_path / "large", 4, 50_000, row_group_size=1000)  # 200,000 rows
    gallery = open_gallery(folder)
    assert (gallery.row_count, gallery.feature_count, gallery.layer_count) == (200_000, 200_000, 4)
    assert gallery.index.nbytes <= 48 * gallery.row_count  # numpy arrays: no Python object per row
    assert columns_read(gallery) == set() and decoded == []

    rows = gallery.layer_rows(None, 3)
    page = rows.entries(49_952, 50_000)  # the layer's last grid page
    assert [e.feature for e in page] == list(range(49_952, 50_000))
    assert len(gallery.thumbnails(page, 2)) == 48 and decoded == [(2, 2)] * 48
    assert {(shard, group) for shard, group, _ in gallery.index._chunks} == {(0, 199)}  # the one row group shown

    feature = gallery.feature_page(None, 3, 49_999)
    assert (feature.previous, feature.next) == (49_998, None)
    assert feature.stats["rank in layer"] == "1 of 50000" and feature.stats["activation"] == 1.0
    assert len(decoded) == 48 + 1  # its visualization (it has no patch map, no examples)


def test_concurrent_opens_of_one_gallery_build_one_index(browse_gallery, tmp_path, monkeypatch):
    folder = tmp_path / "shared"
    shutil.copytree(browse_gallery, folder)
    builds = []
    real_init = GalleryIndex.__init__

    def slow_init(self, *args, **kwargs):
        builds.append(threading.get_ident())
        time.sleep(0.5)  # every other opener arrives while this build runs
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(GalleryIndex, "__init__", slow_init)
    cache = GalleryCache()
    with ThreadPoolExecutor(4) as pool:
        galleries = list(pool.map(lambda _: cache.get(str(folder)), range(4)))
    assert len(builds) == 1 and all(g.index is galleries[0].index for g in galleries)

    shard = sorted((folder / "data").glob("*.parquet"))[0]
    stat = shard.stat()
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new revision of the folder
    assert cache.get(str(folder)).index is not galleries[0].index and len(builds) == 2


def test_images_are_decoded_within_a_pixel_budget(tmp_path, monkeypatch):
    bomb = open_gallery(write_synthetic_gallery(tmp_path / "bomb", 1, 4, image=one_colour_png((9400, 9400), "1")))
    entries = bomb.layer_rows(None, 0).entries()
    for call in (lambda: bomb.thumbnails(entries, 192), lambda: bomb.feature_page(None, 0, 1)):
        with pytest.raises(VizError) as err:
            call()
        assert str(err.value) == (f"The gallery {bomb.label} holds a 9400x9400 image, larger than 4 megapixels, "
                                  "more than this browser decodes: push it again with images of the size they "
                                  "were rendered at.")
    bigger = open_gallery(write_synthetic_gallery(tmp_path / "bigger", 1, 1, image=one_colour_png((13400, 13400), "1")))
    with pytest.raises(VizError, match=r"holds an image larger than 4 megapixels") as err:  # PIL's own bomb error
        bigger.feature_page(None, 0, 0)
    assert "\n" not in str(err.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # the budget is ours, whatever PIL's global says
    with pytest.raises(VizError, match=r"holds a 13400x13400 image"):
        bigger.feature_page(None, 0, 0)

    photo = io.BytesIO()
    Image.new("RGB", (2000, 1500), (10, 120, 200)).save(photo, format="JPEG")
    large = open_gallery(write_synthetic_gallery(tmp_path / "jpeg", 1, 1, image=photo.getvalue()))
    [thumbnail] = large.thumbnails(large.layer_rows(None, 0).entries(), 192)
    assert thumbnail.size == (192, 144)
    assert large.feature_page(None, 0, 0).visualizations[0].image.size == (1024, 768)  # PAGE_PX


def test_a_row_with_thousands_of_top_images_shows_the_first_few(tmp_path, decoded):
    gallery = open_gallery(write_synthetic_gallery(tmp_path / "tops", 1, 2, top_images=3000))
    page = gallery.feature_page(None, 0, 1)
    assert [e.rank for e in page.examples] == list(range(1, MAX_EXAMPLES + 1))
    assert len(decoded) == 1 + 2 * MAX_EXAMPLES  # the visualization, then each example and its patch map
    assert page.stats["top example score"] == 3000.0 and page.stats["lowest top-k score"] == 1.0  # all scores count


def test_a_huge_concept_table_is_read_up_to_its_budget(browse_gallery, tmp_path):
    folder = tmp_path / "named"
    shutil.copytree(browse_gallery, folder)
    (folder / CONCEPTS_DIR).mkdir(parents=True)
    filler = "other/model,0,0,1,padding padding padding padding padding\n"
    (folder / CONCEPTS_DIR / "big.csv").write_text(
        "model_id,layer,feature,rank,name\n" + f"{MODEL},1,2,1,zebra\n"
        + filler * (CONCEPT_BYTES // len(filler) + 1) + f"{MODEL},1,3,1,beyond the budget\n")
    gallery = open_gallery(folder)
    started = time.perf_counter()
    assert gallery.feature_page(None, 1, 2).concept_names == ["zebra"]
    assert gallery.feature_page(None, 1, 3).concept_names == []  # past CONCEPT_BYTES: not read
    assert time.perf_counter() - started < 10

    (folder / CONCEPTS_DIR / "big.csv").write_text(f"model_id,layer,feature,rank,name\n{MODEL},1,2,1,zebra\n"
                                                  f'{MODEL},1,3,1,"{"x" * 300_000}"\n')  # over csv's field limit
    assert open_gallery(folder).feature_page(None, 1, 2).concept_names == ["zebra"]


def test_page_and_deep_link_numbers_are_checked():
    with pytest.raises(VizError, match="feature must be at least 0 and at most 2147483647, got 9999"):
        parse_deep_link({"model": "org/vit", "feature": "9" * 30})  # no 30-digit number reaches a page's boxes
    with pytest.raises(VizError, match="layer must be at least 0 and at most 2147483647"):
        parse_deep_link({"gallery": "org/name", "layer": str(2**64)})
