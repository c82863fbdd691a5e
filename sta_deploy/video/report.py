"""The evaluate summary: accuracy per r1 from the results records, as a table, JSON, CSV and a plot."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .._io import atomic_path
from .errors import require


@dataclass
class EvalRow:
    r1: int
    backend: str
    gflops: float  # per view
    clips: int
    top1: float
    top5: float
    seconds: float  # model time over all clips and views

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0


@dataclass
class EvalSummary:
    model: str
    source: str  # the clip list
    protocol: str
    views: str
    clips_total: int
    rows: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # (clip, error)
    pending: int = 0  # clips not evaluated yet (an interrupted or --limit run)
    note: str = ""

    def baseline(self):
        return next((row for row in self.rows if row.r1 == 0), None)

    def as_dict(self) -> dict:
        base = self.baseline()
        rows = []
        for row in self.rows:
            data = asdict(row)
            data["clips_per_s"] = row.clips_per_s
            data["delta_top1"] = (row.top1 - base.top1) if base and base.clips and row.clips else None
            data["gflops_saving"] = (1 - row.gflops / base.gflops) if base else None
            rows.append(data)
        return {"model": self.model, "list": self.source, "protocol": self.protocol, "views": self.views,
                "clips_total": self.clips_total, "clips_failed": len(self.failed), "clips_pending": self.pending,
                "failed": [{"clip": c, "error": e} for c, e in self.failed], "results": rows, "note": self.note}

    def table(self) -> str:
        base = self.baseline()
        done = max((row.clips for row in self.rows), default=0)
        lines = [
            f"{self.model} on {self.source}: {done} clips evaluated, {len(self.failed)} failed"
            + (f", {self.pending} pending" if self.pending else "") + f"; {self.views} views ({self.protocol})",
        ]
        header = f"{'r1':>5}  {'GFLOPs/view':>14}  {'top-1':>7}  {'top-5':>7}  {'Δtop-1':>7}  {'clips/s':>8}  {'clips':>6}  backend"
        lines.append(header)
        for row in self.rows:
            saving = f" ({-(1 - row.gflops / base.gflops):+.0%})" if base and row is not base and base.gflops else ""
            gflops = f"{row.gflops:.1f}{saving}" if row.gflops >= 10 else f"{row.gflops:.3g}{saving}"
            delta = f"{100 * (row.top1 - base.top1):+.1f}" if base and row is not base and base.clips and row.clips else "—"
            top1 = f"{row.top1:.1%}" if row.clips else "—"
            top5 = f"{row.top5:.1%}" if row.clips else "—"
            lines.append(f"{row.r1:>5}  {gflops:>14}  {top1:>7}  {top5:>7}  {delta:>7}  {row.clips_per_s:>8.2f}  {row.clips:>6}  {row.backend}")
        if self.failed:
            shown = ", ".join(f"{c} ({e})" for c, e in self.failed[:3])
            lines.append(f"failed: {shown}" + (f" and {len(self.failed) - 3} more (see the results file)" if len(self.failed) > 3 else ""))
        lines.append("GFLOPs per view without STA's own products (as 'sta-deploy models' and 'flops' count them)")
        if self.note:
            lines.append(f"note: {self.note}")
        return "\n".join(lines)

    def write_json(self, path) -> Path:
        with atomic_path(path) as temp:
            temp.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        return Path(path)

    def write_csv(self, path) -> Path:
        data = self.as_dict()["results"]
        fields = ["r1", "backend", "gflops", "gflops_saving", "top1", "top5", "delta_top1", "clips", "clips_per_s", "seconds"]
        with atomic_path(path) as temp:
            with open(temp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(data)
        return Path(path)

    def plot(self, path) -> Path:
        """Top-1 and top-5 against GFLOPs per view, one point per r1."""
        matplotlib = require("matplotlib", "matplotlib", "the accuracy plot")
        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        rows = sorted((row for row in self.rows if row.clips), key=lambda row: row.gflops)
        figure, axis = plt.subplots(figsize=(6, 4), dpi=120)
        if rows:
            x = [row.gflops for row in rows]
            axis.plot(x, [100 * row.top1 for row in rows], "o-", label="top-1")
            axis.plot(x, [100 * row.top5 for row in rows], "s--", label="top-5", alpha=0.8)
            for row in rows:
                axis.annotate(f"r1={row.r1}", (row.gflops, 100 * row.top1), textcoords="offset points", xytext=(4, -12), fontsize=8)
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        axis.xaxis.set_major_locator(MaxNLocator(5))
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
        axis.margins(x=0.12, y=0.1)
        axis.set_xlabel("GFLOPs per view")
        axis.set_ylabel("accuracy (%)")
        done = max((row.clips for row in self.rows), default=0)
        axis.set_title(f"{self.model}: accuracy vs GFLOPs ({done} clips, {self.views} views)", fontsize=10)
        axis.grid(alpha=0.3)
        axis.legend()
        figure.tight_layout()
        with atomic_path(path) as temp:
            figure.savefig(temp, format="png")
        plt.close(figure)
        return Path(path)


def summarise(records: dict, clips, r1_rows, *, model: str, source: str, protocol, note: str = "") -> EvalSummary:
    """``records``: clip key -> record; ``clips``: the list's LabelledClips; ``r1_rows``: (r1, backend, gflops) in order."""
    summary = EvalSummary(model, source, protocol.name, protocol.views, len(clips), note=note)
    keys = [clip.key for clip in clips]
    for r1, backend, gflops in r1_rows:
        hits1 = hits5 = count = 0
        seconds = 0.0
        for key in keys:
            record = records.get(key)
            result = (record or {}).get("results", {}).get(str(r1))
            if result is None:
                continue
            count += 1
            top5 = result["top5"]
            hits1 += int(top5[0] == record["label"])
            hits5 += int(record["label"] in top5[:5])
            seconds += result.get("seconds", 0.0)
        summary.rows.append(EvalRow(r1, backend, gflops, count, hits1 / count if count else 0.0, hits5 / count if count else 0.0, seconds))
    for key in keys:
        record = records.get(key)
        if record is not None and "error" in record and not record.get("results"):
            summary.failed.append((key, record["error"]))
    wanted = {str(r1) for r1, _, _ in r1_rows}
    finished = sum(1 for key in keys if key in records and ("error" in records[key] or wanted <= set(records[key].get("results", {}))))
    summary.pending = len(keys) - finished
    return summary
