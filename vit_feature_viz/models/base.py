"""The one model surface every backend provides: blocks, hook points, preprocessing, forward-until.

Backends only say how to call their vision tower and where it lives; finding blocks, hooking them and stopping
the forward pass early is done here, from the structure of the module tree, so module renames in a library
(transformers 5 renamed `encoder.layer.N.intermediate.dense` to `layers.N.mlp.fc1`) do not break us.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from PIL import Image
from torch import nn

from ..device import autocast
from ..errors import VizError
from ..images import fit_square, pil_to_uint8, to_rgb

MLP, RESIDUAL, LOGITS = "mlp", "residual", "logits"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def as_int(value) -> int:
    """Configs give sizes as 224, [224, 224] or (224, 224)."""
    return int(value[0] if isinstance(value, (list, tuple)) else value)


@dataclass(frozen=True)
class Block:
    """One transformer block of the vision tower, as found in the module tree."""

    index: int
    name: str  # module path of the block in the loaded model
    mlp_out: str  # module path of the MLP's contracting linear (fc2 / c_proj): its *input* is the post-GELU hidden
    features: int  # MLP hidden width (4x the model width for most ViTs)


@dataclass(frozen=True)
class Target:
    """An activation an objective needs: the MLP hidden or the block output of a layer, or the class logits."""

    kind: str
    layer: int | None = None


@dataclass
class Activations:
    """Captured activations, batch-first: [B, tokens, C] with prefix tokens (CLS, registers) first; logits [B, K]."""

    tensors: dict[Target, torch.Tensor]
    num_prefix: int
    grid: tuple[int, int]

    def __getitem__(self, target: Target) -> torch.Tensor:
        return self.tensors[target]

    def patches(self, target: Target) -> torch.Tensor:
        """Patch tokens only: [B, grid_h * grid_w, C]."""
        return self.tensors[target][:, self.num_prefix :]


class NotTransformerError(VizError):
    """The checkpoint loaded but has no transformer blocks (a CNN): callers that also accept CNNs catch this."""


class _StopForward(Exception):
    """Raised from a hook once every needed activation is stored: nothing after the target layer is computed."""


@dataclass
class VisionModel:
    """A loaded ViT/CLIP vision tower with what the renderer needs to know about it.

    Backends subclass it and implement `_forward(pixels, interpolate)` (normalized pixels in, model output out)
    and, for classifiers, `_logits(output)`.
    """

    model_id: str
    backend: str
    module: nn.Module  # everything that was loaded (a full CLIPModel keeps its text tower)
    tower: nn.Module  # the vision tower whose blocks are visualized
    image_size: int
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hidden_size: int
    num_classes: int = 0
    is_clip: bool = False
    can_interpolate: bool = True
    sequence_first: bool = False  # tokens come [T, B, C] (older open_clip); flipped to batch-first on capture
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    blocks: list[Block] = field(default_factory=list)
    # The checkpoint's own eval resize/crop (its library's pipeline minus normalization): RGB PIL -> [3, S, S] in
    # [0, 1]; None falls back to a bicubic shorter-side resize and centre crop.
    pixel_pipeline: Callable | None = field(default=None, repr=False)
    # The size the position embeddings were made for (the config's image_size); `image_size` becomes the size the
    # checkpoint's own pipeline feeds it, which can be smaller (DINOv2: 518 in the config, 224 from its processor).
    native_size: int = 0

    def __post_init__(self):
        self.native_size = self.native_size or self.image_size
        self.image_size = self._used_size()
        if not self.blocks:
            self.blocks = find_blocks(self.module, self.tower)
        if not self.blocks:
            raise NotTransformerError(
                f"'{self.model_id}' has no transformer blocks with an MLP: pick a ViT or CLIP checkpoint "
                "(e.g. google/vit-base-patch16-224)."
            )
        self.module.eval().requires_grad_(False)  # gradients are only needed for the image
        self.module.to(self.device)
        self._modules = dict(self.module.named_modules())
        if not self.hidden_size:  # the MLP's contracting linear writes back to the model width
            self.hidden_size = self._modules[self.blocks[0].mlp_out].out_features
        self._mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)

    def _used_size(self) -> int:
        """The side the checkpoint's pipeline hands the model, where it differs from the config's and the model can
        take it: rendering at the config's 518 px would cost DINOv2 over 5x the tokens of the 224 px it is used at."""
        if self.pixel_pipeline is None:
            return self.image_size
        try:
            probe = self.pixel_pipeline(Image.new("RGB", (self.native_size, self.native_size), (128, 128, 128)))
        except Exception:  # noqa: BLE001 - an odd pipeline keeps the config's size (preprocess falls back as well)
            return self.image_size
        shape = tuple(getattr(probe, "shape", ()))
        if len(shape) != 3 or shape[1] != shape[2] or shape[1] % self.patch_size:
            return self.image_size
        if shape[1] != self.native_size and not self.can_interpolate:
            return self.image_size
        return int(shape[1])

    # --- what the model is -------------------------------------------------------------------------------
    @property
    def has_text_tower(self) -> bool:
        """True for a full CLIP checkpoint, whose text tower names features with words (a CLIPVision model is CLIP
        without one)."""
        return ((self.backend == "transformers" and hasattr(self.module, "get_text_features"))
                or (self.backend == "open_clip" and hasattr(self.module, "encode_text")))

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def check_layer(self, layer: int) -> Block:
        if not 0 <= layer < self.num_layers:
            raise VizError(
                f"Layer {layer} is out of range: '{self.model_id}' has {self.num_layers} blocks, use 0-{self.num_layers - 1}."
            )
        return self.blocks[layer]

    def width(self, target: Target) -> int:
        """Number of channels an objective can pick from at this target."""
        if target.kind == MLP:
            return self.check_layer(target.layer).features
        if target.kind == RESIDUAL:
            self.check_layer(target.layer)
            return self.hidden_size
        if target.kind == LOGITS:
            if not self.num_classes:
                raise VizError(f"'{self.model_id}' has no classification head", option="objective",
                               fix="{option:use} feature, or a classifier checkpoint for logits.")
            return self.num_classes
        raise ValueError(target.kind)

    def describe(self) -> dict:
        """What `vit-feature-viz layers --json` prints."""
        return {
            "model_id": self.model_id,
            "backend": self.backend,
            "image_size": self.image_size,
            "native_size": self.native_size,
            "patch_size": self.patch_size,
            "hidden_size": self.hidden_size,
            "num_classes": self.num_classes,
            "is_clip": self.is_clip,
            "text_tower": self.has_text_tower,
            "layers": [{"index": b.index, "name": b.name, "features": b.features} for b in self.blocks],
        }

    def check_image_size(self, size: int | None) -> int:
        size = self.image_size if size is None or size == 0 else size
        if size < self.patch_size:
            raise VizError(f"Image size {size} is too small: use at least {self.patch_size} (the patch size), e.g. {self.image_size}.")
        if size % self.patch_size:
            raise VizError(f"Image size {size} is not a multiple of the patch size {self.patch_size}: pick e.g. {self.image_size}.")
        if size != self.native_size and not self.can_interpolate:
            raise VizError(f"'{self.model_id}' ({self.backend}) cannot change its input size", option="image_size",
                           value=size, fix=f"{{option:use}} {self.image_size}.")
        largest = max(self.image_size * 2, self.native_size)
        if size > largest:
            raise VizError(f"Image size {size} is too large for a {self.image_size}px model: use at most {largest}.")
        return size

    # --- preparing images -----------------------------------------------------------------------------------
    def preprocess(self, image) -> torch.Tensor:
        """A PIL image as this checkpoint's own pipeline prepares it (transformers' image processor, timm's data
        config, open_clip's preprocess): [3, S, S] floats in [0, 1], S = `image_size`. Normalization stays in
        `activations`, so the result is also the picture to show. A pipeline that does not give an S x S image
        (a processor that resizes without cropping) falls back to the bicubic shorter-side resize + centre crop."""
        image = to_rgb(image)
        if self.pixel_pipeline is not None:
            pixels = torch.as_tensor(self.pixel_pipeline(image)).float()
            if tuple(pixels.shape) == (3, self.image_size, self.image_size):
                return pixels.clamp(0, 1)
        return pil_to_uint8(fit_square(image, self.image_size)).float() / 255

    def preprocess_uint8(self, image) -> torch.Tensor:
        """`preprocess` as [3, S, S] uint8 (a quarter of the memory; exact for pipelines that resize 8-bit images)."""
        return (self.preprocess(image) * 255).round().to(torch.uint8)

    # --- running it ------------------------------------------------------------------------------------------
    def autocast(self):
        return autocast(self.device, self.precision)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self._mean) / self._std

    def activations(self, images: torch.Tensor, targets: Iterable[Target]) -> Activations:
        """Run the tower on images in [0, 1] ([B, 3, H, W]) and return the targets, stopping at the last one.

        Gradients flow back to `images`; nothing after the deepest needed block is computed unless logits are
        needed.
        """
        targets = set(targets)
        for t in targets:
            self.width(t)
        batch, size = images.shape[0], images.shape[-1]
        stored: dict[Target, torch.Tensor] = {}
        hooked = [t for t in targets if t.kind != LOGITS]
        stop_early = LOGITS not in {t.kind for t in targets}
        handles = []

        def store(target: Target, tensor: torch.Tensor):
            if self.sequence_first and tensor.shape[0] != batch:
                tensor = tensor.transpose(0, 1)
            stored[target] = tensor
            if stop_early and len(stored) == len(hooked):
                raise _StopForward

        for t in hooked:
            block = self.blocks[t.layer]
            if t.kind == MLP:
                hook = lambda _m, args, t=t: store(t, args[0])  # noqa: E731
                handles.append(self._modules[block.mlp_out].register_forward_pre_hook(hook))
            else:
                hook = lambda _m, _args, out, t=t: store(t, out[0] if isinstance(out, tuple) else out)  # noqa: E731
                handles.append(self._modules[block.name].register_forward_hook(hook))
        output = None
        try:
            with self.autocast():
                output = self._forward(self.normalize(images.to(self.device)), size != self.native_size)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        if LOGITS in {t.kind for t in targets}:
            stored[Target(LOGITS)] = self._logits(output)
        grid = size // self.patch_size
        tokens = next((v.shape[1] for k, v in stored.items() if k.kind != LOGITS), grid * grid)
        return Activations(stored, num_prefix=tokens - grid * grid, grid=(grid, grid))

    def _forward(self, pixels: torch.Tensor, interpolate: bool):
        raise NotImplementedError

    def _logits(self, output) -> torch.Tensor:
        raise VizError(f"'{self.model_id}' has no classification head", option="objective", fix="{option:use} feature.")


def without_normalize(transform) -> Callable:
    """A torchvision Compose (timm's and open_clip's eval transforms) minus its Normalize: resize, crop, [0, 1]."""
    from torchvision import transforms

    return transforms.Compose([t for t in transform.transforms if not isinstance(t, transforms.Normalize)])


def normalize_of(transform) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) of the Normalize in a torchvision Compose, the values its pipeline really uses."""
    from torchvision import transforms

    for t in transform.transforms:
        if isinstance(t, transforms.Normalize):
            return tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
    return None


def find_blocks(root: nn.Module, tower: nn.Module) -> list[Block]:
    """The transformer blocks of `tower`: the longest module list whose every child holds attention and one MLP.

    An MLP is recognised by its contracting linear (in_features > out_features == model width); the input of
    that linear is the post-activation hidden the paper visualizes. Attention projections never contract. A
    ConvNeXt stage has the MLP but no attention: without that check it would pass for a ViT until rendering.
    """
    prefix = {id(m): name for name, m in root.named_modules()}
    best: list[Block] = []
    for module in tower.modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) <= len(best):
            continue
        blocks = []
        for index, child in enumerate(module):
            contracting = [
                m for m in child.modules() if isinstance(m, nn.Linear) and m.in_features > m.out_features
            ]
            if len(contracting) != 1 or not _has_attention(child):
                break
            fc2 = contracting[0]
            blocks.append(Block(index, prefix[id(child)], prefix[id(fc2)], fc2.in_features))
        else:
            if blocks:
                best = blocks
    return best


def _has_attention(block: nn.Module) -> bool:
    """Attention projects with square linears (q, k, v, out), a fused 3x qkv, or nn.MultiheadAttention."""
    return any(
        isinstance(m, nn.MultiheadAttention)
        or (isinstance(m, nn.Linear) and m.out_features in (m.in_features, 3 * m.in_features))
        for m in block.modules()
    )
