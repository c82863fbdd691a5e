"""Accuracy of a pruned model at several r1 on a labelled clip list: resumable, failure-tolerant.

Every clip is decoded once and its views go through every r1's backend; the clip's record (top-5
per r1, model seconds; built in records.py) is appended to the results file before the next clip starts.  A re-run with
the same results file skips the clips (and r1 values) already there; clips that failed are skipped
too unless ``retry_failed`` (clips that failed for a reason other than the clip itself, e.g. a
runtime error, are always tried again).
"""

from __future__ import annotations

from pathlib import Path

from .. import _progress
from ..errors import ConfigError
from .clips import load_views
from .records import clip_record
from .report import EvalSummary, summarise
from .results import ResultsFile

ABORT_AFTER = 10  # stop when this many clips fail in a row for a reason other than the clip itself


def weights_identity(backend) -> str:
    if backend.checkpoint is not None:
        path = Path(backend.checkpoint)
        size = path.stat().st_size if path.is_file() else "folder"
        return f"{path.resolve()} ({size})"
    if getattr(backend, "manifest", None) is not None:
        weights = backend.manifest["weights"]
        return f"random-init seed {weights.get('seed')}"
    return backend.source


def settings_for(backends, protocol, source) -> dict:
    first = backends[0]
    return {
        "model": first.model_name,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in first.config.as_dict().items()},
        "weights": weights_identity(first),
        "protocol": protocol.as_dict(),
        "list": str(Path(source).resolve()),
        "backends": {str(b.r1): f"{b.kind}: {b.source}" for b in backends},
    }


def check_backends(backends) -> None:
    if not backends:
        raise ConfigError("nothing to evaluate: no r1 values")
    first = backends[0]
    for backend in backends[1:]:
        if (backend.model_name, backend.num_frames, backend.img_size, backend.num_classes) != (first.model_name, first.num_frames, first.img_size, first.num_classes):
            raise ConfigError(
                f"all models must share the architecture and input: {first.describe()} vs {backend.describe()}"
            )
    seen = [b.r1 for b in backends]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"r1 values repeat: {seen}")


def evaluate(backends, labelled, protocol, *, results_path, restart: bool = False, retry_failed: bool = False, limit: int | None = None,
             progress: bool = True, log=None, produce=None) -> EvalSummary:
    """Evaluate ``backends`` (one per r1) on ``labelled`` (a :class:`LabelledList`), appending to ``results_path``.

    ``produce(todo, protocol)`` yields the finished records of ``todo`` ((clip, backends still to run)
    pairs) in any order; the default runs them here, one after the other.  The Ray path
    (:mod:`.ray_evaluate`) yields them as a cluster finishes them; resume, progress, the failure streak
    and the summary are this function's either way."""
    check_backends(backends)
    for clip in labelled.clips:
        if not 0 <= clip.label < backends[0].num_classes:
            raise ConfigError(f"{labelled.source}: clip {clip.key} has label {clip.label}, outside the model's {backends[0].num_classes} classes")
    results = ResultsFile(results_path).load()
    settings = settings_for(backends, protocol, labelled.source)
    results.open(settings, restart=restart)
    clips = labelled.clips[:limit] if limit else labelled.clips
    say = log or _progress.note  # silent unless the CLI (or the caller) turned progress on
    if results.dropped_torn_line:
        say(f"{results_path}: dropped a half-written last line (its clip is redone)")

    def pending(clip):
        missing = [b for b in backends if str(b.r1) not in results.done_r1(clip.key)]
        if results.failed(clip.key) and not retry_failed:
            return []
        return missing

    todo = [(clip, pending(clip)) for clip in clips]
    todo = [(clip, missing) for clip, missing in todo if missing]
    if len(todo) < len(clips):
        say(f"resuming from {results_path}: {len(clips) - len(todo)} of {len(clips)} clips already done")
    bar = _progress.start_counter("evaluate", len(clips), initial=len(clips) - len(todo), show=progress, unit="clips")
    failures_in_a_row = 0
    watched = str(max(b.r1 for b in backends))
    tally = _Tally(watched, results.records, clips)
    finished = set()
    records = (produce or _run_here)(todo, protocol)
    try:
        for record in records:
            if record["clip"] in finished:
                continue  # a clip a cluster ran twice (a retried task) counts once
            finished.add(record["clip"])
            if "error" in record:
                bar.write(f"skipped {record['clip']}: {record['error']}")
            if record.get("retry"):
                failures_in_a_row += 1
            elif "error" not in record:
                failures_in_a_row = 0
            results.append(record)
            if failures_in_a_row >= ABORT_AFTER:
                raise RuntimeError(f"{ABORT_AFTER} clips in a row failed, the last with {record['error']}; stopping (fix the cause and re-run to resume)")
            tally.add(record)
            bar.update(postfix=tally.postfix())
    finally:
        getattr(records, "close", lambda: None)()  # stops a cluster's pipeline too
        bar.close()
        results.close()
    rows = [(b.r1, f"{b.kind}", b.gflops) for b in backends]
    return summarise(results.records, clips, rows, model=backends[0].model_name, source=labelled.source, protocol=protocol, note=labelled.note)


def _run_here(todo, protocol):
    for clip, missing in todo:
        yield clip_record(clip, protocol, missing, load_views)  # the module's load_views, looked up per clip


class _Tally:
    """Running top-1 of one r1 for the progress bar."""

    def __init__(self, r1: str, records: dict, clips):
        self.r1, self.hits, self.total = r1, 0, 0
        for clip in clips:
            self.add(records.get(clip.key))

    def add(self, record) -> None:
        result = (record or {}).get("results", {}).get(self.r1)
        if result is not None:
            self.total += 1
            self.hits += int(result["top5"][0] == record["label"])

    def postfix(self) -> str:
        return f"top-1 r1={self.r1}: {self.hits / self.total:.1%}" if self.total else ""
