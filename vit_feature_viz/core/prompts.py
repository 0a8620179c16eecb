"""Text prompts: maximize the cosine between a CLIP's image embedding and its text tower's embedding of a prompt.

"What does the model picture for these words", the inverse of naming features with words. Two sites:

- `prompt`: the checkpoint's own image embedding (the last block through the final norm, pooling and projection);
- `prompt-cls`: a block's CLS token through the same final norm and projection, the paper's layer-wise view.

Several prompts render like several channels (feature k is prompt k); a negative prompt's cosine is subtracted
from every one. The name saved in a gallery row holds the texts (JSON-quoted), so the row says how to render it
again and Explore shows them in the caption: `prompt("a red disc" - "a blue square")`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import VizError
from ..models.base import RESIDUAL, Target
from .objectives import Channel

MAX_PROMPT_CHARS = 300  # far beyond any CLIP context; a longer text is a paste gone wrong


def prompt_texts(prompts: str | Sequence[str] | None) -> list[str]:
    """The prompts as a list of non-empty texts; none at all is a one-line VizError."""
    texts = [prompts] if isinstance(prompts, str) else list(prompts or [])
    texts = [" ".join(str(t).split()) for t in texts]
    if not texts or not all(texts):
        raise VizError("The prompt is empty", option="prompt", fix='give {option} a text, e.g. "a red disc".')
    for text in texts:
        if len(text) > MAX_PROMPT_CHARS:
            raise VizError(f"The prompt is {len(text)} characters long", option="prompt", value=text[:40] + "...",
                           fix=f"give {{option}} at most {MAX_PROMPT_CHARS} characters.")
    return texts


class Prompt(Channel):
    """Cosine of the image embedding with each prompt's text embedding (minus the negative prompt's)."""

    kind = RESIDUAL
    name = "prompt"
    cls_only = False  # the final image embedding; PromptCls reads a block's CLS instead

    def __init__(self, layer: int | None, prompts: str | Sequence[str] | None = None, *,
                 negative_prompt: str | None = None):
        super().__init__(layer)
        self.prompts = prompt_texts(prompts) if prompts is not None else []  # none yet: check() asks for one
        self.negative_prompt = " ".join(str(negative_prompt or "").split()) or None
        quoted = " | ".join(json.dumps(t, ensure_ascii=False) for t in self.prompts)
        if self.negative_prompt:
            quoted += " - " + json.dumps(self.negative_prompt, ensure_ascii=False)
        self.name = f"{type(self).name}({quoted})"
        self._head = self._texts = self._negative = None

    def num_channels(self, model) -> int:
        return max(1, len(self.prompts))

    def check(self, model) -> None:
        """Binds the model: its final norm and projection, and the prompts' unit text embeddings."""
        from ..models.clip_head import ClipImageHead
        from ..models.text import ClipText

        head = ClipImageHead(model)  # a model without a text tower stops here, with the fix
        prompt_texts(self.prompts)  # the objective by name alone (make_objective("prompt")) has no text yet
        if not self.cls_only:
            self.layer = model.num_layers - 1
        model.check_layer(self.layer)
        self.needs = frozenset({self.target})
        encoder = ClipText(model)
        texts = encoder.encode(self.prompts + ([self.negative_prompt] if self.negative_prompt else []))
        self._head = head
        self._texts, self._negative = texts[: len(self.prompts)], texts[len(self.prompts):]

    def embedding(self, acts) -> torch.Tensor:
        """[B, D] unit image embeddings at this objective's site."""
        if self._head is None:
            raise RuntimeError("Prompt.check(model) binds the model before the prompt can be scored")
        return F.normalize(self._head(acts[self.target].float(), cls_only=self.cls_only).float(), dim=-1)

    def _scores(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosines of unit embeddings [..., D] with every prompt, minus the negative prompt's: [..., K]."""
        scores = embeddings @ self._texts.to(embeddings.device).T
        if len(self._negative):
            scores = scores - embeddings @ self._negative.to(embeddings.device).T
        return scores

    def values(self, acts) -> torch.Tensor:
        return self._scores(self.embedding(acts))

    def patch_values(self, acts):
        """Each patch token through the final norm and projection on its own, scored like the image: where in
        the image the block already says the prompt (the patch map of a prompt's rendering)."""
        if self._head is None:
            raise RuntimeError("Prompt.check(model) binds the model before the prompt can be scored")
        tokens = acts.patches(self.target).float()
        return self._scores(F.normalize(self._head.each_token(tokens).float(), dim=-1))


class PromptCls(Prompt):
    """The layer-wise view: block `layer`'s CLS token through the final norm and projection."""

    name = "prompt-cls"
    cls_only = True

    def __init__(self, layer: int | None, prompts=None, *, negative_prompt: str | None = None):
        if layer is None:
            raise VizError("prompt-cls reads one block's CLS token", option="layer", fix="pass {option:pass}.")
        super().__init__(layer, prompts, negative_prompt=negative_prompt)


PROMPT_OBJECTIVES = {"prompt": Prompt, "prompt-cls": PromptCls}


def prompt_objective(name: str, layer: int | None, prompts, negative_prompt: str | None = None) -> Prompt:
    """`name` ("prompt" or "prompt-cls") for these prompts."""
    return PROMPT_OBJECTIVES[name](layer, prompts, negative_prompt=negative_prompt)


def prompt_lines(text) -> list[str] | None:
    """The app's prompt box: one prompt a line; None when it holds no text (no prompt asked)."""
    lines = [line.strip() for line in str(text or "").splitlines()]
    return [line for line in lines if line] or None


def site_layer(objective, model, layer: int | None) -> int | None:
    """The block a gallery row should name: the last one for `prompt` (the image embedding is read there, whatever
    layer was asked), the asked one otherwise."""
    base = getattr(objective, "base", objective)
    if isinstance(base, Prompt) and not base.cls_only:
        return model.num_layers - 1
    return layer
