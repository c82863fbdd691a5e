"""Which sweep point to deploy: the budget, the Pareto front, the choice, and the closest miss.

A point meets the budget when

* ``--budget-ms X``: its median latency (one call of the exported model on one batch, see
  :mod:`.tune_sweep`) is at most X ms;
* ``--speedup S``: the unpruned fp32 model's median latency on the same backend divided by its own is at least S;
* ``--gflops G``: its model FLOPs per view (fvcore convention, STA's own products excluded) are at most G.

Of the points that meet it, the one with the smallest accuracy cost wins: the highest top-1 agreement
with the unpruned fp32 model, then the lowest mean KL, then the lowest latency (or GFLOPs).  When none
meets it, the answer is the point closest to it (the fastest, or the cheapest in GFLOPs) and by how much
it misses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from .tune_points import Point

MODES = {"ms": "--budget-ms", "speedup": "--speedup", "gflops": "--gflops"}


@dataclass
class PointResult:
    point: Point
    gflops: float
    measures: dict
    export: str = ""
    latencies_ms: list = field(default_factory=list)

    @property
    def latency_ms(self) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    def cost_key(self) -> tuple:
        """Smaller is better: accuracy first, then speed."""
        cheap = self.latency_ms if self.latency_ms is not None else self.gflops
        return (-self.measures["top1_agreement"], self.measures["mean_kl"], cheap)


@dataclass(frozen=True)
class Budget:
    mode: str  # "ms", "speedup" or "gflops"
    value: float

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"budget mode {self.mode!r} is not one of {', '.join(MODES)}")
        if not self.value > 0:
            raise ConfigError(f"{MODES[self.mode]} must be > 0, got {self.value}")

    @property
    def needs_timing(self) -> bool:
        return self.mode != "gflops"

    def measure(self, result: PointResult, baseline_ms: float | None) -> float:
        """The point's figure in the budget's unit (ms, speed-up x, GFLOPs)."""
        if self.mode == "gflops":
            return result.gflops
        if result.latency_ms is None:
            raise ConfigError(f"{result.point.key} has no latency measured")
        if self.mode == "ms":
            return result.latency_ms
        return baseline_ms / result.latency_ms

    def meets(self, figure: float) -> bool:
        return figure >= self.value if self.mode == "speedup" else figure <= self.value

    def describe(self, figure: float | None = None) -> str:
        unit = {"ms": " ms", "speedup": "x speed-up", "gflops": " GFLOPs/view"}[self.mode]
        return f"{self.value:g}{unit}" if figure is None else f"{figure:.4g}{unit}"


@dataclass
class Choice:
    chosen: PointResult  # the answer, or the closest miss
    met: bool
    figure: float  # chosen's figure in the budget's unit
    miss: float = 0.0  # how far past the budget (budget units), 0 when met
    baseline_ms: float | None = None


def pareto_front(results: list[PointResult], *, by_latency: bool = True) -> list[PointResult]:
    """Points no other point beats in both cost (latency, or GFLOPs) and top-1 agreement: the curve of
    the plot.  Among points equal in both, the lower mean KL stays."""
    def cost(result):
        return result.latency_ms if by_latency else result.gflops

    def score(result):
        return (cost(result), -result.measures["top1_agreement"])

    front = []
    for result in results:
        mine = score(result)
        beaten = any(
            all(t <= m for t, m in zip(score(other), mine))
            and (score(other) != mine or other.measures["mean_kl"] < result.measures["mean_kl"])
            for other in results if other is not result
        )
        if not beaten:
            front.append(result)
    return sorted(front, key=cost)


def baseline_latency(results: list[PointResult]) -> float | None:
    for result in results:
        if result.point.r1 == 0 and result.point.precision == "fp32":
            return result.latency_ms
    return None


def choose(results: list[PointResult], budget: Budget) -> Choice:
    if not results:
        raise ConfigError("no sweep point was measured")
    baseline = baseline_latency(results) if budget.needs_timing else None
    if budget.mode == "speedup" and not baseline:
        raise ConfigError("--speedup needs the latency of r1 = 0 fp32, which was not measured")
    figures = {id(r): budget.measure(r, baseline) for r in results}
    meeting = [r for r in results if budget.meets(figures[id(r)])]
    if meeting:
        best = min(meeting, key=lambda r: r.cost_key())
        return Choice(best, True, figures[id(best)], baseline_ms=baseline)
    if budget.mode == "speedup":
        closest = max(results, key=lambda r: (figures[id(r)], -r.cost_key()[0]))
        miss = budget.value - figures[id(closest)]
    else:
        closest = min(results, key=lambda r: (figures[id(r)], r.cost_key()))
        miss = figures[id(closest)] - budget.value
    return Choice(closest, False, figures[id(closest)], miss, baseline)
