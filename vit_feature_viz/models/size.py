"""A cap on checkpoint size, checked before any weights are downloaded or memory allocated.

A public app must not let a 4 KB repo whose config declares a ViT-L make it allocate gigabytes. The estimates come
from what the config declares and from the safetensors headers (a few KB at the start of each weight file); the
largest one counts. One mechanism for the library, the CLI and the app.
"""

from __future__ import annotations

import json
import math
import struct

from ..errors import VizError
from .backends import BACKENDS
from .hub_files import CheckpointFiles

WIDTH_KEYS = ("hidden_size", "width", "embed_dim", "d_model")
DEPTH_KEYS = ("num_hidden_layers", "layers", "depth", "num_layers")
SMALLEST_WIDTH = 192  # a depth declared without a width counts at ViT-Ti's width, never as free
OPEN_CLIP_DEFAULTS = {"vision_cfg": {"width": 768, "layers": 12}, "text_cfg": {"width": 512, "layers": 12}}
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit


def check_files_size(files: CheckpointFiles, backend: str, config: dict, max_parameters: int) -> int:
    """The cheap estimates first, so an absurd config is refused before anything else is fetched."""
    largest = 0
    for source, count in _estimates(files, backend, config):
        if count > max_parameters:
            raise VizError(
                f"'{files.name}' has about {_millions(count)} parameters ({source}), more than the "
                f"{_millions(max_parameters)} allowed here: pick a smaller checkpoint."
            )
        largest = max(largest, count)
    return largest


def _estimates(files: CheckpointFiles, backend: str, config: dict):
    yield "as its config declares", declared_parameters(_with_defaults(files, backend, config))
    if backend == "timm":
        yield "its timm architecture", _timm_parameters(config)
    yield "in its weight files", _weight_parameters(files, backend)


def declared_parameters(config) -> int:
    """About 12·width² per transformer block (attention 4·w², a 4x MLP 8·w²), summed over every tower the config
    declares, nested vision/text configs included."""
    if isinstance(config, list):
        return sum(declared_parameters(item) for item in config)
    if not isinstance(config, dict):
        return 0
    total = sum(declared_parameters(value) for value in config.values())
    depth = _first_int(config, DEPTH_KEYS)
    if depth:
        width = _first_int(config, WIDTH_KEYS) or SMALLEST_WIDTH
        ratio = config.get("mlp_ratio")
        mlp = _first_int(config, ("intermediate_size", "mlp_dim")) or (
            int(ratio * width) if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and ratio > 0 else 4 * width)
        total += depth * (4 * width * width + 2 * width * mlp)
    return total


def _first_int(config: dict, keys) -> int:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def _with_defaults(files: CheckpointFiles, backend: str, config: dict):
    """What the library will build: a config that leaves sizes out gets the library's defaults."""
    if backend == "open_clip":
        model = config.get("model_cfg") if isinstance(config.get("model_cfg"), dict) else {}
        return {key: {**default, **(model.get(key) if isinstance(model.get(key), dict) else {})}
                for key, default in OPEN_CLIP_DEFAULTS.items()}
    if backend == "transformers":
        try:
            import transformers

            return transformers.AutoConfig.from_pretrained(files.name, revision=files.revision,
                                                           token=files.token).to_dict()
        except Exception:  # remote code or a broken config: the loader reports it; count what is written
            return config
    return config


def _timm_parameters(config: dict) -> int:
    """timm configs often name only an architecture: build it on the meta device, which allocates nothing."""
    import timm
    import torch

    args = config.get("model_args") if isinstance(config.get("model_args"), dict) else {}
    try:
        with torch.device("meta"):
            model = timm.create_model(str(config.get("architecture")), pretrained=False, **args)
    except Exception:  # an unknown architecture or bad arguments: the loader reports it
        return 0
    return sum(p.numel() for p in model.parameters())


def _weight_parameters(files: CheckpointFiles, backend: str) -> int:
    """Parameters stored in the first safetensors weights found (sharded ones through their index); pickle files
    have no header to read, so for them the config's declaration stands alone."""
    for name in BACKENDS.get(backend).safe_weights:
        if not files.has(name):
            continue
        if name.endswith(".index.json"):
            index = files.json(name) or {}
            shards = sorted(set((index.get("weight_map") or {}).values()))
            return sum(_safetensors_parameters(files, shard) for shard in shards)
        return _safetensors_parameters(files, name)
    return 0


def _safetensors_parameters(files: CheckpointFiles, filename: str) -> int:
    """From the file's JSON header: a local read, or a ranged request of the first bytes on the Hub."""
    local = files.on_disk(filename)
    if local is not None:
        return _header_parameters(local)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, SafetensorsParsingError

    try:
        metadata = HfApi(token=files.token).parse_safetensors_file_metadata(files.name, filename,
                                                                            revision=files.revision)
    except SafetensorsParsingError:
        raise VizError(f"'{files.name}' has a broken {filename} (its header does not parse): check the repo.") from None
    except (HfHubHTTPError, OSError):  # fail closed: an unread size is not a small one
        raise VizError(f"Cannot read the size of '{files.name}' from the Hub: check the network and retry.") from None
    return sum(metadata.parameter_count.values())


def _header_parameters(path: str) -> int:
    """The safetensors layout: an 8-byte little-endian header length, then a JSON header of tensor shapes."""
    with open(path, "rb") as f:
        head = f.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < size <= MAX_HEADER_BYTES:
            raise VizError(f"{path} is not a safetensors file (bad header length): check the checkpoint.")
        try:
            header = json.loads(f.read(size))
        except ValueError:
            raise VizError(f"{path} is not a safetensors file (its header is not JSON): check the checkpoint.") from None
    return sum(math.prod(int(n) for n in entry.get("shape", [])) for key, entry in header.items()
               if key != "__metadata__" and isinstance(entry, dict))


def _millions(count: int) -> str:
    return f"{count / 1e6:,.0f}M" if count >= 1e6 else f"{count:,}"
