"""FLOPs as fvcore counts them (one multiply-add = one FLOP), computed from the architecture.

fvcore counts convolutions, linear layers, matrix products and normalisations (5 FLOPs per element
for an affine LayerNorm) and ignores element-wise ops, softmax, GELU and reductions.  This module
reproduces that count in closed form, so the paper's Table 2 can be checked without tracing a
632M-parameter model, and reports STA's own products (the similarity and transition matrices)
separately from the backbone's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .registry import get_entry, resolve_config

LAYER_NORM_FLOPS_PER_ELEMENT = 5  # fvcore's estimate for an affine norm


@dataclass(frozen=True)
class FlopsReport:
    model: str
    r1: int
    gflops: float  # the model without STA's own cost
    sta_gflops: float  # STA's similarity / transition products
    params: int
    tokens_per_stage: list[int] = field(default_factory=list)
    tokens_per_block: list[int] = field(default_factory=list)
    breakdown: dict = field(default_factory=dict)  # GFLOPs per part

    @property
    def total_gflops(self) -> float:
        return self.gflops + self.sta_gflops

    def as_dict(self) -> dict:
        data = asdict(self)
        data["total_gflops"] = self.total_gflops
        return data


def vit_block_flops(tokens: int, dim: int, mlp_hidden: int) -> int:
    """One pre-norm block: qkv, q@k^T, attn@v, proj, two MLP layers, two LayerNorms."""
    linear = tokens * dim * (3 * dim) + tokens * dim * dim + 2 * tokens * dim * mlp_hidden
    attention = 2 * tokens * tokens * dim
    norms = 2 * LAYER_NORM_FLOPS_PER_ELEMENT * tokens * dim
    return linear + attention + norms


def sta_stage_flops(num_groups: int, group_size: int, r: int, metric_dim: int) -> int:
    """The matrix products of one STA stage (what fvcore sees of it).

    First processed group: |A| x |B| similarities.  Second: an n x n transition.  Later groups: an
    n x (n - r) transition and its product with the previous accumulated scores.
    """
    n = group_size
    a_size, b_size = (n + 1) // 2, n // 2
    total = a_size * b_size * metric_dim
    if num_groups >= 2:
        total += n * n * metric_dim
    for _ in range(2, num_groups):
        total += n * (n - r) * metric_dim + n * (n - r)
    return total


def vit_params(config) -> int:
    d, h = config.embed_dim, config.mlp_hidden
    patch = config.in_chans * config.tubelet_size * config.patch_size**2 * d + d
    block = (3 * d * d) + 2 * d + (d * d + d) + (d * h + h) + (h * d + d) + 4 * d
    return patch + config.depth * block + 2 * d + d * config.num_classes + config.num_classes


def vit_flops(config, r1: int, name: str = "vit") -> FlopsReport:
    schedule = config.schedule(r1)
    d = config.embed_dim
    head_dim = d // config.num_heads
    tokens_in = schedule.num_tokens
    patch = tokens_in * d * config.in_chans * config.tubelet_size * config.patch_size**2
    tokens_per_block = [schedule.tokens_at_block(i) for i in range(config.depth)]
    blocks = sum(vit_block_flops(n, d, config.mlp_hidden) for n in tokens_per_block)
    head = LAYER_NORM_FLOPS_PER_ELEMENT * d + d * config.num_classes
    sta = 0
    if schedule.enabled:
        sta = sum(
            sta_stage_flops(g, n, schedule.r1, head_dim) for g, n in zip(schedule.groups, schedule.group_sizes)
        )
    giga = 1e9
    return FlopsReport(
        model=name,
        r1=r1,
        gflops=(patch + blocks + head) / giga,
        sta_gflops=sta / giga,
        params=vit_params(config),
        tokens_per_stage=list(schedule.tokens_per_stage),
        tokens_per_block=tokens_per_block,
        breakdown={"patch_embed": patch / giga, "blocks": blocks / giga, "head": head / giga, "sta": sta / giga},
    )


_COUNTERS = {"vit": vit_flops}


def register_flops_counter(family: str, counter) -> None:
    """Backbone families register their closed-form counter here."""
    _COUNTERS[family] = counter


def count_flops(name: str, r1: int = 0, **overrides) -> FlopsReport:
    """GFLOPs of registry model ``name`` at ``r1`` for one clip (batch 1), fvcore's convention."""
    get_entry(name)
    config = resolve_config(name, **overrides)
    return _COUNTERS[config.family](config, r1, name=name)
