"""An SAE as saved in a gallery (store/sae_files.py) and loaded back: the module plus what it was trained on."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import VizError
from ..specs import looks_like_path
from ..store.sae_files import (CONFIG_FILE, FOLDER_NAME, MAX_CONFIG_BYTES, SAE_DIR, SITES, WEIGHTS_FILE, pick_sae,
                               read_sae_files, sae_folder, saes_in, too_big, weights_bytes_cap, write_sae_files)
from .model import SparseAutoencoder, sae_arrays, sae_from_arrays


@dataclass
class SavedSae:
    sae: SparseAutoencoder
    config: dict  # model_id, revision, layer, site, k, latents, width, normalization, metrics, ...
    folder: Path | None = None

    @property
    def layer(self) -> int:
        return int(self.config["layer"])

    @property
    def site(self) -> str:
        return str(self.config["site"])

    @property
    def model_id(self) -> str:
        return str(self.config["model_id"])

    @property
    def short_hash(self) -> str:
        """The first 8 hex digits of the weights' sha256: names the SAE in a gallery row's objective."""
        return str(self.config.get("weights_sha256", ""))[:8]


def check_site(site: str) -> str:
    if site not in SITES:
        raise VizError(f"Unknown site '{site}'", option="site", value=site, fix="{option:use} fc1 or residual.")
    return site


def save_sae(sae: SparseAutoencoder, gallery: str | os.PathLike, config: dict) -> SavedSae:
    """Write the SAE into `gallery/sae/<layer>-<site>/` (atomically; see store/sae_files.py)."""
    config = {**config, "k": sae.k, "latents": sae.latents, "width": sae.width,
              "normalization": {"scale": float(sae.scale), "what": "activations times scale have unit mean squared norm"}}
    folder = write_sae_files(sae_folder(gallery, config["layer"], config["site"]), sae_arrays(sae), config)
    return load_sae(folder, int(config["layer"]))


def load_sae(source: str | os.PathLike, layer: int, site: str | None = None, *,
             token: str | bool | None = None, max_parameters: int | None = None, label: str | None = None) -> SavedSae:
    """The SAE of `layer` in `source`: an SAE folder, a gallery folder or a Hub gallery id. `max_parameters`
    (a server's cap on what a visitor names): a bigger SAE is refused from its file sizes and safetensors header,
    before it is downloaded or loaded. `label`: what messages call the source (not a server path)."""
    if site is not None:
        check_site(site)
    folder = local_sae_folder(str(source), int(layer), site, token=token, max_parameters=max_parameters)
    arrays, config = read_sae_files(folder, max_parameters, label or str(source))
    if int(config.get("layer", -1)) != int(layer):
        raise VizError(f"The sparse autoencoder in {source} was trained on layer {config.get('layer')}, not {layer}",
                       option="layer", fix=f"{{option:use}} {config.get('layer')}.")
    return SavedSae(sae_from_arrays(arrays, int(config["k"])), config, folder)


def local_sae_folder(source: str, layer: int, site: str | None = None, *, token: str | bool | None = None,
                     max_parameters: int | None = None) -> Path:
    """The folder of the SAE of `layer` in `source`: an SAE folder, a gallery folder, or a Hub gallery id (only its
    `sae/<layer>-<site>/` files are downloaded)."""
    path = Path(str(source)).expanduser()
    if (path / CONFIG_FILE).is_file():
        return path
    if path.is_dir():
        return pick_sae(saes_in(path), str(source), layer, site)
    if looks_like_path(str(source)):
        raise VizError(f"No gallery folder at '{source}'", option="sae",
                       fix="{option:pass} a gallery folder or the Hub id of a pushed gallery.")
    return _hub_sae_folder(str(source), layer, site, token, max_parameters)


def _hub_sae_folder(repo_id: str, layer: int, site: str | None, token, max_parameters: int | None = None) -> Path:
    from huggingface_hub import HfApi, snapshot_download

    from ..store.hub import hub_endpoint, hub_errors

    endpoint = hub_endpoint()
    with hub_errors(endpoint, repo_id, Path(repo_id), pushing=False):
        info = HfApi(endpoint=endpoint, token=token).dataset_info(repo_id, files_metadata=max_parameters is not None)
        remote, sizes = {}, {}
        for sibling in info.siblings or []:
            sizes[sibling.rfilename] = sibling.size
            parts = sibling.rfilename.split("/")
            match = FOLDER_NAME.match(parts[1]) if len(parts) == 3 and parts[0] == SAE_DIR else None
            if match and parts[2] == CONFIG_FILE:
                remote[(int(match.group(1)), match.group(2))] = Path(sibling.rfilename).parent
        chosen = pick_sae(remote, repo_id, layer, site)
        if max_parameters is not None:  # sizes from the Hub's listing: nothing too big is downloaded
            _check_remote_sizes(repo_id, chosen, sizes, max_parameters)
        local = snapshot_download(repo_id, repo_type="dataset", revision=info.sha, token=token, endpoint=endpoint,
                                  allow_patterns=[f"{chosen.as_posix()}/{WEIGHTS_FILE}", f"{chosen.as_posix()}/{CONFIG_FILE}"])
    return Path(local) / chosen


def _check_remote_sizes(repo_id: str, chosen: Path, sizes: dict, max_parameters: int) -> None:
    weights = sizes.get(f"{chosen.as_posix()}/{WEIGHTS_FILE}")
    config = sizes.get(f"{chosen.as_posix()}/{CONFIG_FILE}")
    if weights is None or config is None:
        raise VizError(f"The Hub does not say how big the sparse autoencoder in {repo_id} is", option="sae",
                       fix="{option:pass} a gallery pushed with `vit-feature-viz push`.")
    if config > MAX_CONFIG_BYTES:
        raise too_big(repo_id, f"a config.json of {config:,} bytes", max_parameters)
    if weights > weights_bytes_cap(max_parameters):
        raise too_big(repo_id, f"weights of {weights:,} bytes", max_parameters)
