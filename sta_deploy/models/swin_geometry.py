"""Index arithmetic for Video Swin windows and for STA's nearest-kept fill (no parameters).

Every window attention in :mod:`sta_deploy.models.swin` runs on the output of ONE gather: the
index it gathers with folds together (1) the nearest-kept fill of pruned positions, (2) the zero
padding of the grid up to a multiple of the window, (3) the cyclic shift of shifted blocks and
(4) the window partition.  The static part of that index (2-4) depends only on the geometry and
is built here once per block; the data-dependent part (1) is one more gather per stage.

The conventions are torchvision's ``swin3d`` (identical to the original Video Swin code):

* a window axis longer than or equal to the grid axis is clamped to the grid and not shifted;
* the grid is padded at the end of each axis up to a multiple of the window, with zero vectors
  *after* ``norm1`` (so a padded slot's query/key/value is the qkv bias);
* the shift rolls the padded grid by ``-shift``; the attention mask (-100 between slots from
  different regions of the rolled grid) is the one of the Swin paper;
* windows are enumerated in (t, h, w) raster order, slots within a window likewise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

MASK_VALUE = -100.0  # torchvision's and the original code's value for cross-region pairs


@dataclass(frozen=True)
class WindowGeometry:
    """Static window layout of one block on a (T, H, W) grid."""

    grid: tuple[int, int, int]
    window: tuple[int, int, int]  # after clamping to the grid
    shift: tuple[int, int, int]  # after clamping (0 on clamped axes)

    @property
    def padded(self) -> tuple[int, int, int]:
        return tuple(math.ceil(g / w) * w for g, w in zip(self.grid, self.window))  # type: ignore[return-value]

    @property
    def num_windows(self) -> int:
        return math.prod(p // w for p, w in zip(self.padded, self.window))

    @property
    def window_volume(self) -> int:
        return math.prod(self.window)

    @property
    def num_slots(self) -> int:
        return self.num_windows * self.window_volume

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def shifted(self) -> bool:
        return sum(self.shift) > 0

    @property
    def has_padding(self) -> bool:
        return self.padded != self.grid


def window_geometry(grid, window, shift) -> WindowGeometry:
    """Clamp ``window``/``shift`` to ``grid`` the way torchvision does."""
    window = list(window)
    shift = list(shift)
    for axis in range(3):
        if grid[axis] <= window[axis]:
            window[axis] = grid[axis]
            shift[axis] = 0
    return WindowGeometry(tuple(grid), tuple(window), tuple(shift))


def _axis_tables(size: int, padded: int, window: int, shift: int) -> tuple[Tensor, Tensor]:
    """For one axis: padded-grid coordinate of every rolled coordinate, and its mask region."""
    rolled = torch.arange(padded)
    source = (rolled + shift) % padded  # torch.roll(x, -shift)[i] == x[(i + shift) % padded]
    region = torch.zeros(padded, dtype=torch.long)
    if shift > 0:
        region[padded - window :] = 1
        region[padded - shift :] = 2
    return source, region


def window_slot_tables(geometry: WindowGeometry) -> tuple[Tensor, Tensor, Tensor]:
    """``(slot_to_token, token_to_slot, slot_region)`` for one block's window layout.

    * ``slot_to_token`` (num_slots,): raster index ``(t * H + h) * W + w`` of the grid token each
      window slot holds, or ``num_tokens`` for a padding slot;
    * ``token_to_slot`` (num_tokens,): the slot holding each grid token (exactly one);
    * ``slot_region`` (num_windows, window_volume): mask region of each slot (equal ids attend).
    """
    grid, window, shift, padded = geometry.grid, geometry.window, geometry.shift, geometry.padded
    sources, regions = zip(*(_axis_tables(grid[a], padded[a], window[a], shift[a]) for a in range(3)))
    # Rolled coordinates in window-partition order: (nT, nH, nW, wt, wh, ww).
    counts = [padded[a] // window[a] for a in range(3)]

    def partition(values: Tensor, axis: int) -> Tensor:
        # values over the rolled axis -> broadcastable (nT, nH, nW, wt, wh, ww) tensor
        shaped = values.view(counts[axis], window[axis])
        view = [1] * 6
        view[axis] = counts[axis]
        view[3 + axis] = window[axis]
        return shaped.reshape(view)

    t, h, w = (partition(sources[a], a) for a in range(3))
    valid = (t < grid[0]) & (h < grid[1]) & (w < grid[2])
    token = (t * grid[1] + h) * grid[2] + w
    slot_to_token = torch.where(valid, token, torch.full_like(token, geometry.num_tokens)).reshape(-1)
    rt, rh, rw = (partition(regions[a], a) for a in range(3))
    slot_region = (rt * 9 + rh * 3 + rw).expand(*counts, *window).reshape(geometry.num_windows, geometry.window_volume)

    token_to_slot = torch.empty(geometry.num_tokens, dtype=torch.long)
    slots = torch.arange(geometry.num_slots)
    real = slot_to_token < geometry.num_tokens
    token_to_slot[slot_to_token[real]] = slots[real]
    return slot_to_token, token_to_slot, slot_region


def windows_by_mask_type(geometry: WindowGeometry, slot_to_token: Tensor, slot_region: Tensor):
    """Reorder one block's windows so that windows with the same shift-mask pattern are adjacent.

    The window gather may list windows in any order, so grouping them by mask pattern lets every
    group add ONE precomputed (heads, V, V) tensor (relative position bias + that group's mask)
    instead of a bias Add plus a per-window (nW, V, V) mask Add over all logits.  An unshifted block
    is one group without a mask; a shifted one has up to 8 (interior windows, and boundary windows
    per combination of the shifted axes), the unmasked interior first.

    Returns ``(slot_to_token, token_to_slot, type_regions, windows_per_type)``: the reordered slot
    table, its inverse, the (types, V) mask regions of each group and the window count of each.
    """
    volume = geometry.window_volume
    regions, group = torch.unique(slot_region, dim=0, return_inverse=True)
    # Interior windows (one region throughout) first; otherwise the order torch.unique gives.
    interior = (regions == regions[:, :1]).all(dim=1)
    rank = torch.argsort((~interior).to(torch.long) * len(regions) + torch.arange(len(regions)), stable=True)
    regions = regions[rank]
    group = torch.argsort(rank)[group]
    order = torch.argsort(group, stable=True)
    slot_to_token = slot_to_token.view(geometry.num_windows, volume)[order].reshape(-1)
    token_to_slot = torch.empty(geometry.num_tokens, dtype=torch.long)
    real = slot_to_token < geometry.num_tokens
    token_to_slot[slot_to_token[real]] = torch.arange(geometry.num_slots)[real]
    windows_per_type = tuple(int(n) for n in torch.bincount(group, minlength=len(regions)))
    return slot_to_token, token_to_slot, regions, windows_per_type


def shift_mask(slot_region: Tensor) -> Tensor:
    """(num_windows, V, V) additive attention mask from the slots' regions (0 or -100)."""
    different = slot_region.unsqueeze(1) != slot_region.unsqueeze(2)
    return different.to(torch.float32) * MASK_VALUE


def relative_position_index(window: tuple[int, int, int]) -> Tensor:
    """(V, V) index into the (2wt-1)(2wh-1)(2ww-1) bias table, Video Swin's formula."""
    coords = torch.stack(torch.meshgrid(*(torch.arange(w) for w in window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    relative = relative + torch.tensor([w - 1 for w in window])
    strides = torch.tensor([(2 * window[1] - 1) * (2 * window[2] - 1), 2 * window[2] - 1, 1])
    return (relative * strides).sum(-1)


def nearest_kept(kept: Tensor, height: int, width: int) -> Tensor:
    """Index (within ``kept``) of the nearest kept token for every position of each slice.

    ``kept`` is (B, G, k) raster positions ``h * width + w`` within each temporal slice, sorted
    ascending.  Returns (B, G, height * width) int64 in [0, k).  "Nearest" is the smallest
    squared Euclidean distance on the (h, w) grid of the same slice; ties go to the kept token
    with the lowest raster position (the lowest index in ``kept``).  A kept position maps to
    itself.  Every value below is an exact integer in float32.
    """
    device = kept.device
    k = kept.shape[-1]
    n = height * width
    positions = torch.arange(n, device=device)
    # |p - q|^2 = |p|^2 - 2 p.q + |q|^2; |p|^2 is the same for every kept q of a row, so the
    # nearest q minimises d = -2 p.q + |q|^2, ties included.  As one MatMul of (n, 3) [h, w, 1] by
    # (3, k) [-2 h', -2 w', |q|^2]: one pass over the (n, k) distances.
    rows = (positions // width).to(torch.float32)
    cols = (positions % width).to(torch.float32)
    points = torch.stack([rows, cols, torch.ones_like(rows)], dim=-1)  # (n, 3)
    points = points.expand(*kept.shape[:-1], n, 3)  # batched like kept_terms (fvcore counts the batch then)
    kept_rows = (kept // width).to(torch.float32)  # (B, G, k)
    kept_cols = (kept % width).to(torch.float32)
    squares = kept_rows * kept_rows + kept_cols * kept_cols
    if not _index_key_is_exact(k, height, width):
        kept_terms = torch.stack([-2.0 * kept_rows, -2.0 * kept_cols, squares], dim=-2)  # (B, G, 3, k)
        return (points @ kept_terms).argmin(dim=-1)
    # The key k * d + j (j = the index in kept) orders by distance, then by j, so its minimum names
    # the nearest kept token with the tie rule built in, and a min-reduction is several times
    # faster than ArgMin on ONNX Runtime's CPU (3.8 vs 0.6 ms on swin_t's first stage).  The index
    # term rides in the MatMul's constant column; floor division by k recovers j (d may be < 0).
    index = torch.arange(k, device=device, dtype=torch.float32)
    kept_terms = torch.stack([-2.0 * k * kept_rows, -2.0 * k * kept_cols, k * squares + index], dim=-2)
    key = (points @ kept_terms).amin(dim=-1).to(torch.int64)
    return torch.remainder(key, k)


def _index_key_is_exact(k: int, height: int, width: int) -> bool:
    """Whether every partial sum of the encoded key k * d + j stays an integer float32 holds exactly.

    |h * 2k h'| + |w * 2k w'| + |k |q|^2 + j| <= 3k((H-1)^2 + (W-1)^2) + k; float32 integers are
    exact below 2**24, whatever order the MatMul sums in.  (224-pixel inputs: at most 4.6e6.)
    """
    return 3 * k * ((height - 1) ** 2 + (width - 1) ** 2) + k < 2**24
