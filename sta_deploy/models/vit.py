"""VideoMAE ViT (Tong et al., 2022) with STA pruning after blocks 0, L//3 and 2L//3.

Module and parameter names follow the original VideoMAE code, so its ``.pth`` state dicts load
without renaming.  The attention is written out (scale, matmul, softmax, matmul) rather than
``scaled_dot_product_attention`` so that FLOP counters see every product and ONNX Runtime's
attention fusion recognises the pattern.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..schedule import StaSchedule, vit_schedule
from ..sta import StaStage, sort_positions
from ._common import StaBackbone
from .registry import ModelEntry, register_model
from .vit_checkpoints import load_vit_checkpoint
from .vit_flops import vit_flops


@dataclass(frozen=True)
class VitConfig:
    """Architecture of a VideoMAE ViT.  ``norm_eps`` is the blocks' LayerNorm eps."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    num_classes: int = 400
    num_frames: int = 16
    img_size: int = 224
    patch_size: int = 16
    tubelet_size: int = 2
    in_chans: int = 3
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    fc_norm_eps: float = 1e-6

    family = "vit"

    def __post_init__(self):
        for name in ("embed_dim", "depth", "num_heads", "num_classes", "num_frames", "img_size", "patch_size", "tubelet_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size={self.img_size} is not a multiple of patch_size={self.patch_size}")
        if self.num_frames % self.tubelet_size:
            raise ConfigError(f"num_frames={self.num_frames} is not a multiple of tubelet_size={self.tubelet_size}")

    @property
    def num_temporal(self) -> int:
        return self.num_frames // self.tubelet_size

    @property
    def num_spatial(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """(C, T, H, W) of one clip."""
        return (self.in_chans, self.num_frames, self.img_size, self.img_size)

    def schedule(self, r1: int) -> StaSchedule:
        return vit_schedule(depth=self.depth, num_temporal=self.num_temporal, num_spatial=self.num_spatial, r1=r1)

    def as_dict(self) -> dict:
        return asdict(self)


def sinusoid_position_table(num_positions: int, dim: int) -> Tensor:
    """VideoMAE's fixed sine-cosine table (1, num_positions, dim), computed in float64 like the original."""
    positions = np.arange(num_positions, dtype=np.float64)[:, None]
    exponents = 2 * (np.arange(dim) // 2) / dim
    angles = positions / np.power(10000, exponents)[None, :]
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return torch.tensor(angles, dtype=torch.float32).unsqueeze(0)


class PatchEmbed(nn.Module):
    def __init__(self, config: VitConfig):
        super().__init__()
        kernel = (config.tubelet_size, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(config.in_chans, config.embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, video: Tensor) -> Tensor:
        # (B, d, n_t, h, w) -> (B, n_t * n_s, d): slice-major token order, index = t * n_s + s.
        return self.proj(video).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, need_metric: bool = False) -> tuple[Tensor, Tensor | None]:
        batch, tokens, dim = x.shape
        # VideoMAE has no key bias: the fused bias is (q_bias, 0, v_bias).
        qkv_bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, qkv_bias)
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, tokens, dim)
        # STA's similarity metric: the keys averaged over heads, (B, N, head_dim).
        metric = k.mean(dim=1) if need_metric else None
        return self.proj(out), metric


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, config: VitConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        self.attn = Attention(config.embed_dim, config.num_heads)
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        self.mlp = Mlp(config.embed_dim, config.mlp_hidden)

    def forward(self, x: Tensor, need_metric: bool = False) -> tuple[Tensor, Tensor | None]:
        attended, metric = self.attn(self.norm1(x), need_metric)
        x = x + attended
        x = x + self.mlp(self.norm2(x))
        return x, metric


class VideoViT(StaBackbone):
    """VideoMAE ViT classifier; ``r1 > 0`` enables STA with the reference's decreasing schedule.

    ``forward(video, return_kept=False)`` takes (B, C, T, H, W) and returns logits (B, num_classes),
    or ``(logits, kept)`` where ``kept`` holds one (B, tokens after stage) int64 tensor per STA stage
    with the original flattened positions ``t * n_s + s`` of the surviving tokens, sorted ascending.
    """

    def __init__(self, config: VitConfig, r1: int = 0, name: str | None = None):
        super().__init__()
        self.config = config
        self.name = name or "vit"
        self.schedule = config.schedule(r1)
        self.patch_embed = PatchEmbed(config)
        self.register_buffer(
            "pos_embed", sinusoid_position_table(config.num_temporal * config.num_spatial, config.embed_dim), persistent=False
        )
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        schedule = self.schedule
        self.set_sta_stages(
            StaStage(groups, schedule.r1, direction == "backward") for groups, direction in zip(schedule.groups, schedule.directions)
        )
        self.fc_norm = nn.LayerNorm(config.embed_dim, eps=config.fc_norm_eps)
        self.head = nn.Linear(config.embed_dim, config.num_classes)
        self._init_weights()
        self.eval()

    def _init_weights(self):
        self.init_linear_weights()
        for block in self.blocks:
            nn.init.trunc_normal_(block.attn.q_bias, std=0.02)
            nn.init.trunc_normal_(block.attn.v_bias, std=0.02)

    def forward(self, video: Tensor, return_kept: bool = False):
        self.check_input(video)
        x = self.patch_embed(video)
        x = x + self.pos_embed.to(dtype=x.dtype)
        batch, num_tokens, _ = x.shape
        positions = torch.arange(num_tokens, device=x.device).expand(batch, num_tokens)
        schedule = self.schedule
        stage_of_block = dict(zip(schedule.stage_blocks, range(3))) if schedule.enabled else {}
        kept = []
        for index, block in enumerate(self.blocks):
            stage = stage_of_block.get(index)
            x, metric = block(x, need_metric=stage is not None)
            if stage is not None:
                x, positions = self.sta_stages[stage](x, metric, positions)
                if return_kept:
                    kept.append(sort_positions(positions))
        logits = self.head(self.fc_norm(x.mean(dim=1)))
        if not return_kept:
            return logits
        if not schedule.enabled:
            kept = [positions.clone() for _ in range(3)]
        return logits, kept


# ----------------------------------------------------------------------------- registry
PRESETS = (
    ("vit_s", "VideoMAE ViT-S/16, 16x224^2", VitConfig(embed_dim=384, depth=12, num_heads=6)),
    ("vit_b", "VideoMAE ViT-B/16, 16x224^2", VitConfig(embed_dim=768, depth=12, num_heads=12)),
    ("vit_l", "VideoMAE ViT-L/16, 16x224^2", VitConfig(embed_dim=1024, depth=24, num_heads=16)),
    ("vit_h", "VideoMAE ViT-H/16, 16x224^2", VitConfig(embed_dim=1280, depth=32, num_heads=16)),
)


def build_vit(config: VitConfig, *, r1: int = 0, name: str | None = None) -> VideoViT:
    return VideoViT(config, r1=r1, name=name)


for _name, _description, _config in PRESETS:
    register_model(ModelEntry(_name, _description, _config, build_vit, load_vit_checkpoint, vit_flops, paper_r1=(0, 32, 48, 64)))
