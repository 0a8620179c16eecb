"""A fixed-size buffer of activation tokens, so training memory does not grow with the dataset.

Images arrive in dataset order, and consecutive tokens of one image are alike: training on them in that order
would make each step see one image. The buffer keeps a random sample of patch tokens from every image; once it
is full, half of it (drawn at random) is handed out as shuffled training batches and its slots are refilled, so
every batch mixes tokens of many images, and at most `capacity` tokens are ever held.
"""

from __future__ import annotations

import torch


class ActivationBuffer:
    def __init__(self, capacity: int, width: int, *, seed: int = 0):
        self.capacity = int(capacity)
        self.tokens = torch.empty(self.capacity, width)
        self.filled = 0
        self.generator = torch.Generator().manual_seed(seed)

    def sample_patches(self, patches: torch.Tensor, per_image: int) -> torch.Tensor:
        """`per_image` random patch tokens of each image of [B, P, C] (all of them when P <= per_image): [N, C]."""
        batch, count, width = patches.shape
        if per_image >= count:
            return patches.reshape(-1, width)
        order = torch.rand(batch, count, generator=self.generator).argsort(1)[:, :per_image]
        return patches.gather(1, order.unsqueeze(-1).expand(-1, -1, width)).reshape(-1, width)

    def add(self, tokens: torch.Tensor, batch_size: int):
        """Store tokens [N, C]; yields training batches each time the buffer fills (so the caller trains between
        adds, and the buffer never holds more than its capacity)."""
        tokens = tokens.detach().float().cpu()
        while len(tokens):
            room = self.capacity - self.filled
            taken, tokens = tokens[:room], tokens[room:]
            self.tokens[self.filled : self.filled + len(taken)] = taken
            self.filled += len(taken)
            if self.filled == self.capacity:
                yield from self._drain(self.capacity // 2, batch_size)

    def flush(self, batch_size: int):
        """The end of the data: hand out every token left."""
        yield from self._drain(self.filled, batch_size)

    def _drain(self, count: int, batch_size: int):
        order = torch.randperm(self.filled, generator=self.generator)
        out, kept = order[:count], order[count:]
        handed = self.tokens[out].clone()
        self.tokens[: len(kept)] = self.tokens[kept].clone()
        self.filled = len(kept)
        for start in range(0, len(handed), batch_size):
            yield handed[start : start + batch_size]

    def state_dict(self) -> dict:
        return {"tokens": self.tokens[: self.filled].clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        tokens = state["tokens"]
        self.tokens[: len(tokens)] = tokens
        self.filled = len(tokens)
        self.generator.set_state(state["generator"])
