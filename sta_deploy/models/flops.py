"""FLOPs as fvcore counts them (one multiply-add = one FLOP), computed from the architecture.

fvcore counts convolutions, linear layers, matrix products and normalisations (5 FLOPs per element
for an affine LayerNorm) and ignores element-wise ops, softmax, GELU and reductions.  The backbones'
counters (:mod:`.vit_flops`, :mod:`.swin_flops`) reproduce that count in closed form, so the paper's
Tables 2 and 3 can be checked without tracing a 632M-parameter model; this module holds what they
share and reports STA's own products (the similarity and transition matrices) separately from the
backbone's.
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


def count_flops(name: str, r1: int = 0, **overrides) -> FlopsReport:
    """GFLOPs of registry model ``name`` at ``r1`` for one clip (batch 1), fvcore's convention."""
    config = resolve_config(name, **overrides)
    return get_entry(name).flops(config, r1, name=name)
