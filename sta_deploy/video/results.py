"""The resumable results file of ``evaluate``: JSON lines, one per finished (or failed) clip.

Line 1 (and again whenever new r1 values join) is a header ``{"format": "sta_deploy.evaluate",
"version": 1, "settings": {...}}``; every other line is a clip record::

    {"clip": "abseiling/a1.mp4", "label": 0, "views": 15, "frames": 300, "decode_seconds": 0.21,
     "results": {"0": {"top5": [0, 7, ...], "score": 0.83, "seconds": 1.9}, "48": {...}}}
    {"clip": "broken.mp4", "label": 3, "error": "not a readable video (...)"}
    {"clip": "big.mp4", "label": 5, "error": "RuntimeError: ...", "retry": true}   # not the clip's fault

Each line is flushed and fsync'ed as soon as its clip is done, so a killed run loses at most the
clip in flight; a torn last line is dropped on the next start.  Records of one clip merge (a later
line adds r1 values, or replaces an error).
"""

from __future__ import annotations

import json

from .._io import JsonLinesLog
from ..errors import ConfigError

FORMAT = "sta_deploy.evaluate"
VERSION = 1
# settings that must match for old results to count
MUST_MATCH = ("model", "config", "weights", "protocol", "list")


class ResultsFile(JsonLinesLog):
    def __init__(self, path):
        super().__init__(path)
        self.settings: dict | None = None
        self.records: dict[str, dict] = {}
        self.dropped_torn_line = False

    # ------------------------------------------------------------------ reading
    def load(self) -> "ResultsFile":
        self.settings, self.records = None, {}
        # A torn last line (a run killed mid-line) is dropped: its clip is simply redone.
        items, dropped = self.read_lines(what="an evaluate results file")
        self.dropped_torn_line = self.dropped_torn_line or dropped
        for number, item in items:
            if item.get("format") == FORMAT:
                settings = item.get("settings", {})
                if self.settings is None:
                    self.settings = settings
                else:
                    self.settings = {**self.settings, **settings, "backends": {**self.settings.get("backends", {}), **settings.get("backends", {})}}
            elif "clip" in item:
                self._merge(item)
            else:
                raise ConfigError(f"{self.path}:{number} is not an evaluate record; choose another -o, or pass --restart")
        if self.records and self.settings is None:
            raise ConfigError(f"{self.path} has no header line; it was not written by 'sta-deploy evaluate' (choose another -o, or --restart)")
        return self

    def _merge(self, item: dict) -> None:
        key = item["clip"]
        old = self.records.get(key)
        if old is None or not old.get("results"):
            self.records[key] = item  # first record, or a retry of a failed clip
        elif "error" not in item:
            self.records[key] = {**old, **item, "results": {**old["results"], **item.get("results", {})}}
        # an error after earlier successes keeps the successes

    def done_r1(self, key: str) -> set:
        record = self.records.get(key)
        return set(record.get("results", {})) if record else set()

    def failed(self, key: str) -> bool:
        """The clip itself failed (unreadable, empty, too short): skipped on resume unless retried."""
        record = self.records.get(key)
        return bool(record) and "error" in record and not record.get("results") and not record.get("retry")

    # ------------------------------------------------------------------ writing
    def check_compatible(self, settings: dict) -> None:
        if self.settings is None:
            return
        for name in MUST_MATCH:
            if self.settings.get(name) != settings.get(name):
                raise ConfigError(
                    f"{self.path} holds results of another setup ({name} differs: {_short(self.settings.get(name))} vs {_short(settings.get(name))}); "
                    "choose another -o, or pass --restart to discard them"
                )
        old_backends = self.settings.get("backends", {})
        for r1, backend in settings.get("backends", {}).items():
            if r1 in old_backends and old_backends[r1] != backend:
                raise ConfigError(
                    f"{self.path} has r1={r1} results from {old_backends[r1]}, not {backend}; choose another -o, or pass --restart"
                )

    def open(self, settings: dict, *, restart: bool = False) -> "ResultsFile":
        """Start appending; holds the file's lock until :meth:`close` (a second evaluate fails at once)."""
        self.lock()
        try:
            return self._open(settings, restart=restart)
        except BaseException:
            self.close()
            raise

    def _open(self, settings: dict, *, restart: bool) -> "ResultsFile":
        self.load()  # what a run that finished before we got the lock added
        if restart and self.path.exists():
            self.path.unlink()
            self.settings, self.records = None, {}
        self.check_compatible(settings)
        self.start_appending()
        new_backends = set(settings.get("backends", {})) - set((self.settings or {}).get("backends", {}))
        if self.settings is None or new_backends:
            self.write_line({"format": FORMAT, "version": VERSION, "settings": settings})
            self.settings = {**(self.settings or {}), **settings, "backends": {**(self.settings or {}).get("backends", {}), **settings.get("backends", {})}}
        return self

    def append(self, record: dict) -> None:
        self.write_line(record)
        self._merge(record)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."
