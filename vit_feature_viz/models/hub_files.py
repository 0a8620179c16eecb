"""Reading a checkpoint's small files (configs, weight file names) from a local folder or the Hub, with errors
that name the fix. Backend detection, the size cap and the pickle check all need this, before any weights load."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (  # RemoteEntryNotFoundError and LocalEntryNotFoundError are EntryNotFoundErrors
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import VizError
from .builtin import DEFAULT_BUILTIN

try:  # huggingface_hub 2.x speaks httpx2 (1.x httpx): a failed connection is neither an OSError nor an HTTP error
    from httpx2 import TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import TransportError


class CheckpointFiles:
    """The files of one checkpoint, by Hub name or local folder."""

    def __init__(self, name_or_path: str, revision: str | None = None, token: str | bool | None = None):
        """`token`: None reads with the local user's own login; False (anonymous) or a token reads for someone
        else, with exactly that credential (see `require_access`)."""
        self.name = str(name_or_path)
        self.revision = revision
        self.token = token
        self.local = Path(self.name) if os.path.isdir(self.name) else None
        self._seen_repo = False  # some file of the repo was reachable
        self._not_reachable = False  # a file could be neither found in the cache nor fetched
        self._access_granted = token is None or self.local is not None

    def require_access(self) -> None:
        """With an explicit token, the Hub must grant it this repo before any file is used, cached ones included:
        huggingface_hub returns a cached file when the Hub refuses a download (401/404), so a private checkpoint
        that another reader fetched would otherwise load for anyone. Asked once per checkpoint."""
        if self._access_granted:
            return
        with self._refusals():
            try:
                HfApi(token=self.token).repo_info(self.name, revision=self.revision)
            except OfflineModeIsEnabled:
                raise VizError(f"Cannot check who may read '{self.name}' while HF_HUB_OFFLINE is set",
                               option="hub_offline", fix=f"unset it, or use the built-in model {DEFAULT_BUILTIN}") \
                    from None
            except (ConnectionError, TimeoutError, TransportError):
                raise VizError(f"Cannot reach the Hub to fetch '{self.name}': check the network or HF_ENDPOINT, or "
                               f"use the built-in {DEFAULT_BUILTIN} (no network needed).") from None
        self._seen_repo = self._access_granted = True

    def path(self, filename: str) -> str | None:
        """Local path of `filename`, downloading it if needed; None when the checkpoint has no such file."""
        if self.local is not None:
            candidate = self.local / filename
            return str(candidate) if candidate.is_file() else None
        self.require_access()
        with self._refusals():
            try:
                found = hf_hub_download(self.name, filename, revision=self.revision, token=self.token)
                self._seen_repo = True
                return found
            except LocalEntryNotFoundError:
                self._not_reachable = True
                return None
            except EntryNotFoundError:
                self._seen_repo = True
                return None

    @contextlib.contextmanager
    def _refusals(self) -> Iterator[None]:
        """The Hub's refusals of this checkpoint as one line naming the fix."""
        try:
            yield
        except GatedRepoError:
            raise VizError(f"'{self.name}' is gated", option="token",
                           fix="accept its terms on the model page and log in with `hf auth login`.") from None
        except RepositoryNotFoundError:
            raise VizError(f"Model '{self.name}' was not found on the Hub", option="token",
                           fix="check the id (e.g. google/vit-base-patch16-224), or log in with `hf auth login` if it "
                               "is private.") from None
        except RevisionNotFoundError:
            raise VizError(f"Revision '{self.revision}' of '{self.name}' does not exist: use a branch, tag or commit of that repo.") from None
        except HfHubHTTPError as err:
            raise VizError(f"The Hub refused '{self.name}' ({_status(err)}): check the id and your token.") from None
        except ValueError:
            raise VizError(f"'{self.name}' is neither a local folder nor a Hub model id like org/name: check the spelling.") from None

    def on_disk(self, filename: str) -> str | None:
        """Local path of `filename` if it is already here (folder or Hub cache); never downloads."""
        if self.local is not None:
            candidate = self.local / filename
            return str(candidate) if candidate.is_file() else None
        self.require_access()
        try:
            found = try_to_load_from_cache(self.name, filename, revision=self.revision)
        except ValueError:  # not a repo id; path() names the problem
            return None
        return found if isinstance(found, str) else None

    def has(self, filename: str) -> bool:
        """Whether the checkpoint has `filename`, without downloading it (weight files can be gigabytes)."""
        if self.on_disk(filename) is not None:
            return True
        if self.local is not None or constants.HF_HUB_OFFLINE:
            return False
        try:
            return HfApi(token=self.token).file_exists(self.name, filename, revision=self.revision)
        except (HfHubHTTPError, OSError, ValueError):
            return False

    def exists(self, filename: str) -> bool:
        return self.path(filename) is not None

    def json(self, filename: str) -> dict | None:
        found = self.path(filename)
        if found is None:
            return None
        try:
            with open(found, encoding="utf-8") as f:
                data = json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise VizError(f"'{self.name}' has a malformed {filename} ({err}): fix the file or pick another checkpoint.") from None
        if not isinstance(data, dict):
            raise VizError(f"'{self.name}' has a malformed {filename} (not a JSON object): fix the file or pick another checkpoint.")
        return data

    def missing_error(self) -> VizError:
        """The error for a checkpoint that has none of the files we know."""
        if self.local is not None:
            return VizError(f"Folder '{self.name}' holds no config.json or open_clip_config.json: point at a saved ViT/CLIP checkpoint.")
        if self._not_reachable and not self._seen_repo:
            if constants.HF_HUB_OFFLINE:
                return VizError(f"'{self.name}' is not in the local cache and HF_HUB_OFFLINE is set: unset HF_HUB_OFFLINE, "
                                f"download it first, or use the built-in model {DEFAULT_BUILTIN}.")
            return VizError(f"Cannot reach the Hub to fetch '{self.name}': check the network or HF_ENDPOINT, or use a "
                            f"cached model or the built-in {DEFAULT_BUILTIN} (no network needed).")
        return VizError(f"'{self.name}' has no config.json or open_clip_config.json: it is not a transformers, timm or open_clip checkpoint.")

    def weights(self, safe: list[str], pickled: list[str], allow_pickle: bool) -> str:
        """Local path of the one weight file to load: the first safetensors name present, else a pickle name only
        when allowed (unpickling can run arbitrary code). Backends must load exactly this file (see `staged`):
        checking one file while a library picks another is how a pickle slips through."""
        for name in safe:
            if self.has(name):
                return self.path(name) or self._vanished(name)
        for name in pickled:
            if self.has(name):
                if not allow_pickle:
                    raise VizError(f"'{self.name}' only has pickle weights ({name}), which can run code when loaded",
                                   option="allow_pickle", fix="{option:pass} (allow_pickle=True) if you trust it.")
                return self.path(name) or self._vanished(name)
        raise VizError(f"'{self.name}' has no weight file ({safe[0]} or {pickled[0]}): check the repo.")

    def weights_mismatch(self, weights: str, config: str, detail: str) -> VizError:
        """The one-line error for a weight file that does not fit the architecture the config describes (a file
        from another model, or cut short), instead of the library's list of every missing key."""
        return VizError(f"'{self.name}': {os.path.basename(weights)} does not match the architecture in {config} "
                        f"({detail}): pick a checkpoint whose weights and config belong together.")

    def _vanished(self, name: str) -> str:
        raise VizError(f"'{self.name}' lists {name} but it could not be fetched: check the network and retry.")

    @contextlib.contextmanager
    def staged(self, weights: str, configs: list[str]) -> Iterator[str]:
        """A temporary folder holding only `configs` and the checked `weights` file, as `local-dir:<folder>`.

        timm and open_clip choose their weight file themselves (open_clip takes open_clip_pytorch_model.bin over
        model.safetensors); in this folder there is no other file to choose."""
        with tempfile.TemporaryDirectory(prefix="vfv-checkpoint-") as folder:
            for name in configs:
                found = self.path(name)
                if found is not None:
                    os.symlink(os.path.abspath(found), os.path.join(folder, name))
            os.symlink(os.path.abspath(weights), os.path.join(folder, os.path.basename(weights)))
            yield f"local-dir:{folder}"

def state_dict_mismatch(err: RuntimeError) -> str | None:
    """A short account of torch's `load_state_dict` error (how many keys are missing or unexpected, the first size
    mismatch), or None when `err` is another RuntimeError."""
    text = str(err)
    found = re.match(r"Error\(s\) in loading state_dict for (\w+)", text)
    if found is None:
        return None
    details = []
    for kind in ("Missing", "Unexpected"):
        line = re.search(rf"{kind} key\(s\) in state_dict: (.*)", text)
        keys = re.findall(r'"([^"]+)"', line[1]) if line else []
        if keys:
            details.append(f"{len(keys)} {kind.lower()} key(s), e.g. {keys[0]}")
    size = re.search(r"size mismatch for ([^:]+): copying a param with shape (.+?) from checkpoint, "
                     r"the shape in current model is (.+?)\.?$", text, re.MULTILINE)
    if size:
        details.append(f"{size[1]} is {size[2]} in the file but {size[3]} in the model")
    return f"{found[1]}: {'; '.join(details)}" if details else found[1]


def _status(err: HfHubHTTPError) -> str:
    response = getattr(err, "response", None)
    return f"HTTP {response.status_code}" if response is not None else "HTTP error"
