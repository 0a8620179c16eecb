"""Data shipped with the package: the MACO magnitude spectrum, the procedural shapes set and the trained fixtures."""

from .shapes import SHAPE_CLASSES, VARIANTS, ShapeSet, generate_shapes, shapes_dataset

__all__ = ["SHAPE_CLASSES", "VARIANTS", "ShapeSet", "generate_shapes", "shapes_dataset"]
