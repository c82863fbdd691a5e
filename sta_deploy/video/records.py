"""One clip's ``evaluate`` record, built the same way in the local loop and on a Ray cluster.

A record is ``{"clip", "label"}`` plus either the decode fields (``views``, ``frames``,
``decode_seconds``) and ``results`` (top-5, top score, model seconds per r1), or an ``error``:
the clip's own reason (:class:`VideoError`: unreadable, too short...) or, with ``"retry": true``,
any other exception (memory, runtime): not the clip's fault, so a re-run tries it again.
"""

from __future__ import annotations

import time

from .errors import VideoError
from .predict import average_views, top_k


def new_record(key: str, label: int) -> dict:
    return {"clip": key, "label": label}


def decode_into(record: dict, path, protocol, load):
    """``load(path, protocol)`` (decode + sample the views); adds the decode fields; returns the views."""
    start = time.perf_counter()
    views = load(path, protocol)
    record.update(views=protocol.num_views, frames=views.total_frames, decode_seconds=round(time.perf_counter() - start, 4))
    return views


def run_into(record: dict, backends, tensors, protocol) -> dict:
    """Every backend on the clip's views (``tensors``: (views, 3, T, S, S)), averaged as the protocol says."""
    outcome = {}
    for backend in backends:
        before = backend.seconds
        logits, _ = backend.run(tensors)
        classes, scores = top_k(average_views(logits, protocol.average), 5)
        outcome[str(backend.r1)] = {"top5": classes, "score": round(scores[0], 6), "seconds": round(backend.seconds - before, 5)}
    record["results"] = outcome
    return record


def error_into(record: dict, error: Exception) -> dict:
    if isinstance(error, VideoError):
        record["error"] = error.reason
    else:
        record["error"] = f"{type(error).__name__}: {error}"
        record["retry"] = True  # not the clip's fault (memory, runtime...): a re-run tries it again
    return record


def clip_record(clip, protocol, backends, load) -> dict:
    """The record of ``clip`` (a LabelledClip) through ``backends``: decode, run, or the error."""
    record = new_record(clip.key, clip.label)
    try:
        views = decode_into(record, clip.path, protocol, load)
        run_into(record, backends, views.tensors(), protocol)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as error:  # a failing clip must not stop thousands of others
        error_into(record, error)
    return record
