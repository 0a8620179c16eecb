"""Train the built-in shapes CLIP: a small CLIP (ViT image tower + text transformer) that knows the procedural shapes.

The image tower (6 blocks, width 96, patch 8, 64 px) starts from the built-in shape-only ViT shapes-shape-vit-a
(see vision_from_vit); the text tower from scratch. Images are the shape-only variant of vit_feature_viz.data.shapes with each shape repainted in one of six named
colours (SHAPE_COLORS: hues 60 degrees apart, so a pixel statistic can tell them); captions name the shape, the
colour and sometimes the background ("a red disc on a blue background", "a photo of a green ring", "a cross",
"something yellow"), from several templates. The loss is CLIP's symmetric contrastive loss, with every caption that
fits an image counted as its positive (a batch holds many "a red disc"-like captions, which plain CLIP would
push apart). The tokenizer is a CLIP BPE (byte-level, `</w>` word ends) trained with the `tokenizers` library on
the captions' words, so every word of the vocabulary is one token; texts longer than the context (CONTEXT tokens,
which covers every template) are cut as CLIP's tokenizers cut them.

Saved as a transformers CLIPModel folder with its CLIPTokenizer and CLIPImageProcessor into
vit_feature_viz/data/models/shapes-clip/, with training.json (zero-shot shape and colour accuracy on held-out
images, steps, seconds). Seeded and CPU-only. CI never runs this; the weights are committed.

    nice -n 10 python scripts/train_shapes_clip.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from train_shape_fixtures import augment, patch_labels  # noqa: E402 - the shape ViTs' flips and turns and per-patch loss
from vit_feature_viz.data.shapes import SHAPE_CLASSES, generate_shapes
from vit_feature_viz.data.shape_captions import (BACKGROUND_COLORS, SHAPE_COLORS, caption_vocabulary, colour_prompt,
                                                 shape_prompt)

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "vit_feature_viz" / "data" / "models" / "shapes-clip"
IMAGE_SIZE, PATCH, VISION_WIDTH, VISION_DEPTH = 64, 8, 96, 6  # the image tower of shapes-shape-vit-a
INIT_FROM = ROOT / "vit_feature_viz" / "data" / "models" / "shapes-shape-vit-a"
TEXT_WIDTH, TEXT_DEPTH, HEADS, EMBED = 64, 3, 4, 64
CONTEXT = 16  # the longest template is 10 words + start and end tokens
VALIDATION_SEED, VALIDATION_COUNT = 999_979, 1200
SPECIALS = ("<|startoftext|>", "<|endoftext|>")

# (template, which attributes it names): the image-caption match uses only the named ones
TEMPLATES = (
    ("a {colour} {shape}", ("shape", "colour")),
    ("a {colour} {shape} on a {background} background", ("shape", "colour", "background")),
    ("a photo of a {colour} {shape}", ("shape", "colour")),
    ("a {shape} in {colour}", ("shape", "colour")),
    ("{colour} {shape}", ("shape", "colour")),
    ("a {shape}", ("shape",)),
    ("a photo of a {shape}", ("shape",)),
    ("a {shape} on a {background} background", ("shape", "background")),
    ("something {colour}", ("colour",)),
    ("a {colour} shape", ("colour",)),
)


def nearest(colour: np.ndarray, palette: dict[str, tuple[float, float, float]]) -> int:
    names = list(palette)
    distances = [np.linalg.norm(colour - np.array(palette[n])) for n in names]
    return int(np.argmin(distances))


def painted_batch(count: int, seed: int):
    """Shape-variant images with each shape repainted in a named colour that stands out from its background:
    (uint8 images, shape labels, colour labels, background labels, masks)."""
    shapes = generate_shapes(count, variant="shape", size=IMAGE_SIZE, seed=seed)
    rng = np.random.default_rng(seed + 7)
    palette = np.array(list(SHAPE_COLORS.values()), dtype=np.float32)
    images = shapes.images.astype(np.float32) / 255
    colours = np.empty(count, np.int64)
    backgrounds = np.empty(count, np.int64)
    for i in range(count):
        mask = shapes.masks[i]
        background = images[i][~mask].mean(0)
        backgrounds[i] = nearest(background, BACKGROUND_COLORS)
        order = rng.permutation(len(palette))
        colours[i] = next((int(c) for c in order if np.linalg.norm(palette[c] - background) >= 0.45), int(order[0]))
        shading = 1.0 + rng.uniform(-0.06, 0.06)
        colour = np.clip(palette[colours[i]] + rng.uniform(-0.05, 0.05, 3), 0, 1) * shading
        images[i][mask] = np.clip(colour + rng.standard_normal((int(mask.sum()), 3)) * 0.03, 0, 1)
    return (images * 255 + 0.5).astype(np.uint8), shapes.labels, colours, backgrounds, shapes.masks


def captions_for(shapes, colours, backgrounds, rng: np.random.Generator):
    """One caption per image from a random template, and the attributes it names (-1: not named)."""
    texts, named = [], np.full((len(shapes), 3), -1, np.int64)
    for i, (s, c, b) in enumerate(zip(shapes, colours, backgrounds)):
        template, attributes = TEMPLATES[rng.integers(len(TEMPLATES))]
        texts.append(template.format(shape=SHAPE_CLASSES[s], colour=list(SHAPE_COLORS)[c],
                                     background=list(BACKGROUND_COLORS)[b]))
        for k, (name, value) in enumerate((("shape", s), ("colour", c), ("background", b))):
            if name in attributes:
                named[i, k] = value
    return texts, named


def build_tokenizer():
    """A CLIP BPE trained on the caption words (each word becomes one token), as a transformers CLIPTokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=SPECIALS[1]))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=list(SPECIALS), end_of_word_suffix="</w>",
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    words = sorted(caption_vocabulary(TEMPLATES))
    bpe.train_from_iterator([" ".join(words)] * 10, trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab = dict(state["vocab"])
    for char in pre_tokenizers.ByteLevel.alphabet():  # any byte at a word's end, as CLIP's vocabulary has
        vocab.setdefault(char + "</w>", len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CONTEXT)
    for word in words:  # every caption word is a single token
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word
    return tokenizer


def build_model(tokenizer, seed: int):
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH,
                          num_hidden_layers=TEXT_DEPTH, num_attention_heads=HEADS, max_position_embeddings=CONTEXT,
                          projection_dim=EMBED, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH, hidden_size=VISION_WIDTH,
                              intermediate_size=4 * VISION_WIDTH, num_hidden_layers=VISION_DEPTH,
                              num_attention_heads=HEADS, projection_dim=EMBED, hidden_act="gelu",
                              layer_norm_eps=1e-12)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=EMBED)
    torch.manual_seed(seed)
    model = CLIPModel._from_config(config, attn_implementation="eager")
    vision_from_vit(model, INIT_FROM)
    return model


def vision_from_vit(model, folder: Path) -> None:
    """Start the image tower from the shape-only built-in ViT's weights (same width, depth, patch and size): the
    contrastive loss alone learns colours in a few steps but shapes only after thousands. The ViT's patch
    projection bias goes into the patch positions' embeddings (CLIP's projection has none: the sum is the
    same); CLIP's extra pre-norm starts as a plain LayerNorm."""
    from safetensors.torch import load_file

    vit = load_file(str(folder / "model.safetensors"))
    vision = model.vision_model
    with torch.no_grad():
        embeddings = vision.embeddings
        embeddings.patch_embedding.weight.copy_(vit["vit.embeddings.patch_embeddings.projection.weight"])
        embeddings.class_embedding.copy_(vit["vit.embeddings.cls_token"].flatten())
        positions = vit["vit.embeddings.position_embeddings"][0].clone()
        positions[1:] += vit["vit.embeddings.patch_embeddings.projection.bias"]
        embeddings.position_embedding.weight.copy_(positions)
        for index, layer in enumerate(vision.encoder.layers):
            prefix = f"vit.encoder.layer.{index}."
            pairs = {
                layer.self_attn.q_proj: "attention.attention.query", layer.self_attn.k_proj: "attention.attention.key",
                layer.self_attn.v_proj: "attention.attention.value", layer.self_attn.out_proj: "attention.output.dense",
                layer.mlp.fc1: "intermediate.dense", layer.mlp.fc2: "output.dense",
                layer.layer_norm1: "layernorm_before", layer.layer_norm2: "layernorm_after",
            }
            for module, name in pairs.items():
                module.weight.copy_(vit[prefix + name + ".weight"])
                module.bias.copy_(vit[prefix + name + ".bias"])
        vision.post_layernorm.weight.copy_(vit["vit.layernorm.weight"])
        vision.post_layernorm.bias.copy_(vit["vit.layernorm.bias"])


MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the built-in ViTs' (the image tower starts from one)


def to_pixels(images: np.ndarray) -> torch.Tensor:
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def embed_texts(model, tokenizer, texts) -> torch.Tensor:
    tokens = tokenizer(list(texts), padding=True, truncation=True, max_length=CONTEXT, return_tensors="pt")
    output = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    return torch.nn.functional.normalize(getattr(output, "pooler_output", output), dim=-1)


def embed_images(model, pixels) -> torch.Tensor:
    output = model.get_image_features(pixel_values=pixels)
    return torch.nn.functional.normalize(getattr(output, "pooler_output", output), dim=-1)


@torch.no_grad()
def zero_shot(model, tokenizer, images, shapes, colours) -> dict:
    """Accuracy of the best-matching prompt "a photo of a <shape>" and "something <colour>"."""
    model.eval()
    image_embeddings = torch.cat([embed_images(model, to_pixels(images[s:s + 200])) for s in range(0, len(images), 200)])
    shape_texts = embed_texts(model, tokenizer, [shape_prompt(s) for s in SHAPE_CLASSES])
    colour_texts = embed_texts(model, tokenizer, [colour_prompt(c) for c in SHAPE_COLORS])
    model.train()
    return {"shape": float(((image_embeddings @ shape_texts.T).argmax(1).numpy() == shapes).mean()),
            "colour": float(((image_embeddings @ colour_texts.T).argmax(1).numpy() == colours).mean())}


def train(steps: int, batch: int, seed: int, out_dir: Path, lr: float = 1e-3, patch_loss: float = 1.0) -> dict:
    """patch_loss: weight of an auxiliary per-patch shape loss on the image tower (a head used in training only,
    not saved), as the shape-only ViTs are trained: without it the tower learns colours at once but sits at chance
    on shapes for hundreds of steps, since it must find the figure before it can read its outline."""
    from transformers import CLIPImageProcessor

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed)
    validation = painted_batch(VALIDATION_COUNT, VALIDATION_SEED)
    patch_head = torch.nn.Linear(VISION_WIDTH, len(SHAPE_CLASSES) + 1)  # training only: not saved
    trained = [*model.parameters(), *patch_head.parameters()]
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.05)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
        (step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * step / steps))))
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    wall, cpu = time.time(), time.process_time()
    history = []
    model.train()
    for step in range(steps):
        images, shapes, colours, backgrounds, masks = painted_batch(batch, seed * 1_000_003 + step)
        texts, named = captions_for(shapes, colours, backgrounds, rng)
        truth = np.stack([shapes, colours, backgrounds], 1)
        fits = torch.from_numpy(((named[None] == truth[:, None]) | (named[None] < 0)).all(-1)).float()  # [img, text]
        pixels, masks = augment(to_pixels(images), torch.from_numpy(masks), generator)
        vision = model.vision_model(pixel_values=pixels)
        image_embeddings = torch.nn.functional.normalize(model.visual_projection(vision.pooler_output), dim=-1)
        text_embeddings = embed_texts(model, tokenizer, texts)
        logits = model.logit_scale.exp().clamp(max=100) * image_embeddings @ text_embeddings.T
        loss = 0.5 * (torch.sum(-fits / fits.sum(1, keepdim=True) * logits.log_softmax(1), 1).mean()
                      + torch.sum(-fits / fits.sum(0, keepdim=True) * logits.log_softmax(0), 0).mean())
        if patch_loss:  # dense supervision from the masks: every patch says which shape it is part of
            patch_logits = patch_head(vision.last_hidden_state[:, 1:])
            loss = loss + patch_loss * torch.nn.functional.cross_entropy(
                patch_logits.flatten(0, 1), patch_labels(masks, torch.from_numpy(shapes)).flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        schedule.step()
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            accuracy = zero_shot(model, tokenizer, validation[0], validation[1], validation[2])
            history.append({"step": step + 1, "loss": round(loss.item(), 4), **accuracy,
                            "seconds": round(time.time() - wall, 1)})
            print(f"step {step + 1}/{steps} loss {loss.item():.3f} shape {accuracy['shape']:.3f} "
                  f"colour {accuracy['colour']:.3f} ({time.time() - wall:.0f} s)", flush=True)
    report = {
        "zero_shot_shape": history[-1]["shape"], "zero_shot_colour": history[-1]["colour"],
        "val_images": VALIDATION_COUNT, "val_seed": VALIDATION_SEED,
        "train_images": steps * batch, "train_seconds": round(time.time() - wall, 1),
        "train_cpu_seconds": round(time.process_time() - cpu, 1), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps, "batch": batch, "seed": seed, "lr": lr, "patch_loss": patch_loss, "history": history,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                       image_mean=list(MEAN), image_std=list(STD)).save_pretrained(out_dir)
    (out_dir / "training.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="the model folder")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = train(args.steps, args.batch, args.seed, args.out)
    size_mb = (args.out / "model.safetensors").stat().st_size / 1e6
    print(f"shapes-clip: zero-shot shape {report['zero_shot_shape']:.3f}, colour {report['zero_shot_colour']:.3f} "
          f"on {report['val_images']} held-out images, {report['train_seconds']:.0f} s wall "
          f"({report['train_cpu_seconds']:.0f} s CPU), {size_mb:.1f} MB")


if __name__ == "__main__":
    main()
