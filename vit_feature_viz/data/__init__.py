"""Data shipped with the package: the MACO magnitude spectrum, the procedural shapes set and the trained fixtures."""

from .shapes import CUE_CONFLICT, SHAPE_CLASSES, VARIANTS, ShapeSet, generate_cue_conflict, generate_shapes, shapes_dataset

__all__ = ["CUE_CONFLICT", "SHAPE_CLASSES", "VARIANTS", "ShapeSet", "generate_cue_conflict", "generate_shapes",
           "shapes_dataset"]
