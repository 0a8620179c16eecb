"""Images as grids of patches, for occlusion and shuffling: which patches to drop (per image, reproducibly), the
foreground share of each patch, masking patches in pixels, dropping them as tokens, and shuffling tiles.

Random choices are seeded by each image's own pixels, so every model sees the same patches dropped (on the same
grid) and the same tiles shuffled, and a resumed run draws what an uninterrupted one would have drawn.
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from PIL import Image

RANDOM, FOREGROUND_FIRST, BACKGROUND_FIRST = "random", "foreground-first", "background-first"
ORDERS = (RANDOM, FOREGROUND_FIRST, BACKGROUND_FIRST)


def image_seed(image: Image.Image, salt: int = 0) -> int:
    """A seed from the image's pixels (and `salt`, e.g. the grid size)."""
    return zlib.crc32(image.tobytes(), zlib.crc32(f"{image.size}-{salt}".encode()))


def drop_order(seeds: list[int], cells: int, order: str = RANDOM, foreground: torch.Tensor | None = None) -> torch.Tensor:
    """[B, cells] patch indices in the order they are dropped: at random, or the patches most covered by the
    object first (foreground-first) or last (background-first), ties in random order. `foreground`: [B, cells]
    share of each patch inside the box or mask."""
    ranks = torch.stack([torch.rand(cells, generator=torch.Generator().manual_seed(seed)) for seed in seeds])
    by_rank = ranks.argsort(dim=1)
    if order == RANDOM:
        return by_rank
    share = foreground.float().gather(1, by_rank)
    by_share = share.argsort(dim=1, descending=order == FOREGROUND_FIRST, stable=True)
    return by_rank.gather(1, by_share)


def foreground_share(masks: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, grid * grid] fraction of each patch that is object, from masks [B, 1, S, S] in [0, 1]."""
    return F.adaptive_avg_pool2d((masks > 0.5).float(), grid).flatten(1)


def cell_of_pixel(size: int, grid: int, device=None) -> torch.Tensor:
    """[S, S] index of the grid cell each pixel falls in (equal cells when `grid` divides `size`)."""
    line = torch.arange(size, device=device) * grid // size
    return line[:, None] * grid + line[None, :]


def mask_cells(images: torch.Tensor, grid: int, dropped: torch.Tensor, fill: float) -> torch.Tensor:
    """Images [B, 3, S, S] with the cells `dropped` ([B, k] indices on a grid x grid) set to `fill`."""
    cells = torch.zeros(images.shape[0], grid * grid, dtype=torch.bool, device=images.device)
    cells.scatter_(1, dropped.to(images.device), True)
    hidden = cells[:, cell_of_pixel(images.shape[-1], grid, images.device)]  # [B, S, S]
    return images.masked_fill(hidden[:, None], fill)


def keep_tokens(tokens: torch.Tensor, num_prefix: int, dropped: torch.Tensor) -> torch.Tensor:
    """The sequence [B, T, C] without the patch tokens `dropped` ([B, k]); prefix tokens always stay. Position
    embeddings were added before, so the kept patches keep their positions."""
    prefix, patches = tokens[:, :num_prefix], tokens[:, num_prefix:]
    gone = torch.zeros(patches.shape[:2], dtype=torch.bool, device=tokens.device)
    gone.scatter_(1, dropped.to(tokens.device), True)
    kept = (~gone).nonzero()[:, 1].view(patches.shape[0], -1)  # same count per image, in sequence order
    return torch.cat([prefix, patches.gather(1, kept[..., None].expand(-1, -1, patches.shape[-1]))], dim=1)


def shuffle_tiles(images: torch.Tensor, grid: int, permutations: torch.Tensor) -> torch.Tensor:
    """Images [B, 3, S, S] cut into a grid x grid of equal tiles, tile i of the result being tile
    permutations[b, i] of the input. When `grid` does not divide S, the strip of S mod grid pixels on the right
    and bottom stays in place."""
    batch, channels, size = images.shape[0], images.shape[1], images.shape[-1]
    tile = size // grid
    region = tile * grid
    tiles = (images[..., :region, :region].reshape(batch, channels, grid, tile, grid, tile)
             .permute(0, 2, 4, 1, 3, 5).reshape(batch, grid * grid, channels, tile, tile))
    index = permutations.to(images.device)[:, :, None, None, None].expand_as(tiles)
    moved = (tiles.gather(1, index).reshape(batch, grid, grid, channels, tile, tile)
             .permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, region, region))
    out = images.clone()
    out[..., :region, :region] = moved
    return out


def tile_permutations(seeds: list[int], grid: int) -> torch.Tensor:
    """[B, grid * grid] a random permutation of the tiles per image."""
    return torch.stack([torch.randperm(grid * grid, generator=torch.Generator().manual_seed(seed)) for seed in seeds])
