"""The clips ``tune`` measures on, labelled or not, and their decoded views (kept in memory while they fit).

Accepted: a ``path label`` list or a folder with a sub-folder per class (labelled, as ``evaluate``
reads them), a list of paths one per line, or a flat folder of videos / frame folders (unlabelled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .clips import load_views
from .dataset import read_labelled_list
from .decode import is_clip_path

VIEW_CACHE_BYTES = 1 << 30  # decoded views kept between points; beyond this, clips are decoded again


@dataclass
class ClipSet:
    keys: list  # as written in the list (or relative to the folder)
    paths: list
    labels: list | None  # class indices, or None for unlabelled clips
    source: str


def _flat_folder(source: Path) -> ClipSet:
    items = sorted(p for p in source.iterdir() if is_clip_path(p))
    if not items:
        raise ConfigError(f"{source} has no videos (or frame folders, or class sub-folders with videos)")
    return ClipSet([p.name for p in items], items, None, str(source))


def _path_list(source: Path, root: Path) -> ClipSet:
    keys = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise ConfigError(f"clip list {source} has no clips")
    paths = [Path(k) if Path(k).is_absolute() else root / k for k in keys]
    return ClipSet(keys, paths, None, str(source))


def read_clip_set(source, *, root=None) -> ClipSet:
    source = Path(source)
    if not source.exists():
        raise ConfigError(f"--clips {source} does not exist; give a clip list file or a folder of videos")
    if source.is_dir():
        has_classes = any(p.is_dir() and not is_clip_path(p) for p in source.iterdir())
        if not has_classes:
            return _flat_folder(source)
    try:
        labelled = read_labelled_list(source, root=root)
    except ConfigError:
        if source.is_dir():
            raise
        return _path_list(source, Path(root) if root else source.parent)
    return ClipSet([c.key for c in labelled.clips], [c.path for c in labelled.clips], [c.label for c in labelled.clips], labelled.source)


class ViewCache:
    """Views of each clip, decoded on first use and kept while the total stays under ``limit`` bytes."""

    def __init__(self, paths, protocol, limit: int = VIEW_CACHE_BYTES):
        self.paths, self.protocol, self.limit = list(paths), protocol, limit
        self._kept: dict[int, np.ndarray] = {}
        self._bytes = 0
        self.decoded = 0  # decodes so far (a test counts them)

    def views(self, index: int) -> np.ndarray:
        if index in self._kept:
            return self._kept[index]
        tensors = load_views(self.paths[index], self.protocol).tensors()
        self.decoded += 1
        if self._bytes + tensors.nbytes <= self.limit:
            self._kept[index] = tensors
            self._bytes += tensors.nbytes
        return tensors
