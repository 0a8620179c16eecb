"""Images handed to gradio are written once, atomically, so a browser never fetches a half-written file.

Gradio stores each PIL image an output returns under the hash of its encoded bytes, but rewrites that file in
place every time the image is returned again: a streaming render returns its finished images on every update,
and the Explore tab returns the same pictures on every click. A browser still fetching the previous update's copy
then reads a file that is being truncated and written (uvicorn: "Too much data for declared Content-Length"),
and the image breaks. Gradio's own copies of *files* are already written under a temporary name and renamed
into place; `serve_images_atomically` gives images the same treatment.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gradio import processing_utils


def save_pil_to_cache_once(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """gradio's save_pil_to_cache, except that a file already there is never rewritten (same name means same
    bytes: the folder is their hash) and a new one appears whole (written aside, then renamed)."""
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    if path.exists():
        try:  # gradio's delete_cache ages files by ctime: a copy handed out again must not expire early
            os.utime(path)
        except OSError:
            pass
        return str(path)
    fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(path)


def serve_images_atomically() -> None:
    """Route gradio's image caching (Image, Gallery, AnnotatedImage outputs) through save_pil_to_cache_once."""
    processing_utils.save_pil_to_cache = save_pil_to_cache_once
