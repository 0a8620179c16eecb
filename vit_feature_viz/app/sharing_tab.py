"""The "Gallery & sharing" tab: the visitor's session gallery (everything rendered or found in this session)
as a download, or pushed to a Hub dataset repo."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import gradio as gr

from ..errors import VizError
from .common import DEFAULT_REPO_NAME, AppContext, inert, on_space, session_folder, session_gallery, user_errors


class Sharing:
    """Status, download and push of the session gallery."""

    @staticmethod
    def gallery_status(session: str | None) -> str:
        from ..store.folder import GalleryFolder

        if not session or not GalleryFolder(session).exists():
            return "Your gallery is empty: render some features first."
        keys = GalleryFolder(session).keys()
        return f"Your gallery holds {len(keys)} feature(s) from {len({k[0] for k in keys})} model(s)."

    @staticmethod
    def download(fmt: str, session: str | None = None) -> str:
        """The session's gallery as one parquet file or as a zip of the dataset folder (card + shards); a symbolic
        link in the folder is refused, never followed (it would serve a file from elsewhere on the server)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ..store.shards import linked_file

        with user_errors("preparing the download"):
            folder = session_folder(session)
            if fmt == "parquet":
                files = sorted(folder.data_dir.glob("*.parquet"))
            elif fmt == "zip":
                files = [p for p in sorted(folder.path.rglob("*")) if (p.is_symlink() or not p.is_dir())
                         and not any(part.startswith(".") for part in p.relative_to(folder.path).parts)]
            else:
                raise VizError(f"Unknown download format '{fmt}': use parquet or zip.")
            problem = linked_file(folder.path, files)
            if problem is not None:
                raise VizError(f"{problem} in your gallery: a download holds only the gallery's own files, so "
                               "render into a new session (reload the page).")
            out_dir = folder.path / ".downloads"  # dot-folders are not part of the gallery, and go with the session
            out_dir.mkdir(exist_ok=True)
            out = out_dir / f"vit-feature-viz-gallery.{fmt}"
            if fmt == "parquet":
                pq.write_table(pa.concat_tables([pq.read_table(p) for p in files]), out)
            else:
                with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
                    for path in files:
                        archive.write(path, Path("vit-feature-viz-gallery") / path.relative_to(folder.path))
            return str(out)

    @staticmethod
    def push(repo_name: str, private: bool, token: str | None = None, session: str | None = None,
             oauth_token: gr.OAuthToken | None = None, profile: gr.OAuthProfile | None = None) -> str:
        """/push: the session's gallery to a Hub dataset repo, with the visitor's own token, never the server's.

        The token is the one pasted in the Token field (or sent through the API), else on a Space the visitor's
        OAuth token (the repo must then be in their namespace). Off a Space gradio's sign-in hands out the
        server's own token, so it is ignored there, and the server's HF_TOKEN is used only if its owner opts in
        with VFV_PUSH_WITH_SERVER_TOKEN=1. The token is used for this push only: never stored, logged or shown.
        """
        from ..store.hub import push_gallery

        with user_errors("pushing to the Hub"):
            gallery = session_gallery(session)  # checked once: the push takes it as it is
            name = str(repo_name or "").strip() or DEFAULT_REPO_NAME
            token = str(token or "").strip() or None
            if token is None and on_space() and oauth_token is not None and profile is not None:
                namespace, _, short = name.rpartition("/")
                if namespace and namespace != profile.username:
                    raise VizError(f"You can push only into your own namespace: use {profile.username}/{short}.")
                name, token = f"{profile.username}/{short}", oauth_token.token
            if token is None and not server_token_allowed():
                raise VizError(
                    ("Sign in with Hugging Face (button at the top) or paste a token with write access in the "
                     "Token field" if on_space() else "Paste a Hugging Face token with write access in the Token "
                     "field (this server pushes with its own token only if its owner sets "
                     "VFV_PUSH_WITH_SERVER_TOKEN=1)") + " to push."
                )
            started = time.monotonic()
            url = push_gallery(gallery, name, private=bool(private), token=token,
                               commit_message="Gallery from the vit-feature-viz app")
            return (f"Pushed {gallery.feature_count} feature(s) to [{inert(url)}]({url}) in "
                    f"{time.monotonic() - started:.0f} s.")


def server_token_allowed() -> bool:
    """Whether pushes without a visitor's token may use the server's own (its owner's opt-in, never on a Space)."""
    return not on_space() and os.environ.get("VFV_PUSH_WITH_SERVER_TOKEN", "").strip() == "1"


def build(ctx: AppContext) -> Sharing:
    """The "Gallery & sharing" tab inside the open gr.Tabs; its status is refreshed whenever it is opened."""
    sharing = Sharing()
    with gr.Tab("Gallery & sharing") as tab:
        with gr.Row(equal_height=True):
            status = gr.Markdown("Your gallery is empty: render some features first.")
            explore = gr.Button("Open in Explore", scale=0, min_width=160, elem_id="sharing-open-in-explore")
        with gr.Row():
            fmt = gr.Radio(["parquet", "zip"], value="parquet", label="Download as")
            download = gr.Button("Prepare download")
        file = gr.File(label="Download", interactive=False)
        with gr.Row():
            repo_name = gr.Textbox(DEFAULT_REPO_NAME, label="Dataset repo (name or you/name)")
            token = gr.Textbox(label="Token", type="password", placeholder="hf_…", elem_id="push-token",
                               info="A Hugging Face token with write access, used for this push only, never stored")
        with gr.Row():
            private = gr.Checkbox(False, label="Private")
            push = gr.Button("Push to the Hub", variant="primary")
        pushed = gr.Markdown(
            ("Sign in with Hugging Face above, or paste a token, to push into your own namespace." if on_space()
             else "Paste a token to push." if not server_token_allowed()
             else "Pushes use your token if you paste one, else this server's own Hugging Face token.")
        )

    tab.select(sharing.gallery_status, [ctx.session], [status], api_visibility="private", queue=False)
    download.click(sharing.download, [fmt, ctx.session], [file], api_visibility="private")
    push.click(sharing.push, [repo_name, private, token, ctx.session], [pushed], api_name="push")
    if ctx.open_in_explore is not None:  # renders, dataset examples and analyses: all of it, browsable
        ctx.open_in_explore(explore)
    return sharing
