"""The "Gallery & sharing" tab: the visitor's session gallery (everything rendered or found in this session)
as a download, or pushed to a Hub dataset repo."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import gradio as gr

from ..errors import VizError
from .common import DEFAULT_REPO_NAME, AppContext, on_space, session_folder, user_errors


class Sharing:
    """Status, download and push of the session gallery."""

    @staticmethod
    def gallery_status(session: str | None) -> str:
        from ..gallery import GalleryFolder

        if not session or not GalleryFolder(session).exists():
            return "Your gallery is empty: render some features first."
        keys = GalleryFolder(session).keys()
        return f"Your gallery holds {len(keys)} feature(s) from {len({k[0] for k in keys})} model(s)."

    @staticmethod
    def download(fmt: str, session: str | None = None) -> str:
        """The session's gallery as one parquet file or as a zip of the dataset folder (card + shards)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with user_errors("preparing the download"):
            folder = session_folder(session)
            out_dir = folder.path / ".downloads"  # dot-folders are not part of the gallery, and go with the session
            out_dir.mkdir(exist_ok=True)
            if fmt == "parquet":
                out = out_dir / "vit-feature-viz-gallery.parquet"
                shards = sorted(folder.data_dir.glob("*.parquet"))
                pq.write_table(pa.concat_tables([pq.read_table(p) for p in shards]), out)
            elif fmt == "zip":
                out = out_dir / "vit-feature-viz-gallery.zip"
                with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
                    for path in sorted(folder.path.rglob("*")):
                        relative = path.relative_to(folder.path)
                        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                            archive.write(path, Path("vit-feature-viz-gallery") / relative)
            else:
                raise VizError(f"Unknown download format '{fmt}': use parquet or zip.")
            return str(out)

    @staticmethod
    def push(repo_name: str, private: bool, session: str | None = None,
             oauth_token: gr.OAuthToken | None = None, profile: gr.OAuthProfile | None = None) -> str:
        """Push the session's gallery to a Hub dataset repo.

        On a Space the visitor's own OAuth token is used (never the Space's secrets) and the repo must be in
        their namespace. Locally huggingface_hub's usual token (HF_TOKEN or `hf auth login`) is used.
        """
        from ..hub import push_gallery

        with user_errors("pushing to the Hub"):
            folder = session_folder(session)
            name = str(repo_name or "").strip() or DEFAULT_REPO_NAME
            token = None
            if on_space():
                if oauth_token is None or profile is None:
                    raise VizError("Sign in with Hugging Face (button at the top) to push into your own namespace.")
                namespace, _, short = name.rpartition("/")
                if namespace and namespace != profile.username:
                    raise VizError(f"You can push only into your own namespace: use {profile.username}/{short}.")
                name, token = f"{profile.username}/{short}", oauth_token.token
            started = time.monotonic()
            try:
                url = push_gallery(folder.path, name, private=bool(private), token=token,
                                   commit_message="Gallery from the vit-feature-viz Space")
            except VizError as err:  # visitors know their gallery, not the server folder that holds it
                raise VizError(str(err).replace(f"the local gallery in {folder.path}", "your gallery")) from None
            return f"Pushed {len(folder.keys())} feature(s) to [{url}]({url}) in {time.monotonic() - started:.0f} s."


def build(ctx: AppContext) -> Sharing:
    """The "Gallery & sharing" tab inside the open gr.Tabs; its status is refreshed whenever it is opened."""
    sharing = Sharing()
    with gr.Tab("Gallery & sharing") as tab:
        status = gr.Markdown("Your gallery is empty: render some features first.")
        with gr.Row():
            fmt = gr.Radio(["parquet", "zip"], value="parquet", label="Download as")
            download = gr.Button("Prepare download")
        file = gr.File(label="Download", interactive=False)
        with gr.Row():
            repo_name = gr.Textbox(DEFAULT_REPO_NAME, label="Dataset repo (name or you/name)")
            private = gr.Checkbox(False, label="Private")
            push = gr.Button("Push to the Hub", variant="primary")
        pushed = gr.Markdown(
            "Sign in with Hugging Face above to push into your own namespace." if ctx.show_login
            else "Pushes use your local Hugging Face token (HF_TOKEN or `hf auth login`)."
        )

    tab.select(sharing.gallery_status, [ctx.session], [status], api_visibility="private", queue=False)
    download.click(sharing.download, [fmt, ctx.session], [file], api_visibility="private")
    push.click(sharing.push, [repo_name, private, ctx.session], [pushed], api_visibility="private")
    return sharing
