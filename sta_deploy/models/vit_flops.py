"""FLOPs and parameter count of a VideoMAE ViT in closed form, as fvcore counts them (see :mod:`.flops`)."""

from __future__ import annotations

from .flops import LAYER_NORM_FLOPS_PER_ELEMENT, FlopsReport, sta_stage_flops


def vit_block_flops(tokens: int, dim: int, mlp_hidden: int) -> int:
    """One pre-norm block: qkv, q@k^T, attn@v, proj, two MLP layers, two LayerNorms."""
    linear = tokens * dim * (3 * dim) + tokens * dim * dim + 2 * tokens * dim * mlp_hidden
    attention = 2 * tokens * tokens * dim
    norms = 2 * LAYER_NORM_FLOPS_PER_ELEMENT * tokens * dim
    return linear + attention + norms


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
