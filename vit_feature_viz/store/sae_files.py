"""Sparse autoencoders kept in a gallery: `sae/<layer>-<site>/` holds `sae.safetensors` (the weights) and
`config.json` (model id and revision, layer, site, normalization, K, measurements), pushed and pulled with it.

The weights are written first and the config, which names the weights' sha256, last, each atomically: a kill
leaves either the previous SAE or the new one, and a config whose weights do not match is refused on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from ..errors import VizError
from .shards import write_atomically

SAE_DIR = "sae"
WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "config.json"
SAE_SUFFIXES = (".safetensors", ".json")
MAX_CONFIG_BYTES = 1_000_000  # a config is a few kB: a bigger one is not read
MAX_HEADER_BYTES = 100_000  # a safetensors header naming a handful of tensors
SITES = ("fc1", "residual")
FOLDER_NAME = re.compile(r"^(\d+)-(" + "|".join(SITES) + r")$")


def sae_name(layer: int, site: str) -> str:
    return f"{int(layer)}-{site}"


def sae_folder(gallery: str | os.PathLike, layer: int, site: str) -> Path:
    return Path(gallery) / SAE_DIR / sae_name(layer, site)


def write_sae_files(folder: str | os.PathLike, arrays: dict[str, np.ndarray], config: dict) -> Path:
    """Save one SAE: weights, then the config naming their sha256."""
    from safetensors.numpy import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = save({name: np.ascontiguousarray(value, dtype=np.float32) for name, value in arrays.items()})
    write_atomically(folder / WEIGHTS_FILE, weights)
    config = {**config, "weights_sha256": hashlib.sha256(weights).hexdigest()}
    write_atomically(folder / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True).encode())
    return folder


def weights_bytes_cap(max_parameters: int) -> int:
    """The most bytes an SAE's weights file of `max_parameters` float32 numbers may take (with its header)."""
    return 4 * int(max_parameters) + MAX_HEADER_BYTES + 8


def too_big(source: str, what: str, max_parameters: int) -> VizError:
    return VizError(f"The sparse autoencoder in {source} is too big here ({what}; at most "
                    f"{int(max_parameters):,} parameters)", option="sae",
                    fix="{option:pass} a smaller one (fewer latents), or use the command line on your own machine.")


def header_parameters(path: Path) -> int:
    """The number of values a safetensors file declares, from its header alone (its first bytes)."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if not 0 < length <= MAX_HEADER_BYTES:
            raise ValueError("safetensors header of an unexpected size")
        header = json.loads(f.read(length))
    count = 0
    for name, entry in header.items():
        if name != "__metadata__":
            count += int(np.prod([int(n) for n in entry["shape"]], dtype=np.int64))
    return count


def check_sae_size(folder: str | os.PathLike, max_parameters: int, label: str | None = None) -> None:
    """Refuse an SAE over `max_parameters` from file sizes and its safetensors header, before anything is loaded.
    `label`: what the messages call it (the source a visitor named, not a server path)."""
    folder = Path(folder)
    label = label or str(folder)
    try:
        config_size = (folder / CONFIG_FILE).stat().st_size
        weights_size = (folder / WEIGHTS_FILE).stat().st_size
    except FileNotFoundError:
        return  # read_sae_files says what is missing
    if config_size > MAX_CONFIG_BYTES:
        raise too_big(label, f"a config.json of {config_size:,} bytes", max_parameters)
    if weights_size > weights_bytes_cap(max_parameters):
        raise too_big(label, f"weights of {weights_size:,} bytes", max_parameters)
    try:
        count = header_parameters(folder / WEIGHTS_FILE)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise VizError(f"The sparse autoencoder in {label} cannot be read (not a safetensors file)", option="sae",
                       fix="train it again with `vit-feature-viz sae train`.") from None
    if count > max_parameters:
        raise too_big(label, f"{count:,} parameters", max_parameters)


def read_sae_files(folder: str | os.PathLike, max_parameters: int | None = None,
                   label: str | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, config) of a saved SAE; VizError if it is missing, unreadable, over `max_parameters` (checked
    before it is read) or its weights are not the config's."""
    from safetensors.numpy import load

    folder = Path(folder)
    if max_parameters is not None:
        check_sae_size(folder, max_parameters, label)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
        weights = (folder / WEIGHTS_FILE).read_bytes()
    except FileNotFoundError:
        raise VizError(f"No sparse autoencoder in {folder}", option="sae",
                       fix="train one with `vit-feature-viz sae train`, or {option:pass} a gallery that holds one.") from None
    except (OSError, ValueError) as err:
        raise VizError(f"The sparse autoencoder in {folder} cannot be read ({type(err).__name__})", option="sae",
                       fix="train it again with `vit-feature-viz sae train`.") from None
    if hashlib.sha256(weights).hexdigest() != config.get("weights_sha256"):
        raise VizError(f"The sparse autoencoder in {folder} has weights that do not match its config.json",
                       option="sae", fix="train it again with `vit-feature-viz sae train`.")
    return load(weights), config


def saes_in(gallery: str | os.PathLike) -> dict[tuple[int, str], Path]:
    """(layer, site) -> folder of every saved SAE in a gallery folder."""
    root = Path(gallery) / SAE_DIR
    if not root.is_dir():
        return {}
    found = {}
    for folder in sorted(root.iterdir()):
        match = FOLDER_NAME.match(folder.name)
        if match and (folder / CONFIG_FILE).is_file():
            found[(int(match.group(1)), match.group(2))] = folder
    return found


def sae_paths(gallery: str | os.PathLike) -> list[Path]:
    """The files of every saved SAE (what a push uploads)."""
    return [folder / name for folder in saes_in(gallery).values() for name in (WEIGHTS_FILE, CONFIG_FILE)
            if (folder / name).is_file()]


def pick_sae(found: dict[tuple[int, str], Path], source: str, layer: int, site: str | None) -> Path:
    """The one SAE of `layer` (and `site`, needed only when the layer has several) among `found`."""
    matches = {key: path for key, path in found.items() if key[0] == layer and (site is None or key[1] == site)}
    if len(matches) == 1:
        return next(iter(matches.values()))
    held = ", ".join(sae_name(*key) for key in sorted(found)) or "none"
    if not matches:
        raise VizError(f"{source} holds no sparse autoencoder of layer {layer}" + (f" at {site}" if site else "")
                       + f" (it holds: {held})", option="sae",
                       fix=f"train one: vit-feature-viz sae train MODEL --layer {layer} --out GALLERY.")
    raise VizError(f"{source} holds sparse autoencoders of layer {layer} at several sites ({held})",
                   option="sae_site", fix="{option:pass} fc1 or residual.")
