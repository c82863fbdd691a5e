"""``DIR/tune.jsonl``: what a ``tune`` sweep has finished, so that a killed sweep continues where it stopped.

The first line is a header ``{"format": "sta_deploy.tune", "version": 1, "settings": {...}}``; then::

    {"kind": "reference", "clips": ["a.mp4", ...], "failed": {"bad.mp4": "reason"}, "logits": "logits/reference.npy"}
    {"kind": "accuracy", "point": {"r1": 8, "precision": "fp32", "backend": "onnxruntime"}, "gflops": 1.2,
     "measures": {...}, "logits": "logits/r8_onnxruntime_fp32.npy", "export": "exports/vit_s_r8.onnx"}
    {"kind": "latency", "point": {...}, "round": 0, "ms": [3.1, 3.0, 3.2]}

A point's accuracy is done when its ``accuracy`` line is there, its latency when all its rounds are.
Every line is flushed and fsync'ed at once (a killed run loses at most what was in flight); a torn last
line is dropped on the next start.
"""

from __future__ import annotations

from .._io import JsonLinesLog
from ..errors import ConfigError

FORMAT = "sta_deploy.tune"
VERSION = 1


class TuneLog(JsonLinesLog):
    def __init__(self, path):
        super().__init__(path)
        self.settings: dict | None = None
        self.reference: dict | None = None
        self.accuracy: dict[str, dict] = {}  # point key -> record
        self.latency: dict[str, dict[int, list]] = {}  # point key -> round -> ms

    def _load(self) -> None:
        self.settings, self.reference, self.accuracy, self.latency = None, None, {}, {}
        for number, item in self.read_lines(what="a tune results file")[0]:
            self._take(item, number)

    def _take(self, item: dict, number: int) -> None:
        kind = item.get("kind")
        if item.get("format") == FORMAT:
            self.settings = item.get("settings")
        elif kind == "reference":
            self.reference = item
        elif kind == "accuracy":
            self.accuracy[_key(item["point"])] = item
        elif kind == "latency":
            self.latency.setdefault(_key(item["point"]), {})[int(item["round"])] = item["ms"]
        else:
            raise ConfigError(f"{self.path}:{number} is not a tune record; choose another -o, or pass --restart")

    def open(self, settings: dict, *, restart: bool = False) -> "TuneLog":
        """Load what is there and start appending; holds the file's lock until :meth:`close`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock()
        try:
            if restart and self.path.exists():
                self.path.unlink()
            self._load()
            if self.settings is not None and self.settings != settings:
                changed = sorted(k for k in set(settings) | set(self.settings) if settings.get(k) != self.settings.get(k))
                raise ConfigError(
                    f"{self.path} holds a sweep of another setup ({', '.join(changed)} differ); choose another -o, or pass --restart to discard it"
                )
            self.start_appending()
            if self.settings is None:
                self.append({"format": FORMAT, "version": VERSION, "settings": settings})
        except BaseException:
            self.close()
            raise
        return self

    def rounds_done(self, key: str) -> int:
        return len(self.latency.get(key, {}))

    def latencies(self, key: str) -> list:
        return [ms for _, values in sorted(self.latency.get(key, {}).items()) for ms in values]

    def append(self, item: dict) -> None:
        self.write_line(item)
        self._take(item, 0)


def _key(point: dict) -> str:
    return f"r{point['r1']}_{point['backend']}_{point['precision']}"
