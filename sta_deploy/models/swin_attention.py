"""Window attention of :mod:`sta_deploy.models.swin` and the token gathers around it.

Everything that touches full (filled) windows lives here; the window attention works head-major
so that the window gather itself produces the (B, heads, slots, head_dim) layout and no tensor of
window size is transposed or split.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .swin_geometry import relative_position_index


def take_tokens(values: Tensor, index: Tensor) -> Tensor:
    """values (B, N, C) at index (L,) shared by the batch or (B, L) per sample -> (B, L, C)."""
    return take_rows(values.unsqueeze(1), index).squeeze(1)


def take_rows(values: Tensor, index: Tensor) -> Tensor:
    """values (B, G, N, D) at index (L,) shared by the batch or (B, L) per sample -> (B, G, L, D).

    Always whole rows of D values: one ONNX Gather (``index_select``) that copies rows, where a
    GatherElements needs the index expanded to the output's shape and reads it element by element
    (and advanced indexing exports as a slower GatherND).
    """
    if index.dim() == 1:
        return values.index_select(2, index)
    batch, groups, rows, width = values.shape
    if not isinstance(batch, int):
        # A symbolic batch (--dynamic-batch export): flattening would make a B * N dimension, which
        # the static-shape check refuses; gather per element instead.
        return values.gather(2, index[:, None, :, None].expand(-1, groups, -1, width))
    if batch == 1:
        return values.index_select(2, index.reshape(-1))
    offsets = torch.arange(batch * groups, device=index.device).view(batch, groups, 1) * rows
    taken = values.reshape(-1, width).index_select(0, (index.unsqueeze(1) + offsets).reshape(-1))
    return taken.view(batch, groups, index.shape[-1], width)


class WindowAttention3d(nn.Module):
    """Multi-head self attention in 3-D windows with relative position bias.

    Works head-major: q, k and v are (B, heads, tokens, head_dim), transposed on the (kept) tokens
    BEFORE the window gather, so the gather along the token axis directly yields every window's
    heads and the full-window tensors are never transposed or split; see :class:`SwinBlock`.
    """

    def __init__(self, dim: int, num_heads: int, window_size: tuple[int, int, int], geometry):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.geometry = geometry
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        table = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) * (2 * window_size[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))

    def relative_position_bias(self) -> Tensor:
        volume = self.geometry.window_volume  # the clamped window uses the index's top-left block
        index = self.relative_position_index[:volume, :volume].reshape(-1)
        bias = self.relative_position_bias_table[index].view(volume, volume, self.num_heads)
        return bias.permute(2, 0, 1).unsqueeze(0)  # (1, heads, V, V)

    def head_major_qkv(self, normed: Tensor, padding: bool) -> list[Tensor]:
        """q, k, v of (B, N, C) normalised tokens as (B, heads, N (+1), head_dim).

        With ``padding`` each gets one more row, the qkv bias: what a zero padding vector gives.
        Three linears on row slices of the qkv weight, so that no (N, 3C) tensor is split or permuted;
        the int8 export folds the slices into initializers first (export.quantize.fold_constant_nodes).
        """
        batch, tokens, dim = normed.shape
        parts = []
        for part in range(3):
            rows = slice(part * dim, (part + 1) * dim)
            values = F.linear(normed, self.qkv.weight[rows], self.qkv.bias[rows])
            if padding:
                values = torch.cat([values, self.qkv.bias[rows].to(values.dtype).view(1, 1, -1).expand(batch, 1, -1)], dim=1)
            parts.append(values.view(batch, -1, self.num_heads, dim // self.num_heads).transpose(1, 2))
        return parts

    def attend(self, q: Tensor, k: Tensor, v: Tensor, additive: Tensor) -> Tensor:
        """q, k, v (B, heads, nW * V, hd) of windows sharing ``additive`` (heads, V, V) -> (B, heads, nW * V, hd)."""
        return attend_windows(q, k, v, additive, self.scale)


def attend_windows(q: Tensor, k: Tensor, v: Tensor, additive: Tensor, scale: float) -> Tensor:
    """q, k, v (B, heads, nW * V, hd) of windows sharing ``additive`` (heads, V, V) -> (B, heads, nW * V, hd)."""
    batch, heads, slots, head_dim = q.shape
    volume = additive.shape[-1]
    shape = (batch, heads, slots // volume, volume, head_dim)
    attn = (q.reshape(shape) * scale) @ k.reshape(shape).transpose(-2, -1)
    attn = (attn + additive.to(attn.dtype).unsqueeze(1)).softmax(dim=-1)
    return (attn @ v.reshape(shape)).reshape(batch, heads, slots, head_dim)


def attend_kept(q, k, v, window_index, back_index, additive, windows_per_type, scale: float) -> Tensor:
    """Window attention of one block, returned at the kept tokens only: (B, heads, K, hd).

    q, k, v (B, heads, rows, hd) on the stage's kept tokens (+ the padding row); ``window_index``
    (L,) or (B, L) the row filling each of the ``L = nW * V`` window slots, windows grouped by
    mask type (``windows_per_type`` of each); ``back_index`` (K,) or (B, K) every kept token's slot;
    ``additive`` (types, heads, V, V).  Full windows are attended, then the kept slots taken back:
    the definition that ``--window-attention kernel`` computes for the kept queries only.
    """
    volume, start, outputs = additive.shape[-1], 0, []
    for kind, windows in enumerate(windows_per_type):
        index = window_index[..., start * volume : (start + windows) * volume]
        start += windows
        outputs.append(attend_windows(*(take_rows(t, index) for t in (q, k, v)), additive[kind], scale))
    return take_rows(torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0], back_index)


# None: attend_kept.  Otherwise a function with attend_kept's arguments plus ``window_type`` (nW,)
# int64 (each window's mask type) before ``scale``: --window-attention kernel's export hook.
_kept_attention_impl = None


def kept_window_attention(q, k, v, window_index, back_index, additive, windows_per_type, window_type, scale: float) -> Tensor:
    """:func:`attend_kept`, or the implementation installed by :func:`kept_attention_override`."""
    if _kept_attention_impl is None:
        return attend_kept(q, k, v, window_index, back_index, additive, windows_per_type, scale)
    return _kept_attention_impl(q, k, v, window_index, back_index, additive, windows_per_type, window_type, scale)


@contextlib.contextmanager
def kept_attention_override(impl):
    """Route every Swin block's window attention through ``impl`` while the context is active."""
    global _kept_attention_impl
    previous, _kept_attention_impl = _kept_attention_impl, impl
    try:
        yield
    finally:
        _kept_attention_impl = previous
