"""Top-k predictions for clips: views through a backend, averaged as the backbone's protocol does."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import StaDeployError
from .clips import load_views
from .errors import VideoError
from .sampling import SamplingProtocol, checkpoint_normalisation, protocol_for


@dataclass
class Prediction:
    path: str
    classes: list  # class indices, best first
    scores: list  # their averaged probabilities
    views: int
    total_frames: int
    seconds: float  # model time for all views
    decode_seconds: float = 0.0
    views_file: str | None = None  # where --save-views wrote the model input

    def as_dict(self, names=None) -> dict:
        top = [{"class": int(c), "label": names[c] if names else str(c), "score": round(float(s), 6)} for c, s in zip(self.classes, self.scores)]
        result = {"path": self.path, "top": top, "views": self.views, "frames": self.total_frames, "seconds": round(self.seconds, 4)}
        if self.views_file is not None:
            result["views_file"] = self.views_file
        return result


@dataclass
class PredictionRun:
    predictions: list = field(default_factory=list)
    failures: list = field(default_factory=list)  # (path, message)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def average_views(logits: np.ndarray, average: str) -> np.ndarray:
    """(views, C) logits -> (C,) probabilities: VideoMAE averages logits, mmaction2 averages softmax scores."""
    logits = np.asarray(logits, dtype=np.float64)
    if average == "prob":
        return softmax(logits).mean(axis=0)
    return softmax(logits.mean(axis=0))


def check_finite_scores(logits: np.ndarray, path) -> None:
    """Refuse NaN/inf model outputs: their "top classes" would be arbitrary (argsort puts NaN first or last)."""
    bad = ~np.isfinite(np.asarray(logits, dtype=np.float64))
    if bad.any():
        raise StaDeployError(
            f"{path}: the model returned non-finite scores ({int(bad.sum())} of {bad.size} logits are NaN/inf); "
            "its weights or exported graph are broken: check them with 'sta-deploy validate'"
        )


def top_k(scores: np.ndarray, k: int) -> tuple[list, list]:
    order = np.argsort(-scores, kind="stable")[: max(1, min(k, len(scores)))]
    return order.tolist(), scores[order].tolist()


def protocol_for_backend(backend, *, dataset: str = "k400", views=None, stride=None, min_frames=None) -> SamplingProtocol:
    """The backbone's protocol at the backend's input size, with the checkpoint's mean/std when it has them."""
    norm = checkpoint_normalisation(backend.checkpoint)
    mean, std = norm if norm else (None, None)
    return protocol_for(
        backend.family, num_frames=backend.num_frames, img_size=backend.img_size, dataset=dataset, views=views, stride=stride,
        min_frames=min_frames, mean=mean, std=std,
    )


def views_saver(folder):
    """A function (views, clip path) -> file that writes one clip's model input as
    ``folder/<clip file name>.views.npy``, (views, 3, T, S, S) float32, atomically, for running it
    elsewhere (e.g. examples/classify).  A re-run overwrites; two clips of one name in one run get
    ``<name>.2.views.npy`` and so on."""
    from .._io import atomic_path

    folder = Path(folder)
    taken: set = set()

    def save(views: np.ndarray, path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        name, number = f"{Path(path).name}.views.npy", 1
        while name in taken:
            number += 1
            name = f"{Path(path).name}.{number}.views.npy"
        taken.add(name)
        with atomic_path(folder / name) as temp:
            with open(temp, "wb") as handle:
                np.save(handle, views)
        return str(folder / name)

    return save


def predict_clip(backend, path, protocol: SamplingProtocol, *, top: int = 5, save=None) -> Prediction:
    start = time.perf_counter()
    clip = load_views(path, protocol)
    decode_seconds = time.perf_counter() - start
    views = clip.tensors()
    views_file = save(views, path) if save is not None else None
    before = backend.seconds
    logits, _ = backend.run(views)
    check_finite_scores(logits, path)
    scores = average_views(logits, protocol.average)
    classes, values = top_k(scores, top)
    return Prediction(str(path), classes, values, protocol.num_views, clip.total_frames, backend.seconds - before, decode_seconds, views_file)


def predict_files(backend, paths, protocol: SamplingProtocol, *, top: int = 5, on_result=None, views_folder=None) -> PredictionRun:
    """Predict every clip; unreadable / empty / too-short clips are recorded in ``failures`` and skipped.

    ``views_folder``: also save each clip's model input there (see :func:`views_saver`)."""
    run = PredictionRun()
    save = views_saver(views_folder) if views_folder is not None else None
    for path in paths:
        try:
            result = predict_clip(backend, path, protocol, top=top, save=save)
        except VideoError as error:
            run.failures.append((str(path), error.reason))
            result = None
        if result is not None:
            run.predictions.append(result)
        if on_result is not None:
            on_result(path, result, run.failures[-1][1] if result is None else None)
    return run
