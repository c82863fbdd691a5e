"""Video Swin Transformer (Liu et al., CVPR 2022) with STA pruning at stages 2, 3 and 4.

Module and parameter names follow torchvision's ``swin3d_t/s/b`` (``features.{2s}.{j}`` blocks,
``features.{2s+1}`` patch mergings, ``mlp.0``/``mlp.3``), so its state dicts load without
renaming; the original Video Swin / mmaction2 layout is converted by
:mod:`.swin_checkpoints`.  The arithmetic is the reference's exactly (window clamping,
zero padding after ``norm1``, cyclic shift with the -100 mask, relative position bias, patch
merging order x(0,0), x(1,0), x(0,1), x(1,1)); see :mod:`.swin_geometry`.

STA on Swin (the paper leaves the design open; this is the one that reproduces Table 3):

* Pruning happens at the input of stages 2, 3 and 4, right after each of the first three patch
  mergings.  Every temporal slice is one STA group; per slice the stage drops ``r1``,
  ``3 * r1 / 8`` and ``r1 / 8`` tokens of its full grid (28x28, 14x14, 7x7 at 224^2), the paper's
  {r1, 1.5 r1 / 4, 2 r1 / 16}.  Drops are not cumulative: before every patch merging the grid is
  refilled with the nearest kept token, so each stage prunes a full grid.
* The score is STA's: temporal accumulation over the slices (forward, backward, forward order at
  the three stages), weighted by the semantic score, via :func:`sta_deploy.sta.select_kept`.
* The similarity metric is the merged tokens themselves (the patch merging's output), L2
  normalised.  In ViT the metric is the keys of the block being pruned; here pruning happens
  *before* the stage's first block, and computing that block's keys on the full grid would cost
  the full-grid qkv projection that pruning is meant to save.  The merged token is already a linear
  projection of LayerNorm-ed features (like a key), is exactly what the stage's blocks see, and is
  free.  The semantic score F (sum of |x|) uses the same tensor.
* Inside a pruned stage the linear layers (norm1 + qkv, proj, norm2 + MLP) run on the kept tokens
  only.  Window attention runs on full windows built by ONE gather whose index folds nearest-kept
  fill, zero padding, cyclic shift and window partition; a second gather takes the kept positions
  back.  This equals "fill the grid with the nearest kept tokens, run the unmodified block, keep
  the kept positions" exactly, because every layer but the attention acts per token.
* Nearest kept token: same temporal slice, smallest squared Euclidean (h, w) distance, ties to
  the lowest raster position.  The final LayerNorm and the mean pool see the kept tokens only.

Every shape is static for a fixed r1 (kept counts per slice are constants), indices are computed
tensors and sorts go through :func:`sta_deploy.sta.stable_smallest_k`, so the forward exports.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..schedule import StaSchedule
from ..sta import gather_tokens, normalise_metric, select_kept, semantic_score, stable_smallest_k
from ._common import StaBackbone
from .registry import ModelEntry, register_model
from .swin_checkpoints import load_swin_checkpoint
from .swin_attention import WindowAttention3d, kept_window_attention, take_tokens
from .swin_flops import swin_flops
from .swin_geometry import (
    nearest_kept,
    shift_mask,
    window_geometry,
    window_slot_tables,
    windows_by_mask_type,
)

STAGE_DIRECTIONS = ("forward", "backward", "forward")
_INT_FIELDS = ("embed_dim", "num_classes", "num_frames", "img_size", "in_chans")


def _as_int_tuple(value, name: str, length: int | None = None) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    try:
        values = tuple(value)
    except TypeError:
        raise ConfigError(f"{name} must be a sequence of positive integers, got {value!r}") from None
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ConfigError(f"{name} must be a sequence of positive integers, got {value!r}")
    if length is not None and len(values) != length:
        raise ConfigError(f"{name} needs {length} values, got {value!r}")
    return values


@dataclass(frozen=True)
class SwinConfig:
    """Architecture of a Video Swin.  Sequences are (t, h, w) or one entry per stage."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: tuple[int, int, int] = (8, 7, 7)
    num_classes: int = 400
    num_frames: int = 32
    img_size: int = 224
    patch_size: tuple[int, int, int] = (2, 4, 4)
    in_chans: int = 3
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-5

    family = "swin"

    def __post_init__(self):
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        object.__setattr__(self, "depths", _as_int_tuple(self.depths, "depths"))
        object.__setattr__(self, "num_heads", _as_int_tuple(self.num_heads, "num_heads", len(self.depths)))
        object.__setattr__(self, "window_size", _as_int_tuple(self.window_size, "window_size", 3))
        object.__setattr__(self, "patch_size", _as_int_tuple(self.patch_size, "patch_size", 3))
        for stage, heads in enumerate(self.num_heads):
            if self.stage_dim(stage) % heads:
                raise ConfigError(f"stage {stage + 1} width {self.stage_dim(stage)} is not divisible by num_heads={heads}")

    def stage_dim(self, stage: int) -> int:
        return self.embed_dim * 2**stage

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def depth(self) -> int:
        return sum(self.depths)

    @property
    def grids(self) -> tuple[tuple[int, int, int], ...]:
        """(T, H, W) token grid of every stage (padding rounds up, as in the reference)."""
        t = math.ceil(self.num_frames / self.patch_size[0])
        h = math.ceil(self.img_size / self.patch_size[1])
        w = math.ceil(self.img_size / self.patch_size[2])
        grids = []
        for _ in self.depths:
            grids.append((t, h, w))
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        return tuple(grids)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """(C, T, H, W) of one clip."""
        return (self.in_chans, self.num_frames, self.img_size, self.img_size)

    def schedule(self, r1: int) -> "SwinSchedule":
        return swin_schedule(self, r1)

    def as_dict(self) -> dict:
        return asdict(self)



@dataclass(frozen=True)
class SwinSchedule(StaSchedule):
    """Static geometry of STA on a Video Swin: what export needs to fix its shapes.

    STA stage ``i`` (0, 1, 2) runs at the input of Swin stage ``i + 2``, after the patch merging
    that follows block ``stage_blocks[i]`` (0-based over all blocks).  ``groups`` are the temporal
    slices, ``group_sizes`` the full per-slice grid (``num_spatial``: tokens per slice at the patch
    embedding) and ``rs`` the tokens dropped per slice.
    """

    rs: tuple[int, ...] = ()
    depths: tuple[int, ...] = ()

    @property
    def drops_per_group(self) -> tuple[int, ...]:
        return self.rs

    def tokens_at_block(self, block: int) -> int:
        """Tokens that enter block ``block`` (0-based over all stages): the kept ones."""
        if not 0 <= block < self.depth:
            raise IndexError(f"block {block} is outside 0..{self.depth - 1}")
        stage = 0
        while block >= sum(self.depths[: stage + 1]):
            stage += 1
        return self.num_tokens if stage == 0 else self.tokens_per_stage[stage - 1]

    def as_dict(self) -> dict:
        return {**super().as_dict(), "rs": list(self.rs)}


def stage_drops(r1: int) -> tuple[int, int, int]:
    """Tokens dropped per temporal slice at STA stages 1-3: r1, 3 r1 / 8, r1 / 8."""
    return (r1, 3 * r1 // 8, r1 // 8)


def max_swin_r1(group_sizes) -> int:
    """Largest multiple of 8 that leaves a token in every slice at every STA stage."""
    best = 0
    for r1 in range(8, 8 * group_sizes[0] + 1, 8):
        if all(r < n for r, n in zip(stage_drops(r1), group_sizes)):
            best = r1
    return best


def swin_schedule(config: SwinConfig, r1: int) -> SwinSchedule:
    """Validate ``r1`` for this Swin and return its schedule (ConfigError names the limit)."""
    if not isinstance(r1, int) or isinstance(r1, bool):
        raise ConfigError(f"r1 must be an integer, got {r1!r}")
    if r1 < 0:
        raise ConfigError(f"r1 must be >= 0, got {r1}")
    grids = config.grids
    if r1 > 0 and config.num_stages != 4:
        raise ConfigError(f"STA on Video Swin prunes at the inputs of stages 2, 3 and 4; depths={config.depths} has {config.num_stages} stages")
    sta_grids = grids[1:4]  # STA stages run on the grids of Swin stages 2, 3 and 4
    group_sizes = tuple(h * w for _, h, w in sta_grids)
    if r1 > 0:
        if r1 % 8:
            nearby = " or ".join(str(v) for v in (r1 - r1 % 8, r1 - r1 % 8 + 8) if v > 0)
            raise ConfigError(
                f"r1={r1} is not a multiple of 8: Video Swin STA drops r1, 3*r1/8 and r1/8 tokens per temporal slice "
                f"at stages 2, 3 and 4; use e.g. r1 = {nearby}"
            )
        for stage, (r, n, grid) in enumerate(zip(stage_drops(r1), group_sizes, sta_grids)):
            if r >= n:
                raise ConfigError(
                    f"r1={r1} drops {r} of the {n} tokens per slice ({grid[1]}x{grid[2]}) at STA stage {stage + 1}, "
                    f"leaving none; the largest r1 for this model is {max_swin_r1(group_sizes)}"
                )
    return SwinSchedule(
        r1=r1,
        depth=config.depth,
        num_temporal=grids[0][0],
        num_spatial=grids[0][1] * grids[0][2],
        stage_blocks=tuple(sum(config.depths[: s + 1]) - 1 for s in range(min(3, config.num_stages - 1))),
        groups=tuple(g[0] for g in sta_grids),
        group_sizes=group_sizes,
        rs=stage_drops(r1),
        directions=STAGE_DIRECTIONS,
        depths=config.depths,
    )


# ----------------------------------------------------------------------------- modules
class PatchEmbed3d(nn.Module):
    def __init__(self, config: SwinConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.proj = nn.Conv3d(config.in_chans, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)

    def forward(self, video: Tensor) -> Tensor:
        sizes = video.shape[-3:]
        pad = [(p - s % p) % p for s, p in zip(sizes, self.patch_size)]
        if any(pad):
            video = F.pad(video, (0, pad[2], 0, pad[1], 0, pad[0]))
        # (B, C, T, H, W) -> (B, T * H * W, C): raster token order.
        return self.norm(self.proj(video).flatten(2).transpose(1, 2))


class SwinBlock(nn.Module):
    """Pre-norm Swin block working on a stage's kept tokens (all tokens when unpruned).

    ``forward(x, window_index, back_index)``: ``x`` (B, K, C) kept tokens; ``window_index``
    (L,) or (B, L) rows of ``[x's tokens..., padding]`` filling the ``L = nW * V`` window slots
    (in ``slot_to_token``'s order: windows grouped by mask type); ``back_index`` (K,) or (B, K)
    the slot of every kept token.
    """

    def __init__(self, dim: int, num_heads: int, window_size, shift_size, grid, mlp_ratio: float, eps: float):
        super().__init__()
        self.geometry = window_geometry(grid, window_size, shift_size)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention3d(dim, num_heads, tuple(window_size), self.geometry)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Identity(), nn.Linear(hidden, dim))
        slot_to_token, token_to_slot, slot_region, windows_per_type = windows_by_mask_type(self.geometry, *window_slot_tables(self.geometry)[::2])
        self.register_buffer("slot_to_token", slot_to_token, persistent=False)
        self.register_buffer("token_to_slot", token_to_slot, persistent=False)
        self.windows_per_type = windows_per_type
        window_type = torch.repeat_interleave(torch.arange(len(windows_per_type)), torch.tensor(windows_per_type))
        self.register_buffer("window_type", window_type, persistent=False)
        # The (types, V) mask regions, not the (types, V, V) masks: the bias + mask sums depend only on
        # parameters and buffers, which ONNX Runtime folds into constants when the session is created.
        region = slot_region.to(torch.int32) if self.geometry.shifted else None
        self.register_buffer("type_region", region, persistent=False)

    def additive_terms(self) -> Tensor:
        """(types, heads, V, V): relative position bias plus each window type's shift mask."""
        bias = self.attn.relative_position_bias()
        if self.type_region is None:
            return bias
        return bias + shift_mask(self.type_region).unsqueeze(1)

    def forward(self, x: Tensor, window_index: Tensor, back_index: Tensor) -> Tensor:
        q, k, v = self.attn.head_major_qkv(self.norm1(x), self.geometry.has_padding)
        attended = kept_window_attention(
            q, k, v, window_index, back_index, self.additive_terms(), self.windows_per_type, self.window_type, self.attn.scale
        )
        x = x + self.attn.proj(attended.transpose(1, 2).reshape(x.shape))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 spatial merging per frame: concat x(0,0), x(1,0), x(0,1), x(1,1), LayerNorm, linear."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=eps)

    def forward(self, x: Tensor, grid) -> Tensor:
        batch, _, channels = x.shape
        t, h, w = grid
        x = x.view(batch, t, h, w, channels)
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.flatten(1, 3)))


class SwinStaStage(nn.Module):
    """One STA stage on a full grid of merged tokens (B, N, C): every temporal slice is a group.

    ``forward(x)`` returns ``(kept, fill, kept_x)``: ``kept`` (B, K) ascending grid positions;
    ``fill`` (B, N) for every grid position the index (into ``kept``) of its nearest kept token;
    ``kept_x`` (B, K, C).  Parameterless, like :class:`sta_deploy.sta.StaStage`.
    """

    def __init__(self, slices: int, group_size: int, r: int, backward: bool, width: int):
        super().__init__()
        self.slices = slices
        self.group_size = group_size
        self.r = r
        self.backward = backward
        self.width = width

    def extra_repr(self) -> str:
        return f"slices={self.slices}, group_size={self.group_size}, r={self.r}, direction={'backward' if self.backward else 'forward'}"

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, _, channels = x.shape
        slices, n, r = self.slices, self.group_size, self.r
        x_groups = x.reshape(batch, slices, n, channels)
        metric = normalise_metric(x_groups)
        kept_in_slice = select_kept(metric, semantic_score(x_groups), r, self.backward)
        keep = n - r
        order = stable_smallest_k(kept_in_slice.to(torch.float32), keep)  # raster order within each slice
        kept_in_slice = kept_in_slice.gather(-1, order)
        offsets = torch.arange(slices, device=x.device).view(1, slices, 1)
        kept = (kept_in_slice + offsets * n).reshape(batch, slices * keep)
        fill = (nearest_kept(kept_in_slice, n // self.width, self.width) + offsets * keep).reshape(batch, slices * n)
        # Validation finds the backend's selection as the index of this gather
        # (sta_deploy.export.selection_graph); ViT's stages take their tokens the same way.
        return kept, fill, gather_tokens(x, kept)


# ----------------------------------------------------------------------------- model
class VideoSwin(StaBackbone):
    """Video Swin classifier; ``r1 > 0`` enables STA at the inputs of stages 2, 3 and 4.

    ``forward(video, return_kept=False)`` takes (B, C, T, H, W) and returns logits (B, num_classes),
    or ``(logits, kept)`` where ``kept`` holds one (B, tokens kept) int64 tensor per STA stage with
    the positions ``(t * H + h) * W + w`` in that stage's grid of the surviving tokens, ascending.
    """

    def __init__(self, config: SwinConfig, r1: int = 0, name: str | None = None):
        super().__init__()
        self.config = config
        self.name = name or "swin"
        self.schedule = config.schedule(r1)
        self.patch_embed = PatchEmbed3d(config)
        grids = config.grids
        shift = tuple(w // 2 for w in config.window_size)
        features: list[nn.Module] = []
        for stage, depth in enumerate(config.depths):
            dim = config.stage_dim(stage)
            features.append(
                nn.ModuleList(
                    SwinBlock(dim, config.num_heads[stage], config.window_size, (0, 0, 0) if j % 2 == 0 else shift, grids[stage], config.mlp_ratio, config.norm_eps)
                    for j in range(depth)
                )
            )
            if stage < config.num_stages - 1:
                features.append(PatchMerging(dim, config.norm_eps))
        self.features = nn.ModuleList(features)
        schedule = self.schedule
        self.set_sta_stages(
            SwinStaStage(schedule.groups[s], schedule.group_sizes[s], schedule.rs[s], schedule.directions[s] == "backward", grids[s + 1][2])
            for s in range(min(3, config.num_stages - 1))
        )
        self.norm = nn.LayerNorm(config.stage_dim(config.num_stages - 1), eps=config.norm_eps)
        self.head = nn.Linear(config.stage_dim(config.num_stages - 1), config.num_classes)
        self._init_weights()
        self.eval()

    def _init_weights(self):
        self.init_linear_weights()
        for module in self.modules():
            if isinstance(module, WindowAttention3d):
                nn.init.trunc_normal_(module.relative_position_bias_table, std=0.02)

    def forward(self, video: Tensor, return_kept: bool = False):
        self.check_input(video)
        config, schedule = self.config, self.schedule
        grids = config.grids
        x = self.patch_embed(video)
        batch = x.shape[0]
        kept_record = []
        fill = kept = None  # None: the stage runs on the full grid
        for stage in range(config.num_stages):
            blocks = self.features[2 * stage]
            if fill is not None:
                padded_fill = torch.cat([fill, fill.new_full((batch, 1), x.shape[1])], dim=1)
            indices = {}  # blocks of one stage alternate between two geometries: build each index once
            for block in blocks:
                if fill is None:
                    indices[block.geometry] = (block.slot_to_token, block.token_to_slot)
                elif block.geometry not in indices:
                    indices[block.geometry] = (padded_fill[:, block.slot_to_token], block.token_to_slot[kept])
                x = block(x, *indices[block.geometry])
            if stage == config.num_stages - 1:
                break
            if fill is not None:
                x = take_tokens(x, fill)  # refill the grid with the nearest kept tokens before merging
            x = self.features[2 * stage + 1](x, grids[stage])
            if schedule.enabled and stage < 3:
                kept, fill, x = self.sta_stages[stage](x)
                kept_record.append(kept)
            else:
                fill = None
                kept_record.append(torch.arange(x.shape[1], device=x.device).expand(batch, -1))
        logits = self.head(self.norm(x).mean(dim=1))
        if not return_kept:
            return logits
        return logits, kept_record[:3]


# ----------------------------------------------------------------------------- registry
PRESETS = (
    ("swin_t", "Video Swin-T, 32x224^2, window 8x7x7", SwinConfig(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))),
    ("swin_s", "Video Swin-S, 32x224^2, window 8x7x7", SwinConfig(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))),
    ("swin_b", "Video Swin-B, 32x224^2, window 8x7x7 (SSv2: window_size=(16, 7, 7))", SwinConfig(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))),
)


def build_swin(config: SwinConfig, *, r1: int = 0, name: str | None = None) -> VideoSwin:
    return VideoSwin(config, r1=r1, name=name)


for _name, _description, _config in PRESETS:
    register_model(ModelEntry(_name, _description, _config, build_swin, load_swin_checkpoint, swin_flops, paper_r1=(0, 192, 256, 320)))
