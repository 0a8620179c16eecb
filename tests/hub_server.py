"""A small in-memory Hugging Face Hub on 127.0.0.1, for tests that push and load with the real clients.

No installable server implements the Hub's upload API, so the tests run this one. It answers the routes that
huggingface_hub and datasets call to create a repo, push (preupload, LFS batch + PUT, ndjson commit), list
(tree, paths-info, repo info) and download (resolve with Range). It cannot speak Xet: run the clients with
HF_HUB_DISABLE_XET=1 so they use the LFS batch API.

    with LoopbackHub() as hub:
        hub.url, hub.write_token, hub.read_token   # endpoint and alice's tokens
        hub.uploads                                # files whose bytes reached the server, with their path
        hub.commits                                # every commit received, with its operations
        hub.reads                                  # every file download: (repo_id, path, Range header or None)
        hub.files("alice/gallery")                 # {path: bytes} at a revision
        hub.plant("alice/odd", {"data/../x": b""}) # a commit written directly, no client checks

Users: "alice" (write token and read-only token). An unknown token gets 401; writing where the token may not
(a read-only token, another user's namespace such as "bob/...") gets 403.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

WRITE_TOKEN = "hf_loopback_alice_write_0123456789"
READ_TOKEN = "hf_loopback_alice_read_0123456789"

# Extensions the Hub stores through LFS (a subset of its default .gitattributes).
LFS_SUFFIXES = (".parquet", ".arrow", ".png", ".jpg", ".jpeg", ".webp", ".bin", ".safetensors", ".pt", ".npy", ".zip")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
TYPE_OF_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}


# ----------------------------------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class Blob:
    """One file's content at a commit; `lfs` says whether git holds a pointer instead of the bytes."""

    content: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def pointer(self) -> bytes:
        """The git-lfs pointer file git stores for an LFS blob (its sha1 is the tree entry's oid)."""
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def git_oid(self) -> str:
        data = self.pointer if self.lfs else self.content
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    @property
    def etag(self) -> str:
        """What the Hub sends as ETag: sha256 for LFS files, the git blob sha1 otherwise."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class Commit:
    sha: str
    parent: str | None
    summary: str
    files: dict[str, Blob]
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]

    def resolve(self, revision: str) -> Commit | None:
        """A branch name or a full commit sha to its commit; None if neither."""
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)


@dataclass(frozen=True)
class User:
    name: str
    can_write: bool
    namespaces: tuple[str, ...]


@dataclass(frozen=True)
class Upload:
    """A file whose bytes the server received (inline in a commit, or by LFS PUT), under the path it was committed."""

    repo_id: str
    path: str
    oid: str
    size: int
    mode: str  # "regular" or "lfs"


@dataclass(frozen=True)
class CommitRecord:
    repo_id: str
    sha: str
    summary: str
    operations: list[tuple[str, str]]  # (key, path): ("file"|"lfsFile"|"deletedFile"|"deletedFolder", path)


# ------------------------------------------------------------------------------------------------------ HTTP


class HubError(Exception):
    """An HTTP error answer; `code` goes to X-Error-Code, which the client turns into typed exceptions."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    user: User | None

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> dict:
        return json.loads(self.body or b"{}")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(data, status: int = 200, headers: dict | None = None) -> Response:
    return Response(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


_REPO = r"(?P<ns>[^/]+)/(?P<name>[^/]+)"
_API_REPO = r"/api/(?P<plural>models|datasets|spaces)/" + _REPO
_WEB_REPO = r"/(?:(?P<plural>datasets|spaces)/)?" + _REPO
_LFS_UPLOAD = r"/lfs-upload/(?P<plural>models|datasets|spaces)/" + _REPO + r"/(?P<oid>[0-9a-f]{64})"


class LoopbackHub:
    """The server: a route table of small handlers over in-memory repos, served from a background thread."""

    def __init__(self):
        self.write_token = WRITE_TOKEN
        self.read_token = READ_TOKEN
        # The Hub tells preupload callers each file's current oid (clients then drop unchanged files
        # themselves); tests switch it off to check that a caller's own change detection works.
        self.preupload_reports_oids = True
        self.tokens = {
            WRITE_TOKEN: User("alice", can_write=True, namespaces=("alice",)),
            READ_TOKEN: User("alice", can_write=False, namespaces=("alice",)),
        }
        self.repos: dict[tuple[str, str], Repo] = {}
        self.uploads: list[Upload] = []
        self.lfs_puts: list[tuple[str, str, int]] = []  # (repo_id, oid, size) of every LFS PUT
        self.commits: list[CommitRecord] = []
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status), to debug what clients called
        self.reads: list[tuple[str, str, str | None]] = []  # (repo_id, path, Range) of every GET of a file's bytes
        self._fresh_lfs: set[tuple[str, str]] = set()  # (repo_id, oid) PUT but not yet committed
        self._lock = threading.RLock()
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._url: str | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self.routes: list[tuple[str, re.Pattern, Callable[..., Response]]] = [
            ("GET", r"/api/whoami-v2", self.whoami),
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("GET", _API_REPO + r"(?:/revision/(?P<rev>[^/]+))?", self.repo_info),
            ("POST", _API_REPO + r"/preupload/(?P<rev>[^/]+)", self.preupload),
            ("POST", _API_REPO + r"/commit/(?P<rev>[^/]+)", self.commit),
            ("GET", _API_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", self.tree),
            ("POST", _API_REPO + r"/paths-info/(?P<rev>[^/]+)", self.paths_info),
            ("POST", _WEB_REPO + r"\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", _LFS_UPLOAD, self.lfs_put),
            ("GET", _WEB_REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self.resolve),
            ("HEAD", _WEB_REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self.resolve),
        ]
        self.routes = [(m, re.compile(p + r"/?"), h) for m, p, h in self.routes]

    # ------------------------------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """The endpoint; still answers after stop(), so tests can aim clients at a server that went away."""
        assert self._url is not None, "LoopbackHub was never started"
        return self._url

    def start(self) -> LoopbackHub:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # stop() waits for the serving loop to look up: at its default 0.5 s that was half a second a test
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="loopback-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections, so clients really see the server gone."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for sock in list(self._sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -------------------------------------------------------------------------------------------- helpers

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        """The repo's files at a revision, for assertions."""
        commit = self.repos[(repo_type, repo_id)].resolve(revision)
        return {path: blob.content for path, blob in commit.files.items()}

    def uploaded_paths(self, repo_id: str | None = None) -> list[str]:
        return [u.path for u in self.uploads if repo_id is None or u.repo_id == repo_id]

    def plant(self, repo_id: str, files: dict[str, bytes], *, private: bool = False, repo_type: str = "dataset",
              summary: str = "planted by a test") -> str:
        """Commit `files` straight into the repo (created if missing), bypassing every client-side check, so a test
        can stage what a hostile or broken repo holds (names like `data/../../x.parquet`). Returns the commit sha;
        nothing is recorded in `uploads` or `commits`, which stay what clients sent."""
        with self._lock:
            repo = self.repos.get((repo_type, repo_id))
            if repo is None:
                repo = Repo(repo_type, repo_id, private, _now())
                self._add_commit(repo, "main", "initial commit", {".gitattributes": Blob(GITATTRIBUTES, lfs=False)})
                self.repos[(repo_type, repo_id)] = repo
            head = repo.resolve("main")
            blobs = {path: Blob(content, lfs=path.lower().endswith(LFS_SUFFIXES)) for path, content in files.items()}
            for blob in blobs.values():
                if blob.lfs:
                    repo.lfs_objects[blob.sha256] = blob.content
            return self._add_commit(repo, "main", summary, {**head.files, **blobs}).sha

    def _new_sha(self, *parts: str) -> str:
        self._counter += 1
        return hashlib.sha1("\n".join((*parts, str(self._counter), _now())).encode()).hexdigest()

    def _add_commit(self, repo: Repo, branch: str, summary: str, files: dict[str, Blob]) -> Commit:
        parent = repo.branches.get(branch)
        commit = Commit(self._new_sha(repo.repo_id, parent or "", summary), parent, summary, files, _now())
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit

    def _repo(self, req: Request, plural: str, ns: str, name: str) -> Repo:
        """The repo if it exists and the caller may read it, else 404 RepoNotFound (as the Hub hides private repos)."""
        repo = self.repos.get((TYPE_OF_PLURAL[plural or "models"], f"{ns}/{name}"))
        if repo is None or (repo.private and not (req.user and repo.namespace in req.user.namespaces)):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _writable_repo(self, req: Request, plural: str, ns: str, name: str) -> Repo:
        repo = self._repo(req, plural, ns, name)
        self._check_write(req, repo.namespace)
        return repo

    @staticmethod
    def _check_write(req: Request, namespace: str) -> None:
        if req.user is None:
            raise HubError(401, "You must be authenticated to write to the Hub")
        if not req.user.can_write:
            raise HubError(403, "This token has read-only access")
        if namespace not in req.user.namespaces:
            raise HubError(403, f"You don't have the rights to write to the namespace {namespace}")

    @staticmethod
    def _commit_at(repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(unquote(rev))
        if commit is None:
            raise HubError(404, f"Invalid rev id: {unquote(rev)}", "RevisionNotFound")
        return commit

    @staticmethod
    def _entry(commit: Commit, path: str, expand: bool = False) -> dict | None:
        """A tree entry (file or directory) as the /tree and /paths-info endpoints return it; None if absent."""
        blob = commit.files.get(path)
        last = {"id": commit.sha, "title": commit.summary, "date": commit.date}
        if blob is not None:
            entry = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
        elif path == "" or any(p.startswith(path + "/") for p in commit.files):
            entry = {"type": "directory", "oid": hashlib.sha1(f"{commit.sha}:{path}".encode()).hexdigest(),
                     "size": 0, "path": path}
        else:
            return None
        if expand:
            entry["lastCommit"] = last
        return entry

    # ------------------------------------------------------------------------------------------- handlers

    def whoami(self, req: Request) -> Response:
        if req.user is None:
            raise HubError(401, "Invalid username or password.")
        role = "write" if req.user.can_write else "read"
        return json_response({"type": "user", "name": req.user.name, "fullname": req.user.name, "orgs": [],
                              "auth": {"type": "access_token", "accessToken": {"displayName": role, "role": role}}})

    def create_repo(self, req: Request) -> Response:
        """Create a repo with an initial .gitattributes commit, like the Hub; 409 if it exists."""
        body = req.json()
        repo_type = body.get("type") or "model"
        namespace = body.get("organization") or (req.user.name if req.user else "")
        self._check_write(req, namespace)
        repo_id = f"{namespace}/{body['name']}"
        url = f"{self.url}/{URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return json_response({"error": "You already created this repo", "url": url}, status=409)
        private = body.get("visibility") == "private" or bool(body.get("private"))
        repo = Repo(repo_type, repo_id, private, _now())
        self._add_commit(repo, "main", "initial commit", {".gitattributes": Blob(GITATTRIBUTES, lfs=False)})
        self.repos[(repo_type, repo_id)] = repo
        return json_response({"url": url, "name": repo_id, "id": repo_id})

    def validate_yaml(self, req: Request) -> Response:
        return json_response({"errors": [], "warnings": []})

    def repo_info(self, req: Request, plural, ns, name, rev=None) -> Response:
        repo = self._repo(req, plural, ns, name)
        commit = self._commit_at(repo, rev or "main")
        with_blobs = req.arg("blobs") in ("1", "true", "True")

        def sibling(path: str, blob: Blob) -> dict:
            item = {"rfilename": path}
            if with_blobs:
                item.update(size=blob.size, blobId=blob.git_oid)
                if blob.lfs:
                    item["lfs"] = {"sha256": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
            return item

        return json_response({
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id, "author": repo.namespace,
            "sha": commit.sha, "lastModified": commit.date, "createdAt": repo.created, "private": repo.private,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "siblings": [sibling(p, b) for p, b in sorted(commit.files.items())],
        })

    def preupload(self, req: Request, plural, ns, name, rev) -> Response:
        """Say per file whether it goes through LFS, and its current oid so clients can skip unchanged files."""
        repo = self._writable_repo(req, plural, ns, name)
        commit = self._commit_at(repo, rev)
        answers = []
        for item in req.json().get("files", []):
            path, sample = item["path"], base64.b64decode(item.get("sample", ""))
            existing = commit.files.get(path)
            lfs = (existing.lfs if existing else False) or path.lower().endswith(LFS_SUFFIXES) \
                or item.get("size", 0) >= LFS_SIZE_THRESHOLD or b"\0" in sample
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.git_oid)
            oid = oid if self.preupload_reports_oids else None
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return json_response({"files": answers, "commitOid": commit.sha})

    def lfs_batch(self, req: Request, plural, ns, name) -> Response:
        """Git LFS batch API: an upload href for each object the repo does not hold yet."""
        repo = self._writable_repo(req, plural, ns, name)
        objects = []
        for obj in req.json().get("objects", []):
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in repo.lfs_objects:
                href = f"{self.url}/lfs-upload/{plural or 'models'}/{repo.repo_id}/{obj['oid']}"
                answer["actions"] = {"upload": {"href": href, "header": {}}}
            objects.append(answer)
        return Response(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                        {"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_put(self, req: Request, plural, ns, name, oid) -> Response:
        """Receive an LFS object; its sha256 must match the href's oid (the href itself is the permission)."""
        repo = self.repos.get((TYPE_OF_PLURAL[plural], f"{ns}/{name}"))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if hashlib.sha256(req.body).hexdigest() != oid:
            raise HubError(400, "sha256 of the uploaded content does not match the oid")
        repo.lfs_objects[oid] = req.body
        self.lfs_puts.append((repo.repo_id, oid, len(req.body)))
        self._fresh_lfs.add((repo.repo_id, oid))
        return Response(200)

    def commit(self, req: Request, plural, ns, name, rev) -> Response:
        """Apply an ndjson commit (header, file, lfsFile, deletedFile, deletedFolder lines) on a branch."""
        repo = self._writable_repo(req, plural, ns, name)
        branch = unquote(rev)
        if req.arg("create_pr"):
            raise HubError(400, "pull requests are not supported by the loopback hub")
        head = self._commit_at(repo, branch)
        if branch not in repo.branches:
            raise HubError(400, f"can only commit on a branch, not {branch}")
        files, ops, received, summary = dict(head.files), [], [], ""
        for line in req.body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
                parent = value.get("parentCommit")
                if parent and not head.sha.startswith(parent):
                    raise HubError(412, f"parent commit {parent} is not the head of {branch}")
                continue
            path = value["path"]
            ops.append((key, path))
            if key == "file":
                blob = Blob(base64.b64decode(value["content"]), lfs=False)
                files[path] = blob
                received.append(Upload(repo.repo_id, path, blob.git_oid, blob.size, "regular"))
            elif key == "lfsFile":
                content = repo.lfs_objects.get(value["oid"])
                if content is None:
                    raise HubError(422, f"LFS object {value['oid']} for {path} was never uploaded")
                files[path] = Blob(content, lfs=True)
                if (repo.repo_id, value["oid"]) in self._fresh_lfs:
                    self._fresh_lfs.discard((repo.repo_id, value["oid"]))
                    received.append(Upload(repo.repo_id, path, value["oid"], len(content), "lfs"))
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                for p in [p for p in files if p.startswith(prefix)]:
                    del files[p]
            else:
                raise HubError(400, f"unknown commit operation {key}")
        commit = self._add_commit(repo, branch, summary, files)
        self.uploads.extend(received)
        self.commits.append(CommitRecord(repo.repo_id, commit.sha, summary, ops))
        url = f"{self.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{commit.sha}"
        return json_response({"success": True, "commitOid": commit.sha, "commitUrl": url, "hookOutput": ""})

    def tree(self, req: Request, plural, ns, name, rev, path=None) -> Response:
        """List a folder (recursively if asked); 404 EntryNotFound for a folder that does not exist."""
        repo = self._repo(req, plural, ns, name)
        commit = self._commit_at(repo, rev)
        folder = unquote(path or "").strip("/")
        root = self._entry(commit, folder)
        if root is None or root["type"] != "directory":
            raise HubError(404, f"{folder} does not exist on {rev}", "EntryNotFound")
        recursive = req.arg("recursive") in ("1", "true", "True")
        expand = req.arg("expand") in ("1", "true", "True")
        prefix = folder + "/" if folder else ""
        children = set()
        for p in commit.files:
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix):].split("/")
            depth = len(parts) if recursive else 1
            children.update(prefix + "/".join(parts[:i]) for i in range(1, min(depth, len(parts)) + 1))
        entries = [self._entry(commit, p, expand) for p in sorted(children)]
        return json_response(sorted(entries, key=lambda e: (e["type"] != "directory", e["path"])))

    def paths_info(self, req: Request, plural, ns, name, rev) -> Response:
        repo = self._repo(req, plural, ns, name)
        commit = self._commit_at(repo, rev)
        form = parse_qs(req.body.decode())
        expand = form.get("expand", ["False"])[0] in ("1", "true", "True")
        entries = [self._entry(commit, p.strip("/"), expand) for p in form.get("paths", [])]
        return json_response([e for e in entries if e is not None])

    def resolve(self, req: Request, plural, ns, name, rev, path) -> Response:
        """Serve a file's bytes with the headers hf_hub_download reads, honouring a byte Range."""
        repo = self._repo(req, plural, ns, name)
        commit = self._commit_at(repo, rev)
        blob = commit.files.get(unquote(path))
        if blob is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        headers = {"ETag": f'"{blob.etag}"', "X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size)})
        status, body = 200, blob.content
        if req.method == "GET":
            self.reads.append((repo.repo_id, unquote(path), req.headers.get("range")))
        byte_range = _parse_range(req.headers.get("range"), blob.size)
        if byte_range is not None:
            start, end = byte_range
            if start >= blob.size:
                raise HubError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{blob.size}"})
            status, body = 206, blob.content[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{blob.size}"
        return Response(status, body, headers)

    # ------------------------------------------------------------------------------------------- dispatch

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        """Authenticate, find the route, run its handler; HubError becomes the matching HTTP answer."""
        parts = urlsplit(raw_path)
        try:
            req = Request(method, parts.path, parse_qs(parts.query), headers, body, self._user(headers))
            for route_method, pattern, handler in self.routes:
                match = pattern.fullmatch(parts.path)
                if route_method == method and match:
                    args = {k: unquote(v) if k in ("ns", "name") and v else v for k, v in match.groupdict().items()}
                    with self._lock:
                        return handler(req, **args)
            raise HubError(404, f"no loopback route for {method} {parts.path}")
        except HubError as err:
            extra = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                extra["X-Error-Code"] = err.code
            return json_response({"error": err.message}, err.status, extra)

    def _user(self, headers: dict[str, str]) -> User | None:
        """The token's user; None when no token was sent; 401 for a token the server does not know."""
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        user = self.tokens.get(auth[7:].strip())
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user


def _parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """'bytes=a-b' / 'bytes=a-' / 'bytes=-n' to an inclusive (start, end); None when absent or not understood."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (value or "").strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        return max(size - int(last), 0), size - 1
    return int(first), min(int(last), size - 1) if last else size - 1


def _handler_class(hub: LoopbackHub) -> type[BaseHTTPRequestHandler]:
    """A request handler bound to `hub`: reads the body (plain or chunked), dispatches, writes the answer."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30

        def setup(self):
            super().setup()
            with hub._lock:
                hub._sockets.add(self.connection)

        def finish(self):
            with hub._lock:
                hub._sockets.discard(self.connection)
            super().finish()

        def log_message(self, *args):  # keep test output quiet
            pass

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self):
            body = self._read_body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            response = hub.handle(self.command, self.path, headers, body)
            hub.requests.append((self.command, urlsplit(self.path).path, response.status))
            self.send_response(response.status)
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    return Handler


def closed_port_url() -> str:
    """An http://127.0.0.1 URL on a port that nothing listens on (bound then released)."""
    from helpers import free_port

    return f"http://127.0.0.1:{free_port()}"


__all__ = ["LoopbackHub", "Upload", "CommitRecord", "closed_port_url"]
