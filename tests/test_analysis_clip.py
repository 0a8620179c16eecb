"""Naming CLIP features: a CLIP whose text tower is built so that one word matches a feature names it first, on
transformers CLIP (with a tokenizer saved in its repo) and open_clip (its bundled tokenizer)."""

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from tiny_checkpoints import HEADS, IMG, MLP, PATCH, SHORT_CONTEXT_WORDS, VIT, WIDTH, place_in_cache
from vit_feature_viz.analysis import clip_names, feature_names
from vit_feature_viz.analysis.clip_names import has_feature_names, load_vocabulary
from vit_feature_viz.core.objectives import make_objective
from vit_feature_viz.errors import VizError
from vit_feature_viz.models import load_model
from vit_feature_viz.models.text import ClipText, clip_image_embeddings

WORDS = ["zebra", "teapot", "volcano", "violin", "cactus", "lighthouse", "pretzel", "glacier", "saxophone", "anchor",
         "tulip", "helmet"]
LAYER, FEATURE, TOP = 2, 5, 4
RUN = dict(device="cpu", precision="fp32", progress=False)


def _build_clip_with_tokenizer(out):
    """A tiny CLIPModel plus a word-level tokenizer that knows WORDS (what a Hub CLIP repo ships)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", special_tokens=[("<bos>", 1), ("<eos>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(out)
    text = dict(hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=MLP,
                max_position_embeddings=16, vocab_size=len(vocab), bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=VIT, projection_dim=16)).save_pretrained(out)


@pytest.fixture(scope="module")
def named_clip(hub_cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip-named")
    _build_clip_with_tokenizer(out)
    place_in_cache(out, hub_cache_dir, "tiny-org/clip-with-tokenizer")
    return "tiny-org/clip-with-tokenizer"


def _images(count=24, seed=0):
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8)) for _ in range(count)]
    return datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))


def _make_word_match_feature(model, dataset, word, prompt):
    """Rebuild the text projection so `word`'s embedding is the direction separating the feature's top images from
    all images, and every other word keeps its random embedding (a rank-one change orthogonal to the others)."""
    pixels = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in dataset["image"]]).float() / 255
    objective = make_objective("feature", LAYER)
    with torch.no_grad():
        values = objective.values(model.activations(pixels, objective.needs))[:, FEATURE]
    embeddings = clip_image_embeddings(model, pixels)
    direction = embeddings[values.topk(TOP).indices].mean(0) - embeddings.mean(0)
    tokenizer = ClipText(model)._tokenizer
    tokens = tokenizer([prompt.format(w) for w in WORDS], padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = model.module.text_model(**tokens).pooler_output  # [V, C] before the projection
        target = WORDS.index(word)
        u = torch.linalg.pinv(pooled) @ torch.nn.functional.one_hot(torch.tensor(target), len(WORDS)).float()
        weight = model.module.text_projection.weight  # [D, C]
        weight += torch.outer(direction - weight @ pooled[target], u)


def test_a_word_built_to_match_a_feature_is_named_first(named_clip, tmp_path):
    model = load_model(named_clip, device="cpu", precision="fp32")
    dataset = _images()
    _make_word_match_feature(model, dataset, "lighthouse", "{}")
    result = clip_names(model, dataset, layer=LAYER, features=[FEATURE, FEATURE + 1], vocabulary=WORDS, prompt="{}",
                        top_images=TOP, top_names=3, **RUN)
    first = [r for r in result.rows if r["feature"] == FEATURE]
    assert [r["rank"] for r in first] == [1, 2, 3] and first[0]["name"] == "lighthouse"
    assert first[0]["score"] > first[1]["score"]
    result.save(tmp_path)
    assert feature_names(tmp_path, named_clip, LAYER, FEATURE)[0] == "lighthouse"
    assert feature_names(tmp_path, named_clip, LAYER, 99) == []
    assert has_feature_names(tmp_path, named_clip)
    assert not has_feature_names(tmp_path, "another/model")
    from vit_feature_viz.app.analysis_tab import Analyst

    hint = Analyst(None, None).feature_names(named_clip, LAYER, 99, str(tmp_path))  # named model, unnamed feature
    assert hint.startswith(f"No CLIP names yet for layer {LAYER}, feature 99")


def test_an_sae_latent_is_named_like_the_channel_it_reads(named_clip, tmp_path):
    """An SAE whose latent 3 reads exactly channel FEATURE (its encoder row the channel's unit vector, no bias, no
    scaling) ranks the images as the channel does, so it gets the channel's name, saved under its own objective."""
    from vit_feature_viz.core.requested import requested_objective
    from vit_feature_viz.sae.model import SparseAutoencoder
    from vit_feature_viz.sae.saved import save_sae

    model = load_model(named_clip, device="cpu", precision="fp32")
    dataset = _images()
    _make_word_match_feature(model, dataset, "lighthouse", "{}")
    sae = SparseAutoencoder(MLP, 8, 2, seed=0)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[FEATURE, 3] = 1.0
    save_sae(sae, tmp_path, {"model_id": named_clip, "layer": LAYER, "site": "fc1"})
    latent = requested_objective("sae", LAYER, sae=str(tmp_path))
    result = clip_names(model, dataset, layer=LAYER, features=[3], vocabulary=WORDS, prompt="{}", top_images=TOP,
                        top_names=3, objective=latent, **RUN)
    assert result.rows[0]["name"] == "lighthouse" and {r["objective"] for r in result.rows} == {latent.name}
    result.save(tmp_path)
    assert feature_names(tmp_path, named_clip, LAYER, 3, objective=latent.name)[0] == "lighthouse"
    assert feature_names(tmp_path, named_clip, LAYER, 3) == []  # channel 3 was not named


def test_open_clip_names_features_with_its_own_tokenizer_and_the_shipped_vocabulary(tiny_repos):
    result = clip_names(tiny_repos["open_clip"], _images(8), layer=1, features="0-1", top_images=3, top_names=4,
                        max_images=6, **RUN)
    assert result.settings["images"] == 6 and result.settings["vocabulary"].startswith("concepts.txt (")
    assert [len([r for r in result.rows if r["feature"] == f]) for f in (0, 1)] == [4, 4]


def test_a_stopped_naming_run_resumes_from_its_saved_batches(named_clip, tmp_path, monkeypatch):
    """Stopped in its third batch, a run with a checkpoint keeps two; the rerun computes only the last one."""
    import importlib

    from vit_feature_viz.store.progress import Resumed

    module = importlib.import_module("vit_feature_viz.analysis.clip_names")
    model = load_model(named_clip, device="cpu", precision="fp32")
    _images(12).save_to_disk(str(tmp_path / "images"))
    options = dict(layer=LAYER, features=[FEATURE, FEATURE + 1], vocabulary=WORDS, top_images=TOP, top_names=3,
                   batch_size=4, **RUN)
    whole = clip_names(model, str(tmp_path / "images"), **options)
    batches = []

    def embed(model, images):
        batches.append(len(images))
        if stop_at is not None and len(batches) == stop_at:
            raise KeyboardInterrupt
        return clip_image_embeddings(model, images)

    monkeypatch.setattr(module, "clip_image_embeddings", embed)
    stop_at = 3
    with pytest.raises(KeyboardInterrupt):
        clip_names(model, str(tmp_path / "images"), checkpoint=tmp_path / "progress", **options)
    batches.clear()
    stop_at = None
    with pytest.warns(Resumed, match=r"the 8 image\(s\) it had scanned are skipped"):
        resumed = clip_names(model, str(tmp_path / "images"), checkpoint=tmp_path / "progress", **options)
    assert batches == [4]
    assert resumed.rows == whole.rows and resumed.settings == whole.settings


def test_default_vocabulary_is_a_few_thousand_concepts_with_its_licence_stated():
    words, source = load_vocabulary()
    assert 2000 <= len(words) <= 10000 and len(set(words)) == len(words) and "dog" in words
    from importlib import resources

    header = resources.files("vit_feature_viz.data").joinpath("concepts.txt").read_text()[:1200]
    assert "CC0" in header and "Source:" in header


def test_naming_needs_a_text_tower_and_a_layer(tiny_repos):
    with pytest.raises(VizError, match="no text tower"):
        clip_names(tiny_repos["clip_vision"], _images(4), layer=0, features="0", **RUN)
    with pytest.raises(VizError, match="--layer"):
        clip_names(tiny_repos["clip"], _images(4), features="0", **RUN)


def test_concepts_longer_than_the_text_context_are_cut_to_it_on_every_backend(short_context_clips, tiny_repos):
    """Both CLIPs read 8 tokens; their tokenizers know 12-word concepts. A concept is cut to the tower's context,
    start and end tokens kept, as CLIP tokenizers do: it embeds like its first 6 words. timm has no text tower."""
    long, first_six = " ".join(SHORT_CONTEXT_WORDS), " ".join(SHORT_CONTEXT_WORDS[:6])
    for role in ("clip_short", "open_clip_short"):
        model = load_model(short_context_clips[role], device="cpu", precision="fp32")
        embedded = ClipText(model).encode([long, first_six, "dog"])
        torch.testing.assert_close(embedded[0], embedded[1])
        assert not torch.allclose(embedded[0], embedded[2], atol=1e-3)
        result = clip_names(model, _images(6), layer=1, features="0", vocabulary=[long, "dog", "cat"], top_images=2,
                            top_names=3, **RUN)
        assert sorted(r["name"] for r in result.rows) == sorted([long, "dog", "cat"])
    with pytest.raises(VizError, match="no text tower"):
        ClipText(load_model(tiny_repos["timm_vit"], device="cpu"))


def test_the_analyses_tab_names_a_latent_of_the_sae_in_its_box(named_clip, tmp_path, monkeypatch):
    """The Analyses tab's SAE variant of naming (as `analyze clip-names --sae`): the latent of the SAE box's SAE is
    named, saved under its objective in the session gallery, and shown as that latent's names. (The tab names with
    the shipped vocabulary; this test's dozen words keep it quick.)"""
    import importlib

    naming = importlib.import_module("vit_feature_viz.analysis.clip_names")
    monkeypatch.setattr(naming, "load_vocabulary", lambda vocabulary: (WORDS, "test words"))
    from spaces_config.presets import get_preset
    from vit_feature_viz.app.analysis_tab import SAE_NAMES_LABEL, Analyst
    from vit_feature_viz.app.common import ModelCache
    from vit_feature_viz.sae.model import SparseAutoencoder
    from vit_feature_viz.sae.saved import save_sae

    sae = SparseAutoencoder(MLP, 8, 2, seed=0)
    saved = save_sae(sae, tmp_path / "sae-gallery", {"model_id": named_clip, "layer": LAYER, "site": "fc1"})
    _images(12).save_to_disk(str(tmp_path / "images"))
    session = tmp_path / "session"
    session.mkdir()
    analyst = Analyst(get_preset("cpu-basic"), ModelCache())
    _, table, _, folder = analyst.analyze(named_clip, SAE_NAMES_LABEL, str(tmp_path / "images"), "", 12, LAYER, 3,
                                          sae=str(tmp_path / "sae-gallery"), session=str(session),
                                          progress=lambda *a, **k: None)
    objective = f"sae(fc1 {saved.short_hash})"
    column = table["headers"].index("objective")
    assert folder == str(session) and {row[column] for row in table["data"]} == {objective}
    shown = analyst.feature_names(named_clip, LAYER, 3, str(session), SAE_NAMES_LABEL, str(tmp_path / "sae-gallery"))
    assert shown.startswith(f"**CLIP names of layer {LAYER}, latent 3 of {objective}:**")
    assert analyst.feature_names(named_clip, LAYER, 3, session=str(session)) == (  # the channel was not named
        f"No CLIP names yet for layer {LAYER}, feature 3: run *Name CLIP features* for it.")
