"""What browsing a gallery hands out: a row's cheap columns (`Entry`), a feature's visualizations and top
examples with their images, and everything a feature's page shows (`FeaturePage`). Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

@dataclass(frozen=True)
class Entry:
    """One gallery row's cheap columns, plus where its images are stored (shard, row group, row)."""

    model_id: str
    layer: int
    feature: int
    objective: str
    recipe: str | None
    steps: int | None
    seed: int | None
    image_size: int | None
    activation: float | None
    activation_init: float | None
    dataset: str | None
    top_scores: tuple[float, ...]
    top_indices: tuple[int, ...]
    concept_names: tuple[str, ...]
    shard: int
    row_group: int
    row: int

    @property
    def rendered(self) -> bool:
        """Whether the row holds a visualization (rows written by a dataset scan alone have no activation)."""
        return self.activation is not None


@dataclass
class Visualization:
    """One optimized image of a feature (one per objective in the gallery), where the feature fires in it, and
    the row it comes from (objective, recipe, steps, activations)."""

    row: Entry
    image: Image.Image | None
    patch_map: Image.Image | None

    @property
    def caption(self) -> str:
        """Short enough to show whole under a thumbnail; how it was made is in `made_with` (the page's table)."""
        row = self.row
        return " · ".join(p for p in (row.objective, f"{row.activation:.3g}" if row.activation is not None else None)
                          if p)

    @property
    def made_with(self) -> str:
        row = self.row
        return ", ".join(p for p in (f"recipe {row.recipe}" if row.recipe else None,
                                     f"{row.steps} steps" if row.steps else None) if p)


@dataclass
class TopExample:
    """A dataset image among the feature's top activators, with its patch map when the gallery has one."""

    rank: int
    score: float | None
    index: int | None
    image: Image.Image
    patch_map: Image.Image | None

    @property
    def caption(self) -> str:
        score = f" · {self.score:.3f}" if self.score is not None else ""
        row = f" · row {self.index}" if self.index is not None else ""
        return f"#{self.rank}{row}{score}"


@dataclass
class FeaturePage:
    """Everything a feature's page shows; `link_params` are its deep-link query parameters."""

    source: str
    model_id: str
    layer: int
    feature: int
    visualizations: list[Visualization]
    examples: list[TopExample]
    dataset: str | None
    stats: dict[str, Any]
    concept_names: list[str]
    previous: int | None
    next: int | None
    link_params: dict[str, str] = field(default_factory=dict)


def entry_of(values: dict, shard: int, group: int, row: int) -> Entry:
    return Entry(
        model_id=str(values["model_id"]), layer=int(values["layer"]), feature=int(values["feature"]),
        objective=str(values["objective"]), recipe=values.get("recipe"), steps=values.get("steps"),
        seed=values.get("seed"), image_size=values.get("image_size"), activation=values.get("activation"),
        activation_init=values.get("activation_init"), dataset=values.get("dataset"),
        top_scores=tuple(values.get("top_scores") or ()), top_indices=tuple(values.get("top_indices") or ()),
        concept_names=tuple(str(n) for n in values.get("concept_names") or ()),
        shard=shard, row_group=group, row=row,
    )
