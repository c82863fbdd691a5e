"""FLOPs and parameter count of a Video Swin in closed form, as fvcore counts them.

fvcore counts convolutions, linear layers, matrix products and LayerNorms (5 FLOPs per element
when affine) and ignores element-wise ops, softmax, GELU, gathers and reductions.  With STA the
accounting follows :mod:`.swin`'s execution: linear layers and LayerNorms on the kept tokens,
window attention (q k^T and attn v) on every slot of the padded windows, patch mergings on the
refilled full grid, the final LayerNorm on the kept tokens.  This reproduces all 16 entries of the
paper's Table 3 within 0.6 GFLOPs.
"""

from __future__ import annotations

import math

from .flops import LAYER_NORM_FLOPS_PER_ELEMENT as LN
from .flops import FlopsReport, sta_stage_flops
from .swin_geometry import window_geometry

def swin_params(config) -> int:
    """Parameters (relative position tables included, index buffers not)."""
    c0 = config.embed_dim
    total = config.in_chans * math.prod(config.patch_size) * c0 + c0 + 2 * c0
    wt, wh, ww = config.window_size
    table = (2 * wt - 1) * (2 * wh - 1) * (2 * ww - 1)
    for stage, depth in enumerate(config.depths):
        c = config.stage_dim(stage)
        hidden = int(c * config.mlp_ratio)
        block = 2 * c + table * config.num_heads[stage] + 3 * c * c + 3 * c + c * c + c + 2 * c + c * hidden + hidden + hidden * c + c
        total += depth * block
        if stage < config.num_stages - 1:
            total += 4 * c * 2 * c + 8 * c
    last = config.stage_dim(config.num_stages - 1)
    return total + 2 * last + last * config.num_classes + config.num_classes


def swin_flops(config, r1: int, name: str = "swin") -> FlopsReport:
    """fvcore's count (one multiply-add = one FLOP) of a Video Swin at ``r1``, in closed form.

    Linear layers and LayerNorms (5 FLOPs per element) run on the kept tokens; window attention
    (q k^T and attn v) on every slot of the padded windows; patch mergings on the refilled full
    grid.  STA's own products (similarities, transitions) are reported apart, as for ViT.
    """
    schedule = config.schedule(r1)
    grids = config.grids
    shift = tuple(w // 2 for w in config.window_size)
    n0 = math.prod(grids[0])
    patch = n0 * config.embed_dim * config.in_chans * math.prod(config.patch_size) + LN * n0 * config.embed_dim
    blocks = merges = sta = 0
    tokens_per_block = []
    kept = n0
    for stage, depth in enumerate(config.depths):
        c = config.stage_dim(stage)
        hidden = int(c * config.mlp_ratio)
        for j in range(depth):
            geometry = window_geometry(grids[stage], config.window_size, (0, 0, 0) if j % 2 == 0 else shift)
            tokens_per_block.append(kept)
            linear = kept * (3 * c * c + c * c + 2 * c * hidden) + 2 * LN * kept * c
            blocks += linear + 2 * geometry.num_slots * geometry.window_volume * c
        if stage < config.num_stages - 1:
            merged = math.prod(grids[stage + 1])
            merges += merged * (LN * 4 * c + 4 * c * 2 * c)
            kept = merged
            if schedule.enabled and stage < 3:
                g, n, r = schedule.groups[stage], schedule.group_sizes[stage], schedule.rs[stage]
                sta += sta_stage_flops(g, n, r, 2 * c) + g * n * (n - r) * 3  # + the nearest-kept fill's (n, 3) x (3, k) products
                kept = g * (n - r)
    last = config.stage_dim(config.num_stages - 1)
    head = LN * kept * last + last * config.num_classes
    giga = 1e9
    return FlopsReport(
        model=name,
        r1=r1,
        gflops=(patch + blocks + merges + head) / giga,
        sta_gflops=sta / giga,
        params=swin_params(config),
        tokens_per_stage=list(schedule.tokens_per_stage),
        tokens_per_block=tokens_per_block,
        breakdown={"patch_embed": patch / giga, "blocks": blocks / giga, "merging": merges / giga, "head": head / giga, "sta": sta / giga},
    )
