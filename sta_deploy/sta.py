"""STA (Semantic-aware Temporal Accumulation) token pruning as small pure tensor functions.

This module is the single PyTorch statement of the algorithm; backbones call :func:`sta_stage`
after the blocks named by :mod:`sta_deploy.schedule`.  The behaviour follows the authors' code
(github.com/Mark12Ding/STA, ``model_vit.py``) to the letter, token order included, because the
next stage splits its image-style A/B sets by position in the current order.  See
``docs/sta_semantics.md`` for the step-by-step description.

Every function has static output shapes for a fixed ``r``, so the same code exports to ONNX.
Ties are broken towards the token that comes earlier in the current order (a stable sort),
which is also what ONNX TopK specifies, so PyTorch, ONNX Runtime and the plugin agree.
STA's scores are computed in float32 even when the model runs in half precision.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
from torch import Tensor

__all__ = [
    "STA_SCOPE",
    "stable_smallest_k",
    "sort_positions",
    "normalise_metric",
    "semantic_score",
    "image_style_order",
    "accumulate_scores",
    "select_group_tokens",
    "gather_tokens",
    "select_kept",
    "selection_override",
    "sta_stage",
    "StaStage",
]


# Backbones hold their STA stage modules under this attribute name, so every exported node of STA
# carries it in its module scope: profilers (bench --profile) and int8 quantization find STA's nodes by it.
STA_SCOPE = "sta_stages"


def stable_smallest_k(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` smallest entries along the last axis, ascending, ties to the lower index.

    ``torch.topk`` on CPU is not stable under ties; a stable sort is.  Stable sorts cannot be
    exported, so export traces ``topk`` instead: ONNX TopK breaks ties by the lower index.
    """
    if _exporting():
        # ONNX TopK orders equal values by index, i.e. it is the same stable selection.
        return torch.topk(scores, k, dim=-1, largest=False, sorted=True).indices
    return torch.sort(scores, dim=-1, stable=True).indices[..., :k]


def _exporting() -> bool:
    """True while torch.onnx (TorchScript or dynamo exporter) or torch.export traces the model."""
    if torch.onnx.is_in_onnx_export():
        return True
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting and is_exporting())


def sort_positions(positions: Tensor) -> Tensor:
    """Kept positions in ascending order (they are unique, so no tie rule is needed).

    Export traces ``topk`` with a constant k: a traced ``sort`` takes its k from the tensor's
    shape, which is a computed value once the batch dimension is symbolic.
    """
    if _exporting():
        return torch.topk(positions, int(positions.shape[-1]), dim=-1, largest=False, sorted=True).values
    return torch.sort(positions, dim=-1).values


def normalise_metric(metric: Tensor) -> Tensor:
    """L2-normalise each token's metric vector so that cosine similarity is a matrix product."""
    metric = metric.float()
    return metric / metric.norm(dim=-1, keepdim=True)


def semantic_score(x_groups: Tensor) -> Tensor:
    """Per-token semantic score F in [0, 1]: sum of |x| over channels, min-max normalised per group.

    ``x_groups`` is (B, G, n, C); returns (B, G, n) float32.  A group whose tokens all have the same
    magnitude (zero range) gets F = 0 everywhere instead of the reference's 0/0.
    """
    magnitude = x_groups.float().abs().sum(-1)
    low = magnitude.amin(-1, keepdim=True)
    high = magnitude.amax(-1, keepdim=True)
    # A zero spread leaves magnitude - low == 0 everywhere, so any positive divisor gives F = 0; one
    # clamp is one node where a select on spread > 0 was three in the exported graph.
    spread = (high - low).clamp_min(torch.finfo(torch.float32).tiny)
    return (magnitude - low) / spread


def image_style_order(metric: Tensor) -> Tensor:
    """Token order of the first processed group (ToMe-style bipartite drop without semantics).

    ``metric`` is (B, n, D), normalised.  Tokens at even positions form set A, odd positions set B.
    Each A token is scored by its highest cosine similarity to any B token.  Returns a (B, n)
    permutation: all B positions in order, then the A positions by ascending similarity.
    Keeping the first ``n - r`` entries drops the ``r`` most redundant A tokens.
    """
    batch, n, _ = metric.shape
    similarity = metric[:, 0::2] @ metric[:, 1::2].transpose(-1, -2)  # (B, |A|, |B|)
    best_match = similarity.amax(dim=-1)  # (B, |A|)
    a_rank = stable_smallest_k(best_match, best_match.shape[-1])
    a_positions = torch.arange(0, n, 2, device=metric.device)
    b_positions = torch.arange(1, n, 2, device=metric.device)
    return torch.cat([b_positions.expand(batch, -1), a_positions[a_rank]], dim=1)


def accumulate_scores(current: Tensor, previous: Tensor, previous_accumulated: Tensor | None) -> Tensor:
    """The accumulated score of every current token: P @ previous_accumulated, (B, n_cur).

    P (B, n_cur, n_prev) is the softmax over the current tokens of (current @ previous^T): each
    column sums to one, every previous token hands its unit of mass to the current tokens.
    ``previous_accumulated`` None (the first transition) stands for all ones, i.e. P's row sums.
    P is built transposed, as the softmax over the last axis of (previous @ current^T): the same
    numbers, but runtimes implement a last-axis softmax natively, while
    ONNX Runtime transposes the whole matrix in and out for a softmax over axis 1.
    """
    transition_t = (previous @ current.transpose(-1, -2)).softmax(dim=-1)  # (B, n_prev, n_cur) = P^T
    if previous_accumulated is None:
        return transition_t.sum(dim=1)
    return (previous_accumulated.unsqueeze(1) @ transition_t).squeeze(1)


def select_group_tokens(accumulated: Tensor, semantic: Tensor, keep: int) -> tuple[Tensor, Tensor]:
    """Keep the ``keep`` tokens with the smallest ``accumulated * (1 - semantic)``.

    Returns ``(kept_indices, kept_accumulated)``: indices in ascending score order (the group's new
    token order) and their accumulated scores, L1-normalised, ready for the next group.
    """
    score = accumulated * (1.0 - semantic)
    kept_indices = stable_smallest_k(score, keep)
    kept_accumulated = accumulated.gather(1, kept_indices)
    kept_accumulated = kept_accumulated / kept_accumulated.sum(dim=1, keepdim=True)
    return kept_indices, kept_accumulated


def gather_tokens(values: Tensor, indices: Tensor) -> Tensor:
    """values (B, n, D) gathered at indices (B, k) -> (B, k, D).

    Rows of the flattened (B * n, D) tensor rather than GatherElements over an expanded (B, k, D)
    index: exported as one Gather along axis 0, which runtimes copy row by row (OpenVINO runs
    GatherElements and the index Expand with reference kernels: twice the STA time at bf16).  A
    symbolic batch (``--dynamic-batch`` export) keeps GatherElements, whose shapes stay static."""
    batch, count, dim = values.shape
    if not isinstance(batch, int):
        return values.gather(1, indices.unsqueeze(-1).expand(-1, -1, dim))
    rows = indices + torch.arange(batch, device=indices.device).unsqueeze(1) * count
    return values.reshape(batch * count, dim).index_select(0, rows.reshape(-1)).reshape(batch, indices.shape[1], dim)


def _gather_metric_rows(values: Tensor, indices: Tensor) -> Tensor:
    """:func:`gather_tokens` for the selection step's own gathers of a group's metric rows.

    With a static batch of one it is a single Gather along the token axis (the flattened-rows form
    adds an offset Add and three Reshapes, and a group's metric is gathered once per group per stage);
    only the stage's token gather has to keep the form the validator reads."""
    if isinstance(values.shape[0], int) and values.shape[0] == 1:
        return values.index_select(1, indices.reshape(-1))
    return gather_tokens(values, indices)


def group_kept_indices(metric_groups: Tensor, semantic: Tensor, r: int, backward: bool) -> Tensor:
    """The selection step of one STA stage: which tokens of each group survive, in which order.

    ``metric_groups`` (B, G, n, D) normalised float32, ``semantic`` (B, G, n).  Returns (B, G, n - r)
    int64 indices within each group, in the reference order.  This is exactly what the TensorRT
    plugin computes.
    """
    _, num_groups, n, _ = metric_groups.shape
    keep = n - r
    order = list(range(num_groups))
    if backward:
        order.reverse()
    kept: list[Tensor | None] = [None] * num_groups

    first = order[0]
    first_order = image_style_order(metric_groups[:, first])
    kept[first] = first_order[:, :keep]
    # Quirk of the reference code: the first transition looks at the first group's full n tokens,
    # dropped ones included (the paper says they are cut off).  Only row sums of P use them; they
    # are still taken in the reference's order so that the float summation order matches too.
    previous_metric = _gather_metric_rows(metric_groups[:, first], first_order)
    previous_accumulated = None
    for group in order[1:]:
        current_metric = metric_groups[:, group]
        accumulated = accumulate_scores(current_metric, previous_metric, previous_accumulated)
        kept_indices, previous_accumulated = select_group_tokens(accumulated, semantic[:, group], keep)
        kept[group] = kept_indices
        previous_metric = _gather_metric_rows(current_metric, kept_indices)
    return torch.stack(kept, dim=1)  # type: ignore[arg-type]


# Export can route the selection step elsewhere (the TensorRT plugin node); None = PyTorch.
_selection_impl: contextvars.ContextVar = contextvars.ContextVar("sta_selection_impl", default=None)


@contextlib.contextmanager
def selection_override(impl):
    """Within the block, :func:`select_kept` calls ``impl(metric_groups, semantic, r, backward)``."""
    token = _selection_impl.set(impl)
    try:
        yield
    finally:
        _selection_impl.reset(token)


def select_kept(metric_groups: Tensor, semantic: Tensor, r: int, backward: bool) -> Tensor:
    """:func:`group_kept_indices`, unless an export has routed the selection elsewhere."""
    impl = _selection_impl.get()
    if impl is None:
        return group_kept_indices(metric_groups, semantic, r, backward)
    return impl(metric_groups, semantic, r, backward)


def sta_stage(
    x: Tensor,
    metric: Tensor,
    positions: Tensor,
    *,
    num_groups: int,
    r: int,
    backward: bool,
) -> tuple[Tensor, Tensor]:
    """Run one STA stage on a block's output.

    Args:
        x: (B, N, C) block output (after the MLP residual).
        metric: (B, N, D) the block's attention keys averaged over heads (not yet normalised).
        positions: (B, N) int64 original flattened position ``t * n_s + s`` of every token.
        num_groups: G; N must be divisible by it.  Groups are consecutive runs of tokens.
        r: tokens dropped from every group.
        backward: process the groups last-to-first (stage 2 of the F-B-F order).

    Returns ``(x_kept, positions_kept)`` of shapes (B, G * (n - r), C) and (B, G * (n - r)):
    groups in their original temporal order, tokens within a group in the reference order.
    """
    batch, num_tokens, channels = x.shape
    n = num_tokens // num_groups
    x_groups = x.reshape(batch, num_groups, n, channels)
    metric_groups = normalise_metric(metric).reshape(batch, num_groups, n, metric.shape[-1])
    kept_in_group = select_kept(metric_groups, semantic_score(x_groups), r, backward)
    group_offsets = (torch.arange(num_groups, device=x.device) * n).view(1, num_groups, 1)
    flat_indices = (kept_in_group + group_offsets).reshape(batch, -1)
    return gather_tokens(x, flat_indices), positions.gather(1, flat_indices)


class StaStage(torch.nn.Module):
    """A parameterless module around :func:`sta_stage`.

    Backbones hold one per stage so that exported graphs carry the module name (``sta_stages.i``)
    in their node scopes: profilers and the plugin export can tell STA's nodes from the blocks'.
    """

    def __init__(self, num_groups: int, r: int, backward: bool):
        super().__init__()
        self.num_groups = num_groups
        self.r = r
        self.backward = backward

    def extra_repr(self) -> str:
        return f"num_groups={self.num_groups}, r={self.r}, direction={'backward' if self.backward else 'forward'}"

    def forward(self, x: Tensor, metric: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        return sta_stage(x, metric, positions, num_groups=self.num_groups, r=self.r, backward=self.backward)
