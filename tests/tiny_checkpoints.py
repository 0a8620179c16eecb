"""Tiny random-weight checkpoints in a real Hugging Face Hub cache.

Tests load models by repo name exactly like users do, but offline: each builder
saves a tiny model with its library's own save function, then ``place_in_cache``
lays the files out as ``huggingface_hub`` would after a download. With
``HF_HUB_CACHE=<cache_dir>`` and ``HF_HUB_OFFLINE=1`` the normal loaders find them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch

SEED = 0
# Shared tiny ViT shape: 32 px images, 8 px patches (4x4 grid), width 32, 4 blocks, MLP 4x, 2 heads.
IMG, PATCH, WIDTH, DEPTH, HEADS, MLP = 32, 8, 32, 4, 2, 128
NUM_LABELS = 10
VIT = dict(image_size=IMG, patch_size=PATCH, hidden_size=WIDTH, num_hidden_layers=DEPTH,
           num_attention_heads=HEADS, intermediate_size=MLP)
LABELS = dict(num_labels=NUM_LABELS, id2label={i: f"class_{i}" for i in range(NUM_LABELS)},
              label2id={f"class_{i}": i for i in range(NUM_LABELS)})


def place_in_cache(src: Path, cache_dir: Path, repo_id: str) -> str:
    """Copy the files of ``src`` into the Hub cache layout of ``repo_id``; return the commit hash.

    Blobs are named by sha256, the snapshot holds relative symlinks (copies where symlinks
    are unsupported) and ``refs/main`` names the commit, without a trailing newline because
    huggingface_hub reads it verbatim.
    """
    repo_dir = cache_dir / f"models--{repo_id.replace('/', '--')}"
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    digests = {rel: hashlib.sha256((src / rel).read_bytes()).hexdigest() for rel in files}
    commit = hashlib.sha1(repr(sorted(digests.items())).encode()).hexdigest()
    for rel, digest in digests.items():
        blob = repo_dir / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, blob)
        link = repo_dir / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:
            shutil.copyfile(blob, link)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return commit


# --- builders: each writes one repo's files into ``out`` ---------------------------------


def build_vit(out: Path) -> None:
    """ViT classifier with labels and an image processor: the common "google/vit-*" shape."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    ViTForImageClassification(ViTConfig(**VIT, **LABELS)).save_pretrained(out)
    ViTImageProcessor(size={"height": IMG, "width": IMG}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(out)


def build_vit_model(out: Path) -> None:
    """Bare ViTModel (with pooler), like checkpoints published without a head."""
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(**VIT)).save_pretrained(out)


def build_deit(out: Path) -> None:
    """Distilled DeiT: two prefix tokens (CLS + distillation)."""
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    DeiTForImageClassificationWithTeacher(DeiTConfig(**VIT, **LABELS)).save_pretrained(out)


def build_clip(out: Path) -> None:
    """Full CLIP (text + vision) with an OpenAI-style image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    text = dict(hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=HEADS,
                intermediate_size=MLP, max_position_embeddings=77)
    CLIPModel(CLIPConfig(text_config=text, vision_config=VIT, projection_dim=16)).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": IMG}, crop_size={"height": IMG, "width": IMG},
                       image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD)).save_pretrained(out)


def build_clip_vision(out: Path) -> None:
    """CLIP vision tower alone, as some repos publish it."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    CLIPVisionModel(CLIPVisionConfig(**VIT)).save_pretrained(out)


def build_siglip(out: Path) -> None:
    """SigLIP vision tower: no CLS token, attention-pool head; its processor resizes to the config's size."""
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    SiglipVisionModel(SiglipVisionConfig(**VIT)).save_pretrained(out)
    SiglipImageProcessor(size={"height": IMG, "width": IMG}).save_pretrained(out)


DINOV2_CONFIG_SIZE = 2 * IMG  # like DINOv2's 518 in the config against the 224 its processor crops


def build_dinov2(out: Path) -> None:
    """DINOv2 backbone (CLS token, MLP given as a ratio) laid out like the real ones: the config declares a larger
    image size than its processor's crop (resize the shorter side a little above the crop, then centre crop)."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    cfg = {k: v for k, v in VIT.items() if k not in ("intermediate_size", "image_size")}
    Dinov2Model(Dinov2Config(**cfg, image_size=DINOV2_CONFIG_SIZE, mlp_ratio=MLP // WIDTH)).save_pretrained(out)
    BitImageProcessor(size={"shortest_edge": IMG + IMG // 8}, crop_size={"height": IMG, "width": IMG},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(out)


def _timm_vit():
    import timm

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=IMG, patch_size=PATCH,
                             embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, num_classes=NUM_LABELS)


def build_timm_vit(out: Path) -> None:
    """timm ViT saved by save_for_hf: config.json (architecture, model_args) + model.safetensors."""
    from timm.models import save_for_hf

    save_for_hf(_timm_vit(), out, safe_serialization=True)


def build_timm_pickle(out: Path) -> None:
    """Same timm ViT, but only pytorch_model.bin: pickle weights must be opt-in."""
    from timm.models import save_for_hf

    save_for_hf(_timm_vit(), out, safe_serialization=False)


def build_open_clip(out: Path, context_length: int = 77) -> None:
    """open_clip ViT CLIP: open_clip_config.json (model_cfg + preprocess_cfg) + open_clip_model.safetensors.

    open_clip's save_for_hf also saves a tokenizer fetched from the Hub, so the config and
    weights are written with the same helpers it uses, minus the tokenizer.
    """
    import safetensors.torch
    from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.model import CLIP, set_model_preprocess_cfg
    from open_clip.push_to_hf_hub import save_config_for_hf

    model_cfg = dict(
        embed_dim=16,
        vision_cfg=dict(image_size=IMG, patch_size=PATCH, width=WIDTH, layers=DEPTH, head_width=WIDTH // HEADS),
        text_cfg=dict(context_length=context_length, vocab_size=49408, width=WIDTH, heads=HEADS, layers=2),
    )
    model = CLIP(**model_cfg)
    set_model_preprocess_cfg(model, dict(size=IMG, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD,
                                         interpolation="bicubic", resize_mode="shortest"))
    safetensors.torch.save_file(model.state_dict(), out / HF_SAFE_WEIGHTS_NAME)
    save_config_for_hf(model, out / HF_CONFIG_NAME, model_config=model_cfg)


def build_resnet(out: Path) -> None:
    """A non-ViT model, for "unsupported architecture" errors."""
    from transformers import ResNetConfig, ResNetModel

    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                             layer_type="basic")).save_pretrained(out)


def build_vit_pickle(out: Path) -> None:
    """ViTModel whose only weights are pytorch_model.bin.

    transformers 5 save_pretrained always writes safetensors, so the pickle is written by hand.
    """
    from transformers import ViTConfig, ViTModel
    from transformers.utils import WEIGHTS_NAME

    model = ViTModel(ViTConfig(**VIT))
    model.config.save_pretrained(out)
    torch.save(model.state_dict(), out / WEIGHTS_NAME)


REPOS = {  # role -> (repo id, builder)
    "vit": ("tiny-org/vit-classifier", build_vit),
    "vit_model": ("tiny-org/vit-model", build_vit_model),
    "deit": ("tiny-org/deit", build_deit),
    "clip": ("tiny-org/clip", build_clip),
    "clip_vision": ("tiny-org/clip-vision", build_clip_vision),
    "siglip": ("tiny-org/siglip", build_siglip),
    "dinov2": ("tiny-org/dinov2", build_dinov2),
    "timm_vit": ("timm/vit_tiny_test.random", build_timm_vit),
    "open_clip": ("tiny-org/open-clip-vit", build_open_clip),
    "resnet": ("tiny-org/resnet", build_resnet),
    "vit_pickle": ("tiny-org/vit-pickle", build_vit_pickle),
    "timm_pickle": ("timm/vit_tiny_pickle.random", build_timm_pickle),
}


def build_hub_cache(cache_dir: Path, repos: dict | None = None) -> dict[str, str]:
    """Build every tiny repo (of ``repos``, default REPOS) into ``cache_dir`` (a Hub cache); return role -> repo id."""
    repos = REPOS if repos is None else repos
    from transformers.utils import logging as hf_logging

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one "Writing model shards" bar per repo is just noise
    try:
        with tempfile.TemporaryDirectory(prefix="vfv-tiny-") as tmp:
            for role, (repo_id, build) in repos.items():
                out = Path(tmp) / role
                out.mkdir()
                torch.manual_seed(SEED)  # per repo, so each checkpoint is independent of build order
                build(out)
                place_in_cache(out, cache_dir, repo_id)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return {role: repo_id for role, (repo_id, _) in repos.items()}


# --- checkpoints that must be refused (built only by tests/test_bad_input.py, not for every session) ----------


def build_timm_resnet(out: Path) -> None:
    """A timm CNN: timm refuses dynamic_img_size for it, which must read as 'not a ViT', not a TypeError."""
    import timm
    from timm.models import save_for_hf

    save_for_hf(timm.create_model("test_resnet", pretrained=False, num_classes=NUM_LABELS), out, safe_serialization=True)


def build_convnext(out: Path) -> None:
    """A transformers ConvNeXt: its stages hold an MLP-like pair of linears but no attention."""
    from transformers import ConvNextConfig, ConvNextForImageClassification

    ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, **LABELS)).save_pretrained(out)


def build_needs_remote_code(out: Path) -> None:
    """A repo whose config names its own model code (auto_map) and a model type transformers does not know."""
    import json

    build_vit_model(out)
    config = json.loads((out / "config.json").read_text())
    config.update(model_type="tiny-custom-vit", auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                                                          "AutoModel": "modeling_custom.CustomModel"})
    (out / "config.json").write_text(json.dumps(config))


def build_malformed_config(out: Path) -> None:
    """A config.json cut off mid-file."""
    build_vit_model(out)
    (out / "config.json").write_text('{"model_type": "vit", "hidden_size": 32,')


def _weights_of(build) -> bytes:
    """The model.safetensors a builder writes: the weights of another model, for the mismatched repos below."""
    with tempfile.TemporaryDirectory(prefix="vfv-tiny-weights-") as tmp:
        build(Path(tmp))
        return (Path(tmp) / "model.safetensors").read_bytes()


def build_open_clip_wrong_weights(out: Path) -> None:
    """An open_clip repo whose model.safetensors holds a transformers ViT's weights (none of CLIP's keys)."""
    build_open_clip(out)
    (out / "open_clip_model.safetensors").unlink()
    (out / "model.safetensors").write_bytes(_weights_of(build_vit_model))


def build_timm_wrong_weights(out: Path) -> None:
    """A timm ViT config with a transformers ViT's weights."""
    build_timm_vit(out)
    (out / "model.safetensors").write_bytes(_weights_of(build_vit_model))


def build_transformers_wrong_weights(out: Path) -> None:
    """A transformers ViT config with a timm ViT's weights: transformers would load it with random weights."""
    build_vit_model(out)
    (out / "model.safetensors").write_bytes(_weights_of(build_timm_vit))


def build_transformers_wrong_shapes(out: Path) -> None:
    """A transformers ViT config twice as wide as its weights."""
    import json

    build_vit_model(out)
    config = json.loads((out / "config.json").read_text())
    config.update(hidden_size=2 * WIDTH)
    (out / "config.json").write_text(json.dumps(config))


REFUSED_REPOS = {  # role -> (repo id, builder)
    "timm_resnet": ("timm/test_resnet.random", build_timm_resnet),
    "convnext": ("tiny-org/convnext", build_convnext),
    "remote_code": ("tiny-org/needs-remote-code", build_needs_remote_code),
    "bad_config": ("tiny-org/bad-config", build_malformed_config),
    "open_clip_wrong_weights": ("tiny-org/open-clip-wrong-weights", build_open_clip_wrong_weights),
    "timm_wrong_weights": ("timm/vit_tiny_wrong_weights.random", build_timm_wrong_weights),
    "vit_wrong_weights": ("tiny-org/vit-wrong-weights", build_transformers_wrong_weights),
    "vit_wrong_shapes": ("tiny-org/vit-wrong-shapes", build_transformers_wrong_shapes),
}


# --- CLIPs whose text tower reads few tokens (built only by the tests of naming features with long concepts) -----
SHORT_CONTEXT = 8  # tokens, start and end tokens included
SHORT_CONTEXT_WORDS = ("red", "green", "blue", "small", "large", "round", "square", "striped", "dog", "cat", "car",
                       "tree")


def build_clip_short_context(out: Path) -> None:
    """transformers CLIP with SHORT_CONTEXT text positions and a word-level tokenizer that does not state that
    limit (no model_max_length), as repos that ship their own tokenizer may."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(SHORT_CONTEXT_WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                             special_tokens=[("<bos>", 1), ("<eos>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(out)
    text = dict(hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=MLP,
                max_position_embeddings=SHORT_CONTEXT, vocab_size=len(vocab), bos_token_id=1, eos_token_id=2,
                pad_token_id=0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=VIT, projection_dim=16)).save_pretrained(out)


def build_open_clip_short_context(out: Path) -> None:
    """open_clip CLIP whose text tower reads SHORT_CONTEXT tokens (its config's context_length)."""
    build_open_clip(out, context_length=SHORT_CONTEXT)


SHORT_CONTEXT_REPOS = {  # role -> (repo id, builder)
    "clip_short": ("tiny-org/clip-short-context", build_clip_short_context),
    "open_clip_short": ("tiny-org/open-clip-short-context", build_open_clip_short_context),
}
