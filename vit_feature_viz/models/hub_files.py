"""Reading a checkpoint's small files (configs, weight file names) from a local folder or the Hub, with errors
that name the fix. Backend detection and the pickle check both need this, before any weights are loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import (  # RemoteEntryNotFoundError and LocalEntryNotFoundError are EntryNotFoundErrors
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import VizError


class CheckpointFiles:
    """The files of one checkpoint, by Hub name or local folder."""

    def __init__(self, name_or_path: str, revision: str | None = None):
        self.name = str(name_or_path)
        self.revision = revision
        self.local = Path(self.name) if os.path.isdir(self.name) else None
        self._seen_repo = False  # some file of the repo was reachable
        self._not_reachable = False  # a file could be neither found in the cache nor fetched

    def path(self, filename: str) -> str | None:
        """Local path of `filename`, downloading it if needed; None when the checkpoint has no such file."""
        if self.local is not None:
            candidate = self.local / filename
            return str(candidate) if candidate.is_file() else None
        try:
            found = hf_hub_download(self.name, filename, revision=self.revision)
            self._seen_repo = True
            return found
        except LocalEntryNotFoundError:
            self._not_reachable = True
            return None
        except EntryNotFoundError:
            self._seen_repo = True
            return None
        except GatedRepoError:
            raise VizError(f"'{self.name}' is gated: accept its terms on the model page and log in with `hf auth login`.") from None
        except RepositoryNotFoundError:
            raise VizError(
                f"Model '{self.name}' was not found on the Hub: check the id (e.g. google/vit-base-patch16-224), "
                "or log in with `hf auth login` if it is private."
            ) from None
        except RevisionNotFoundError:
            raise VizError(f"Revision '{self.revision}' of '{self.name}' does not exist: use a branch, tag or commit of that repo.") from None
        except HfHubHTTPError as err:
            raise VizError(f"The Hub refused '{self.name}' ({_status(err)}): check the id and your token.") from None
        except ValueError:
            raise VizError(f"'{self.name}' is neither a local folder nor a Hub model id like org/name: check the spelling.") from None

    def library_source(self) -> str:
        """The name timm and open_clip load from: `hf-hub:org/name`, or `local-dir:` for folders and revisions."""
        if self.local is not None:
            return f"local-dir:{self.local}"
        if self.revision:
            from huggingface_hub import snapshot_download

            return f"local-dir:{snapshot_download(self.name, revision=self.revision)}"
        return f"hf-hub:{self.name}"

    def exists(self, filename: str) -> bool:
        return self.path(filename) is not None

    def json(self, filename: str) -> dict | None:
        found = self.path(filename)
        if found is None:
            return None
        with open(found) as f:
            return json.load(f)

    def missing_error(self) -> VizError:
        """The error for a checkpoint that has none of the files we know."""
        if self.local is not None:
            return VizError(f"Folder '{self.name}' holds no config.json or open_clip_config.json: point at a saved ViT/CLIP checkpoint.")
        if self._not_reachable and not self._seen_repo:
            if constants.HF_HUB_OFFLINE:
                return VizError(f"'{self.name}' is not in the local cache and HF_HUB_OFFLINE is set: unset HF_HUB_OFFLINE or download it first.")
            return VizError(f"Cannot reach the Hub to fetch '{self.name}': check the network or HF_ENDPOINT, or use a cached model.")
        return VizError(f"'{self.name}' has no config.json or open_clip_config.json: it is not a transformers, timm or open_clip checkpoint.")

    def require_weights(self, safe: list[str], pickled: list[str], allow_pickle: bool) -> None:
        """Refuse pickle-only checkpoints unless the user allowed them: unpickling can run arbitrary code."""
        if any(self.exists(name) for name in safe):
            return
        if any(self.exists(name) for name in pickled):
            if allow_pickle:
                return
            raise VizError(
                f"'{self.name}' only has pickle weights ({pickled[0]}), which can run code when loaded: "
                "pass --allow-pickle (allow_pickle=True) if you trust it."
            )
        raise VizError(f"'{self.name}' has no weight file ({safe[0]} or {pickled[0]}): check the repo.")


def _status(err: HfHubHTTPError) -> str:
    response = getattr(err, "response", None)
    return f"HTTP {response.status_code}" if response is not None else "HTTP error"
