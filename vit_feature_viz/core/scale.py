"""Splitting work across processes with accelerate (`accelerate launch -m vit_feature_viz ...`).

A single plain process is the one-process case of the same code, so a multi-process run equals a single one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..device import accelerate_state


@dataclass
class Workers:
    """This process's place among the launched ones."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, items: list) -> list:
        """Round-robin share of `items`: balanced, and the same split in every process."""
        return items[self.rank :: self.world]

    def barrier(self) -> None:
        if self.world > 1:
            accelerate_state().wait_for_everyone()

    def gather(self, obj) -> list:
        """Every process's `obj`, in rank order (on every process)."""
        if self.world == 1:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])


def current_workers() -> Workers:
    """This process's rank and the number of processes, as accelerate sees the launch (1 process when not launched)."""
    state = accelerate_state()
    return Workers(state.process_index, state.num_processes)
