"""Model backends behind one surface (`VisionModel`) and one factory (`load_model`)."""

from .backends import BACKENDS
from .base import LOGITS, MLP, RESIDUAL, Activations, Block, Target, VisionModel
from .loader import detect_backend, load_model

__all__ = ["Activations", "BACKENDS", "Block", "LOGITS", "MLP", "RESIDUAL", "Target", "VisionModel",
           "detect_backend", "load_model"]
