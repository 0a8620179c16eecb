"""Nothing a gallery, a card, a link or a visitor holds becomes markup (issue 16, item 3).

Every function that puts such a string into Markdown (the app's gr.Markdown outputs, the gallery card) or into an
error message (gradio shows those as HTML) is fed hostile strings, and its output is parsed the way a browser
would: by a CommonMark renderer with raw HTML on, or as HTML. No element other than the function's own
formatting may come out, no link, image or autolink syntax may survive in the source, and the hostile text must
still be there, as text. tests/test_ui_in_browser.py checks the same in Chromium.
"""

from __future__ import annotations

from html.parser import HTMLParser
from types import SimpleNamespace

import gradio as gr
import pytest
from markdown_it import MarkdownIt

from gallery_fixtures import hostile, make_hostile_gallery
from vit_feature_viz.errors import VizError
from vit_feature_viz.markup import inert

URL = "http://127.0.0.1:9"
OWN_TAGS = {"p", "strong", "code", "h1", "h2", "h3", "br", "ul", "li", "table", "thead", "tbody", "tr", "th", "td",
            "pre"}  # what the functions under test write themselves
RAW_SYNTAX = ("<img", "<a ", "<script", "](", "://", "www.", "@", "&amp;", "$$", "**model")


class Parsed(HTMLParser):
    """The elements and the text of an HTML fragment, character references decoded as a browser does."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.chunks: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.chunks).split())


def as_browser_sees_markdown(markdown: str) -> Parsed:
    return Parsed(MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown))


def assert_inert_markdown(markdown: str, *shown: str) -> None:
    """`markdown` holds no markup but its own, and shows every string of `shown` as text."""
    for raw in RAW_SYNTAX:
        assert raw not in markdown, f"{raw!r} survived in {markdown!r}"
    page = as_browser_sees_markdown(markdown)
    assert set(page.tags) <= OWN_TAGS, page.tags
    for text in shown:
        assert " ".join(text.split()) in page.text


def assert_inert_html(message: str, *shown: str) -> None:
    """An error message as gradio's toast shows it (HTML): no element at all, every string of `shown` as text."""
    page = Parsed(message)
    assert page.tags == [] and "<" not in message, message
    for text in shown:
        assert text in page.text


@pytest.fixture(scope="module")
def gallery_folder(tmp_path_factory):
    return make_hostile_gallery(tmp_path_factory.mktemp("hostile") / "gallery", URL)


# ------------------------------------------------------------------------------------------ the helper


def test_inert_leaves_ordinary_names_alone_and_makes_hostile_ones_text():
    for name in ("google/vit-base-patch16-224", "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", "feature",
                 "/tmp/pytest-of-root/pytest-1/test_x0/gallery", "uoft-cs/cifar10", "paper"):
        assert inert(name) == name and inert(name, markdown=False) == name
    text = hostile("x", URL)
    assert_inert_markdown(inert(text), text)
    assert_inert_html(inert(text, markdown=False), text)
    assert inert("a\n# heading\n\n- item") == "a &#35; heading - item"  # no block starts inside a value
    assert "mailto" not in as_browser_sees_markdown(inert("x@leak.example")).text


# ------------------------------------------------------------------------- the Explore galleries tab


def test_gallery_summary_feature_header_and_compare_note_show_gallery_strings_as_text(gallery_folder):
    from vit_feature_viz.app.galleries_tab import Galleries

    galleries = Galleries()
    label, model, _, objective, summary = galleries.open(str(gallery_folder))
    model = model.value if hasattr(model, "value") else model["value"]
    assert model == hostile("model", URL)
    assert_inert_markdown(summary, hostile("model", URL), str(gallery_folder))

    outputs = galleries.feature_page(label, model, 1, "", 0)
    header = outputs[1]
    assert_inert_markdown(header, hostile("model", URL), hostile("dataset", URL), hostile("concept1", URL),
                          hostile("concept2", URL), str(gallery_folder))
    captions = [caption for _, caption in outputs[3]]  # gallery captions are text in the browser: kept as stored
    assert any(hostile("objective", URL) in caption for caption in captions)
    assert any(hostile("recipe", URL) in value for _, value in outputs[5])  # "made with", in the statistics table

    *_, note = galleries.compare(label, model, 1, "", str(gallery_folder), "0-1")
    assert_inert_markdown(note, hostile("model", URL), str(gallery_folder))


def test_featured_galleries_from_the_environment_are_text():
    from vit_feature_viz.app.galleries_tab import featured_galleries, featured_markdown

    text = hostile("featured", URL)
    markdown = featured_markdown(featured_galleries({"VFV_FEATURED_GALLERIES": text}))
    assert_inert_markdown(markdown.replace("**Featured galleries**", "Featured galleries"), text)


def test_errors_quoting_a_gallery_or_a_link_are_text_in_the_toast(gallery_folder):
    from vit_feature_viz.app.galleries_tab import Galleries

    galleries = Galleries()
    asked = hostile("asked", URL)
    with pytest.raises(gr.Error) as raised:
        galleries.open(f"/nowhere/{asked}")  # a folder that is not there: the message quotes the path
    assert_inert_html(raised.value.message, '<img src="http:', "<script>alert(1)</script>")
    with pytest.raises(gr.Error) as raised:  # names the asked model and the gallery's own
        galleries.pick_model(str(gallery_folder), asked)
    assert_inert_html(raised.value.message, asked, hostile("model", URL))
    for query in ({"gallery": str(gallery_folder), "layer": asked},  # a deep link's bad number
                  {"gallery": str(gallery_folder), "model": asked}):  # a deep link's unknown model
        with pytest.raises(gr.Error) as raised:
            galleries.from_link(SimpleNamespace(query_params=query, headers={}))
        assert_inert_html(raised.value.message, asked)


# ------------------------------------------------------------------------------ the shared controls


def test_model_messages_show_a_visitors_model_id_as_text():
    from vit_feature_viz.app.common import load_failed, loading_message, pickers, user_errors

    asked = hostile("asked", URL)
    assert_inert_markdown(loading_message(asked).replace("**", ""), asked)
    assert_inert_markdown(load_failed(asked).replace("**", ""), asked)
    info = {"model_id": asked, "backend": hostile("backend", URL), "image_size": 32, "patch_size": 8,
            "layers": [{"features": 16}, {"features": 16}]}
    assert_inert_markdown(pickers(info, 0)[2].replace("**", ""), asked, hostile("backend", URL))
    with pytest.raises(gr.Error) as raised, user_errors("loading the model"):
        raise VizError(f"Cannot load {asked}: check the id.")
    assert_inert_html(raised.value.message, asked)


# ------------------------------------------------------------------------------------ the Analyses tab


def test_analysis_notes_and_saved_clip_names_are_text(gallery_folder):
    from vit_feature_viz.app.analysis_tab import Analyst, notes_markdown

    notes = [hostile("note1", URL), hostile("note2", URL)]
    assert_inert_markdown(notes_markdown(notes), *notes)
    names = Analyst(None, None).feature_names(hostile("model", URL), 1, 0, str(gallery_folder))
    assert_inert_markdown(names.replace("**", ""), hostile("concept1", URL), hostile("concept2", URL))


# ------------------------------------------------------------------------------------ the gallery card


def test_the_card_shows_rows_and_card_fields_as_text(gallery_folder):
    card = (gallery_folder / "README.md").read_text()
    body = card.split("\n---\n", 1)[1]  # the YAML front matter is data, not shown as Markdown
    expected = [hostile(what, URL) for what in ("card", "model", "objective", "recipe", "dataset", "backend",
                                                "license", "note")]
    assert_inert_markdown(body.replace("**", ""), *expected)
