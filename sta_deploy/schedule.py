"""Where STA runs and how many tokens survive each stage (pure arithmetic, no torch).

The authors' code prunes right after the outputs of blocks ``0``, ``L // 3`` and ``2 * L // 3``.
Stage ``i`` splits the current tokens into ``G_i`` equal groups (``n_t``, ``n_t / 2``, ``n_t / 4``
where ``n_t`` is the number of temporal slices) and drops the same ``r1`` tokens from every group.
Stage 2 walks the groups backward (the paper's forward-backward-forward order).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

STAGE_DIRECTIONS = ("forward", "backward", "forward")


@dataclass(frozen=True)
class StaSchedule:
    """Static geometry of STA on one model: everything export needs to fix its shapes."""

    r1: int
    depth: int
    num_temporal: int  # n_t: temporal slices after the tubelet embedding
    num_spatial: int  # n_s: patches per slice
    stage_blocks: tuple[int, ...]  # 0-based block index after whose output each stage runs
    groups: tuple[int, ...]  # G per stage
    group_sizes: tuple[int, ...]  # n per group at each stage's input
    directions: tuple[str, ...]  # "forward" or "backward" per stage

    @property
    def enabled(self) -> bool:
        return self.r1 > 0

    @property
    def num_tokens(self) -> int:
        return self.num_temporal * self.num_spatial

    @property
    def drops_per_group(self) -> tuple[int, ...]:
        """Tokens dropped from every group at each stage (ViT: r1 at every stage)."""
        return (self.r1,) * len(self.groups)

    @property
    def tokens_per_stage(self) -> tuple[int, ...]:
        """Tokens remaining after each stage (all tokens when r1 = 0)."""
        return tuple(g * (n - r) for g, n, r in zip(self.groups, self.group_sizes, self.drops_per_group))

    @property
    def dropped_per_stage(self) -> tuple[int, ...]:
        return tuple(g * r for g, r in zip(self.groups, self.drops_per_group))

    def tokens_at_block(self, block: int) -> int:
        """Tokens that enter block ``block`` (0-based)."""
        tokens = self.num_tokens
        for stage_block, after in zip(self.stage_blocks, self.tokens_per_stage):
            if block > stage_block:
                tokens = after
        return tokens

    def describe(self) -> str:
        """The drop schedule as the paper writes it, e.g. ``{8x48, 4x48, 2x48}``."""
        return "{" + ", ".join(f"{g}x{r}" for g, r in zip(self.groups, self.drops_per_group)) + "}"

    def as_dict(self) -> dict:
        return {
            "r1": self.r1,
            "stage_blocks": list(self.stage_blocks),
            "groups": list(self.groups),
            "group_sizes": list(self.group_sizes),
            "directions": list(self.directions),
            "dropped_per_stage": list(self.dropped_per_stage),
            "tokens_per_stage": list(self.tokens_per_stage),
            "tokens_in": self.num_tokens,
            "drop_schedule": self.describe(),
        }


def vit_schedule(*, depth: int, num_temporal: int, num_spatial: int, r1: int) -> StaSchedule:
    """Validate ``r1`` for a ViT of this geometry and return its schedule.

    Raises :class:`ConfigError` (a ``ValueError``) naming the limit when ``r1`` is impossible.
    """
    if not isinstance(r1, int) or isinstance(r1, bool):
        raise ConfigError(f"r1 must be an integer, got {r1!r}")
    if r1 < 0:
        raise ConfigError(f"r1 must be >= 0, got {r1}")
    if r1 == 0:
        # Unpruned: any depth and frame count is a valid VideoMAE; the stages are only nominal.
        groups = (num_temporal, max(num_temporal // 2, 1), max(num_temporal // 4, 1))
        return StaSchedule(
            r1=0,
            depth=depth,
            num_temporal=num_temporal,
            num_spatial=num_spatial,
            stage_blocks=(0, depth // 3, 2 * depth // 3),
            groups=groups,
            group_sizes=tuple(num_temporal * num_spatial // g for g in groups),
            directions=STAGE_DIRECTIONS,
        )
    if depth < 3:
        raise ConfigError(f"STA needs a depth of at least 3 blocks (stages at blocks 0, L//3, 2L//3), got depth={depth}")
    stage_blocks = (0, depth // 3, 2 * depth // 3)
    if num_temporal % 4 != 0:
        raise ConfigError(
            f"STA halves the frame groups twice ({num_temporal} -> {num_temporal / 2:g} -> {num_temporal / 4:g}), "
            f"so the number of temporal slices (num_frames / tubelet_size = {num_temporal}) must be a multiple of 4; "
            "use num_frames = 8, 16, 24, 32, ..."
        )
    groups = (num_temporal, num_temporal // 2, num_temporal // 4)
    group_sizes = []
    n = num_spatial
    for stage, g in enumerate(groups):
        group_sizes.append(n)
        if r1 > 0 and n - r1 < 1:
            limit = max_r1(num_spatial)
            raise ConfigError(
                f"r1={r1} leaves no token in a group at STA stage {stage + 1} (group of {n} tokens); "
                f"the largest r1 for {num_spatial} patches per frame is {limit}"
            )
        if stage + 1 < len(groups):
            # Two neighbouring groups merge into one at the next stage.
            n = 2 * (n - r1)
    return StaSchedule(
        r1=r1,
        depth=depth,
        num_temporal=num_temporal,
        num_spatial=num_spatial,
        stage_blocks=stage_blocks,
        groups=groups,
        group_sizes=tuple(group_sizes),
        directions=STAGE_DIRECTIONS,
    )


def max_r1(num_spatial: int) -> int:
    """Largest r1 that leaves at least one token in every group at every stage."""
    best = 0
    for r in range(1, num_spatial):
        n1 = num_spatial - r
        n2 = 2 * n1 - r
        n3 = 2 * n2 - r
        if min(n1, n2, n3) >= 1:
            best = r
    return best
