"""Directions: maximize the projection (or cosine) of a layer's activations on any vector, not just one channel.

A direction objective wraps a channel objective, which says where and how activations are read (`feature`: fc1,
mean over patches; `neuron`: fc1 at one patch; `cls`: fc1 at CLS; `residual`: the block's output, mean over
patches), and projects that reduced vector on each row of a matrix of unit vectors: row k is "feature" k, so a file
of several vectors renders like several channels. The vectors come from a source string:

- `PATH.npy`: a vector [C] or a matrix [K, C];
- `PATH.safetensors[:KEY]`: the tensor KEY (default: the file's only tensor);
- `probe:PATH`: a linear probe saved by `analysis/probe.py` (its rows, read through its standardization);
- `difference:A,B`: channel A minus channel B of the site.

The name saved in a gallery row holds the source and the first 16 hex digits of the vectors' sha256 (of their
float32 values, so the same vector in .npy or .safetensors gives the same hash): enough to find the file again
and check it is the same one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import VizError
from .objectives import Channel

SUFFIXES = (".npy", ".safetensors")
HASH_DIGITS = 16


@dataclass(frozen=True)
class Vectors:
    """Unit rows [K, C] read from a source, with what identifies them."""

    rows: torch.Tensor | None  # None for a difference of channels, built once the site's width is known
    source: str
    sha256: str | None
    pair: tuple[int, int] | None = None

    def label(self) -> str:
        """How the gallery names these vectors: the source's file name and the hash, or the channel pair."""
        if self.pair is not None:
            return f"difference:{self.pair[0]},{self.pair[1]}"
        return f"{Path(self.source.split(':', 1)[-1] if self.source.startswith('probe:') else self.source).name} " \
               f"sha256:{self.sha256[:HASH_DIGITS]}"


def read_vectors(source: str) -> Vectors:
    """The vectors a source string names (see the module's docstring); a bad source is a one-line VizError."""
    source = str(source).strip()
    if not source:
        raise VizError("The direction is empty", option="direction",
                       fix="give {option} a .npy or .safetensors file, probe:FILE or difference:A,B.")
    if source.startswith("difference:"):
        return Vectors(None, source, None, _channel_pair(source))
    if source.startswith("probe:"):
        matrix = _probe_rows(Path(source[len("probe:"):]))
    else:
        path, key = _path_and_key(source)
        matrix = _read_array(path, key)
    rows = _unit_rows(matrix, source)
    return Vectors(rows, source, hashlib.sha256(rows.numpy().astype("<f4").tobytes()).hexdigest())


def _channel_pair(source: str) -> tuple[int, int]:
    parts = source[len("difference:"):].split(",")
    try:
        first, second = (int(p) for p in parts)
    except ValueError:
        raise VizError(f"'{source}' is not a difference of two channels", option="direction", value=source,
                       fix="write difference:A,B with two channel numbers, e.g. difference:12,40.") from None
    if first == second or min(first, second) < 0:
        raise VizError(f"'{source}' needs two different channels from 0", option="direction", value=source,
                       fix="write difference:A,B with A != B, e.g. difference:12,40.")
    return first, second


def _path_and_key(source: str) -> tuple[Path, str | None]:
    """`file.safetensors:KEY` -> (file, KEY); `file.npy` -> (file, None); other files are not vectors."""
    if Path(source).suffix in SUFFIXES:
        return Path(source), None
    head, _, key = source.rpartition(":")
    if head and Path(head).suffix in SUFFIXES:
        return Path(head), key
    raise VizError(f"'{source}' is not a vector file", option="direction", value=source,
                   fix="give {option} a .npy or .safetensors file (FILE.safetensors:KEY picks a tensor), "
                       "probe:FILE or difference:A,B.")


def _read_array(path: Path, key: str | None) -> np.ndarray:
    if not path.is_file():
        raise VizError(f"No vector file at {path}", option="direction", value=str(path),
                       fix="give {option} an existing .npy or .safetensors file.")
    try:
        if path.suffix == ".npy":
            if key:
                raise VizError(f"A .npy file holds one array, so it has no tensor '{key}'", option="direction",
                               value=str(path), fix=f"give {{option}} {path} without ':{key}'.")
            return np.load(path, allow_pickle=False)
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
    except VizError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to replace
        raise VizError(f"{path} is not a readable {path.suffix} file ({str(err).splitlines()[0][:80] if str(err) else type(err).__name__})",
                       option="direction", value=str(path), fix="give {option} a vector saved with numpy or safetensors.") from None
    if key is None and len(tensors) == 1:
        return next(iter(tensors.values()))
    if key not in tensors:
        names = ", ".join(sorted(tensors)[:8])
        raise VizError(f"{path} has {'no tensor ' + repr(key) if key else 'several tensors'} (it holds {names})",
                       option="direction", value=str(path), fix=f"give {{option}} {path.name}:KEY with one of {names}.")
    return tensors[key]


def _probe_rows(path: Path) -> np.ndarray:
    """A probe's class directions in the space it reads: weight / scale (it standardizes its input first)."""
    if not path.is_file():
        raise VizError(f"No probe file at {path}", option="direction", value=str(path),
                       fix="give {option} probe:FILE with a probe saved under an analysis's .progress/probes/.")
    tensors = {}
    try:
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
    except Exception:  # noqa: BLE001
        pass
    if "weight" not in tensors or "scale" not in tensors:
        raise VizError(f"{path} is not a saved linear probe (no weight and scale tensors)", option="direction",
                       value=str(path), fix="give {option} probe:FILE with a file written by a probe fit.")
    return tensors["weight"] / tensors["scale"]


def _unit_rows(matrix, source: str) -> torch.Tensor:
    array = np.asarray(matrix)
    if array.dtype.kind not in "fiu" or array.ndim not in (1, 2) or 0 in array.shape:
        raise VizError(f"The direction in '{source}' has shape {array.shape} ({array.dtype})", option="direction",
                       value=source, fix="save a vector [C] or a matrix [K, C] of numbers.")
    rows = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).reshape(-1, array.shape[-1])
    norms = rows.norm(dim=1, keepdim=True)
    if not torch.isfinite(rows).all() or (norms == 0).any():
        raise VizError(f"The direction in '{source}' has a zero, NaN or infinite row", option="direction",
                       value=source, fix="save finite, non-zero vectors.")
    return rows / norms


class Direction(Channel):
    """Projection (or cosine) of a channel objective's reduced activations on unit vectors: feature k is row k.

    With a channel's unit vector as row c, feature c is that channel exactly (x . e_c = x_c), so it renders the
    same image with the same seed."""

    def __init__(self, base: Channel, vectors: Vectors, cosine: bool = False):
        if not isinstance(base, Channel) or base.kind not in ("mlp", "residual") or base.channel is not None:
            raise VizError("A direction reads the activations of feature, neuron, cls or residual", option="objective",
                           fix="{option:use} one of feature, neuron, cls or residual with a direction.")
        super().__init__(base.layer)
        self.kind, self.base, self.vectors, self.cosine = base.kind, base, vectors, cosine
        self.needs = base.needs
        self.rows = vectors.rows
        self.name = f"{base.name}-{'cosine' if cosine else 'direction'}({vectors.label()})"

    def num_channels(self, model) -> int:
        return len(self.rows) if self.rows is not None else 1

    def check(self, model) -> None:
        self.base.check(model)
        width = model.width(self.base.target)
        if self.vectors.pair is not None:
            if max(self.vectors.pair) >= width:
                raise VizError(f"Channel {max(self.vectors.pair)} is out of range: this site has {width} channels",
                               option="direction", value=self.vectors.source, fix=f"use channels 0-{width - 1}.")
            first, second = self.vectors.pair
            rows = torch.zeros(1, width)
            rows[0, first], rows[0, second] = 1.0, -1.0
            self.rows = rows / rows.norm()
        elif self.rows.shape[1] != width:
            raise VizError(f"The direction has {self.rows.shape[1]} numbers but {self.base.name} of block "
                           f"{self.layer} has {width} channels", option="direction", value=self.vectors.source,
                           fix=f"use vectors of length {width} (fc1 for feature/neuron/cls, the model width for residual).")

    def _project(self, values: torch.Tensor) -> torch.Tensor:
        rows = self.rows.to(values.device)
        out = values @ rows.T
        if self.cosine:
            out = out / values.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return out

    def values(self, acts):
        return self._project(self.base.values(acts))

    def patch_values(self, acts):
        patches = self.base.patch_values(acts)
        return None if patches is None else self._project(patches.float())


def direction_objective(base: Channel, source: str, *, cosine: bool = False) -> Direction:
    """`base` read along the vectors `source` names (see the module's docstring)."""
    return Direction(base, read_vectors(source), cosine=cosine)
