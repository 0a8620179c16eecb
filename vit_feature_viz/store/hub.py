"""Share gallery folders on the Hugging Face Hub: one call to push, one call to pull.

A gallery folder is a Hub dataset folder (README.md with a `configs` dataset card + data/*.parquet), so a
pushed gallery loads with `datasets.load_dataset(repo_id)` and shows in the Hub's dataset viewer.

Tokens and the endpoint come from huggingface_hub's usual configuration (`hf auth login`, HF_TOKEN,
HF_ENDPOINT) unless a token is passed. Every failure a user can fix becomes a one-line `VizError`, which
never contains the token.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from huggingface_hub import CommitOperationAdd, HfApi, HfFileSystem, constants, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalTokenNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import VizError
from .card import is_gallery_card
from .folder import CheckedGallery, GalleryFolder
from .sae_files import SAE_DIR, SAE_SUFFIXES, sae_paths
from .schema import ANALYSIS_DIR, ANALYSIS_SUFFIXES
from .shards import linked_file, shard_problem

REPO_TYPE = "dataset"
# A gallery's own files, the ones push uploads; nothing else is pulled.
GALLERY_PATTERNS = ["README.md", "data/*.parquet", *(f"{ANALYSIS_DIR}/*/*{suffix}" for suffix in ANALYSIS_SUFFIXES),
                    *(f"{SAE_DIR}/*/*{suffix}" for suffix in SAE_SUFFIXES)]
UNCHANGED = "; {gallery} is unchanged"  # what a failed push did not touch (VizError words the gallery per surface)
MAX_CARD_BYTES = 1 << 20  # of a remote README.md read to tell whether the repo is a gallery (its YAML comes first)


# ------------------------------------------------------------------------------------------------ public API


def push_gallery(
    folder: str | os.PathLike | CheckedGallery,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Push a gallery folder to the dataset repo `repo_id` (created if missing) and return the dataset's URL.

    Only the gallery's own files go up: its card and its data/*.parquet shards, never anything else in the
    folder, and never through a symbolic link. The pushed card names `repo_id` in its `load_dataset` snippet. An
    existing repo must be empty or hold a gallery: a push never replaces another dataset's card. One commit;
    huggingface_hub drops the files the Hub already holds unchanged, and remote files missing locally are kept
    (never deleted). The local folder is only read, and checked whole (links, unreadable shards) before the Hub
    is contacted. A `CheckedGallery` (the app's session gallery) is taken as it is, not checked again.
    """
    gallery = folder if isinstance(folder, CheckedGallery) else checked_gallery(Path(folder))
    folder = gallery.folder.path
    shards = upload_files(gallery)
    card = gallery.card_text({"repo_id": repo_id})  # reads every shard, once: a broken one stops us here
    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(endpoint, repo_id, folder, pushing=True):
        repo_url = api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
        if (repo_url.repo_id or repo_id) != repo_id:  # a bare name lands in the token's namespace
            repo_id = repo_url.repo_id
            card = gallery.card_text({"repo_id": repo_id})  # from the rows read above
        info = api.dataset_info(repo_id)
        check_push_target(repo_id, info, folder, endpoint=endpoint, token=token)
        operations = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8"))]
        operations += [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(file)) for path, file in shards.items()]
        api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Update gallery ({len(shards)} shard(s))",
            repo_type=REPO_TYPE,
            parent_commit=info.sha,  # the commit just checked: fail rather than overwrite a push that lands meanwhile
        )
    return str(repo_url)


def check_push_target(repo_id: str, info, folder: Path, *, endpoint: str, token: str | None) -> None:
    """Refuse to push into a repo that holds something other than a gallery: the push would replace its README.md
    (and mix gallery shards into its data). An empty repo (a new one holds only .gitattributes) is fine."""
    paths = [sibling.rfilename for sibling in info.siblings or []]
    if not [p for p in paths if p != ".gitattributes"]:
        return
    if looks_like_gallery(paths) and is_gallery_card(_remote_text(repo_id, info.sha, "README.md", endpoint, token)):
        return
    short = repo_id.rpartition("/")[2]
    raise VizError(
        f"the dataset repo {repo_id} already holds a dataset that is not a vit-feature-viz gallery, and a push would"
        " replace its README.md", fix=f"push to another repo name, e.g. {short}-gallery", note=UNCHANGED, gallery=folder
    )


def _remote_text(repo_id: str, revision: str, path: str, endpoint: str, token: str | None) -> str:
    """The start of a small text file of the repo at `revision`, read over HTTP without writing any cache."""
    fs = HfFileSystem(endpoint=endpoint, token=token)
    with fs.open(f"datasets/{repo_id}@{revision}/{path}", "rb") as handle:
        return handle.read(MAX_CARD_BYTES).decode("utf-8", errors="replace")


def pull_gallery(
    repo_id: str,
    folder: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | None = None,
) -> Path:
    """Download the gallery in dataset repo `repo_id` into `folder`, to view it or extend it and push again.

    `folder` must be new, empty or a gallery: only the card, data/*.parquet shards and analysis results are
    written, as plain files (no cache symlinks). They are downloaded into a hidden staging folder next to their
    destination and moved in only once every shard reads as a gallery shard, so a repo with an unsafe file name,
    a broken shard or a failed download writes nothing.
    """
    folder = Path(folder)
    check_pull_destination(folder)
    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(endpoint, repo_id, folder, pushing=False, revision=revision):
        info = api.dataset_info(repo_id, revision=revision)
        remote_paths = [sibling.rfilename for sibling in info.siblings or []]
        if not looks_like_gallery(remote_paths):
            raise VizError(
                f"the dataset repo {repo_id} is not a gallery (it has no README.md and data/*.parquet):"
                " pass the id of a repo made with push_gallery"
            )
        check_remote_names(repo_id, remote_paths)
        with _staging_folder(folder) as staging:
            snapshot_download(
                repo_id,
                repo_type=REPO_TYPE,
                revision=info.sha,  # the commit just checked, even if the branch moves meanwhile
                local_dir=staging,
                allow_patterns=GALLERY_PATTERNS,
                token=token,
                endpoint=endpoint,
            )
            pulled = _pulled_files(staging)
            _check_pulled_shards(repo_id, staging, pulled)
            _move_into(staging, pulled, folder)
    return folder


def check_remote_names(repo_id: str, paths: list[str]) -> None:
    """Refuse a repo holding a file whose name could land outside the destination (`..`, an absolute name, a
    backslash, an empty or control character part): the Hub should never list one, so the repo is not to be trusted."""
    for path in paths:
        if _unsafe_name(path):
            raise VizError(
                f"the dataset repo {repo_id} holds a file with an unsafe name ({path!r}), which could be written"
                " outside the destination folder: nothing was pulled; ask the repo's owner to rename it"
            )


def _unsafe_name(path: str) -> bool:
    parts = path.split("/")
    return ("\\" in path or path.startswith("/") or any(part in ("", ".", "..") for part in parts)
            or any(ord(char) < 32 for char in path) or ":" in parts[0])


@contextmanager
def _staging_folder(folder: Path):
    """A hidden temporary folder on the destination's file system (in the folder itself when it exists, else in
    its nearest existing parent), removed afterwards whatever happens."""
    base = next(p for p in (folder, *folder.absolute().parents) if p.is_dir())
    try:
        staging = Path(tempfile.mkdtemp(prefix=".vfv-pull-", dir=base))
    except OSError as err:
        raise VizError(f"cannot write to {base} ({err.strerror}): pull into a folder you can write to") from None
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pulled_files(staging: Path) -> list[Path]:
    """The downloaded files, relative to the staging folder (huggingface_hub's own .cache left out)."""
    return sorted(p.relative_to(staging) for p in staging.rglob("*")
                  if p.is_file() and p.relative_to(staging).parts[0] != ".cache")


def _check_pulled_shards(repo_id: str, staging: Path, pulled: list[Path]) -> None:
    """Every downloaded shard must read as a gallery shard before any file reaches the destination."""
    for relative in pulled:
        if relative.parts[0] == "data" and relative.suffix == ".parquet":
            problem = shard_problem(staging / relative)
            if problem is not None:
                raise VizError(f"the dataset repo {repo_id} holds {relative.as_posix()}, which is {problem}:"
                               " nothing was pulled; ask the repo's owner to push the gallery again, or pull"
                               " another revision")


def _move_into(staging: Path, pulled: list[Path], folder: Path) -> None:
    """Move the checked files into place (a rename each: the staging folder is on the same file system)."""
    for relative in pulled:
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, target)


def check_pull_destination(folder: Path) -> None:
    """Refuse a destination a pull would damage: a file, or a folder holding anything but a gallery."""
    if folder.is_file():
        raise VizError(f"{folder} is a file: pull into a new or empty folder, or a gallery folder")
    if not folder.is_dir():
        return
    visible = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if visible and not GalleryFolder(folder).exists():
        name = sorted(p.name for p in visible)[0]
        raise VizError(f"{folder} is not empty and not a gallery (it holds {name}): pull into a new or empty folder")


def checked_gallery(folder: Path) -> CheckedGallery:
    """The gallery in `folder` with its shards found once, for a push; VizError if `folder` is not a gallery (the
    card's presence is checked with the files, `upload_files`, which also serves a gallery checked elsewhere)."""
    if not folder.is_dir():
        raise VizError(f"gallery folder {folder} does not exist: pass the folder a gallery was saved to")
    gallery = GalleryFolder(folder)
    shards = gallery.shard_paths()
    if not shards:
        raise not_a_gallery(folder)
    return CheckedGallery(gallery, tuple(shards))


def not_a_gallery(folder: Path) -> VizError:
    return VizError(f"{folder} is not a gallery folder (it needs README.md and data/*.parquet):"
                    " pass the folder a gallery was saved to")


def upload_files(checked: CheckedGallery) -> dict[str, Path]:
    """The files a push uploads besides the card (rendered for the repo), by repo path; VizError if the gallery has
    no card, or if the card or any of these files is a symbolic link (or lies behind one). The shards found when
    the gallery was checked (the files `load_dataset` reads: data/*.parquet without hidden files) plus the
    experiment results (analysis/<experiment>/<run>.csv|.png) and sparse autoencoders (sae/<layer>-<site>/),
    nothing else."""
    gallery, folder = checked.folder, checked.folder.path
    if not gallery.card_path.is_file():
        raise not_a_gallery(folder)
    files = [*checked.shards, *gallery.analysis_paths(), *sae_paths(folder)]
    problem = linked_file(folder, [gallery.card_path, *files])
    if problem is not None:
        raise VizError(problem, fix="a push sends only the gallery's own files, so replace it with a copy of the file"
                                    " or remove it", note="; nothing was uploaded and {gallery} is unchanged",
                       gallery=folder)
    return {path.relative_to(folder).as_posix(): path for path in files}


def hub_endpoint() -> str:
    """HF_ENDPOINT as it is now (huggingface_hub reads it once at import), else huggingface_hub's endpoint."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def reader_key(token: str | bool | None) -> str:
    """Whom a Hub read is made for, as a key for what is kept in memory after it, never holding the token itself:
    'local' (None: the local user's own login), 'anonymous' (False), else a digest of the token. What was read
    for one reader is then served again to that same reader only."""
    if token is None:
        return "local"
    if token is False or not str(token).strip():
        return "anonymous"
    return "token-" + hashlib.sha256(str(token).encode()).hexdigest()[:16]


def looks_like_gallery(paths) -> bool:
    paths = set(paths)
    return "README.md" in paths and any(
        PurePosixPath(p).parent == PurePosixPath("data") and p.endswith(".parquet") for p in paths
    )


# -------------------------------------------------------------------------------------------------- errors


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network failures of the HTTP stacks huggingface_hub uses (httpx2 in 2.x, httpx in 1.x)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _find_cause(exc: BaseException, types) -> BaseException | None:
    """The first exception of `types` in `exc`'s cause/context chain (clients wrap network errors)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, types):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _http_error(err: HfHubHTTPError, endpoint: str, repo_id: str, folder: Path, pushing: bool) -> VizError:
    """The VizError for an HTTP error answer; the Hub's own text is left out (it may echo request details)."""
    status = err.response.status_code if err.response is not None else None
    token_kind = "a write token" if pushing else "a valid token"
    if status == 401 and (pushing or not isinstance(err, RepositoryNotFoundError)):
        # A push without a usable token (the client reports some 401s as RepositoryNotFoundError).
        return _hub_error(f"the Hub at {endpoint} rejected the request as unauthenticated (401)",
                          f"log in with `hf auth login` or set HF_TOKEN to {token_kind}", folder, pushing, "token")
    if isinstance(err, RepositoryNotFoundError) and not pushing:
        return _hub_error(f"dataset repo {repo_id} not found on {endpoint}", "check the repo id, or log in with"
                          " `hf auth login` (or set HF_TOKEN) if the repo is private", folder, pushing, "token")
    if status == 403 or isinstance(err, RepositoryNotFoundError):
        return _hub_error(f"the token cannot write to {repo_id}", "use a token with write access to that namespace",
                          folder, pushing)
    if status in (409, 412):
        return _hub_error(f"{repo_id} changed on the Hub during the push", "push again", folder, pushing)
    return _hub_error(f"the Hub at {endpoint} answered HTTP {status} for {repo_id}", "try again later", folder,
                      pushing)


def _hub_error(problem: str, fix: str, folder: Path, pushing: bool, option: str | None = None) -> VizError:
    """A failed Hub call; after a failed push, the note that the local gallery was left as it was."""
    return VizError(problem, option=option, fix=fix, note=UNCHANGED if pushing else "", gallery=folder)


@contextmanager
def hub_errors(endpoint: str, repo_id: str, folder: Path, *, pushing: bool, revision: str | None = None):
    """Turn huggingface_hub failures into one-line VizErrors naming the fix (never quoting the token)."""
    try:
        yield
    except VizError:
        raise
    except OfflineModeIsEnabled as err:
        raise _hub_error("HF_HUB_OFFLINE is set, so the Hub cannot be reached",
                         f"unset it to {'push' if pushing else 'pull'}", folder, pushing,
                         "hub_offline_push" if pushing else "hub_offline") from err
    except LocalTokenNotFoundError as err:
        raise _hub_error("no Hugging Face token found", "log in with `hf auth login` or set HF_TOKEN", folder, pushing,
                         "token") from err
    except HFValidationError as err:
        raise VizError(f"invalid repo id {repo_id!r}: use 'namespace/name' with letters, digits, '-', '_' or '.'") \
            from err
    except RevisionNotFoundError as err:
        raise VizError(f"revision {revision!r} not found in {repo_id}: pass an existing branch, tag or commit") from err
    except HfHubHTTPError as err:
        raise _http_error(err, endpoint, repo_id, folder, pushing) from err
    except Exception as err:
        if _find_cause(err, _transport_errors()) is None:
            raise
        raise _hub_error(f"cannot reach the Hub at {endpoint}", "check the network or HF_ENDPOINT", folder,
                         pushing) from err
