"""Progress of long steps, on stderr, shown only once the CLI (or a caller) turns it on.

The library prints nothing by itself: every function here does nothing until :func:`enable`
installs a reporter (``sta-deploy`` does it for each command).  ``STA_DEPLOY_PROGRESS=0`` turns the
step and count lines off and keeps the notes (e.g. ``resuming from run.jsonl``).  Lines go to stderr, so ``--json`` output on stdout stays clean.

* On a terminal a step shows ``tracing the model ...`` while it runs and ``tracing the model:
  12.3 s`` when it is done; a step with countable units (clips, runs) shows a bar (tqdm when it is
  installed, else a counter redrawn in place).
* Anywhere else (a pipe, a log file, ``CI=true``) each step prints exactly one line, when it ends.

A step that fails prints nothing more: the error line that follows says what happened.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

_CLEAR = "\r\033[K"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds:02d} s"


def is_interactive(stream) -> bool:
    """A person watches ``stream``: a terminal, and not a CI job (``CI=true``)."""
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Step:
    """A running step; ``detail`` (e.g. ``"350.2 MB"``) is added to its final line."""

    def __init__(self, text: str):
        self.text = text
        self.detail = ""
        self.start = time.monotonic()

    def line(self) -> str:
        took = _duration(time.monotonic() - self.start)
        return f"{self.text}: {self.detail} in {took}" if self.detail else f"{self.text}: {took}"


class Counter:
    """Units of a step done so far; :meth:`update` after each one, :meth:`write` for a message between them."""

    def __init__(self, reporter: "Reporter | None", text: str, total: int, initial: int = 0, *, show: bool = True, unit: str = ""):
        self.reporter, self.text, self.total, self.count = reporter, text, total, initial
        self.unit = f" {unit}" if unit else ""
        self.show = show and reporter is not None and reporter.steps  # False: no bar or count line, messages still shown
        self.postfix = ""
        self.start = time.monotonic()
        self._bar = reporter._bar(text, total, initial, unit) if self.show and reporter.interactive else None
        self._last_draw = 0.0
        self._draw()

    def update(self, count: int = 1, postfix: str = "") -> None:
        self.count += count
        self.postfix = postfix
        if self._bar is not None:
            self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(count)
        else:
            self._draw()

    def write(self, text: str) -> None:
        if self.reporter is None:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.reporter.stream)
        else:
            self.reporter._write(_CLEAR + text + "\n" if self.reporter.interactive else text + "\n")
            self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        """The in-place counter of a terminal without tqdm (at most ten redraws a second)."""
        if not self.show or not self.reporter.interactive or self._bar is not None:
            return
        now = time.monotonic()
        if force or now - self._last_draw > 0.1 or self.count == self.total:
            self._last_draw = now
            postfix = f"  {self.postfix}" if self.postfix else ""
            self.reporter._write(f"{_CLEAR}{self.text}: {self.count}/{self.total}{self.unit}{postfix}")

    def close(self, failed: bool = False) -> None:
        if not self.show:
            return
        if self._bar is not None:
            self._bar.close()
        postfix = f", {self.postfix}" if self.postfix else ""
        line = f"{self.text}: {self.count}/{self.total}{self.unit} in {_duration(time.monotonic() - self.start)}{postfix}"
        if self.reporter.interactive:
            self.reporter._write(_CLEAR + ("" if failed else line + "\n"))
        elif not failed:
            self.reporter._write(line + "\n")


class Reporter:
    def __init__(self, stream=None, *, interactive: bool | None = None, steps: bool = True):
        self._stream = stream
        self.steps = steps  # False: notes only (STA_DEPLOY_PROGRESS=0)
        self._open: Step | None = None
        self.interactive = is_interactive(self.stream) if interactive is None else interactive

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _bar(self, text: str, total: int, initial: int, unit: str = ""):
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=total, initial=initial, desc=text, unit=unit.strip() or "it", dynamic_ncols=True, file=self.stream, leave=False)

    def note(self, text: str) -> None:
        self._write((_CLEAR if self.interactive and self._open else "") + text + "\n")
        if self._open is not None and self.interactive:
            self._write(f"{self._open.text} ...")

    def begin(self, text: str) -> Step:
        """Start a step (ending the one still open, which therefore succeeded)."""
        self.end()
        if not self.steps:
            return Step(text)
        self._open = Step(text)
        if self.interactive:
            self._write(f"{text} ...")
        return self._open

    def end(self, detail: str | None = None) -> None:
        """The open step succeeded: its one line, with the time it took."""
        step, self._open = self._open, None
        if step is None:
            return
        if detail is not None:
            step.detail = detail
        self._write((_CLEAR if self.interactive else "") + step.line() + "\n")

    def abandon(self) -> None:
        """The open step failed: no line for it (the error says why); a terminal's partial line is cleared."""
        step, self._open = self._open, None
        if step is not None and self.interactive:
            self._write(_CLEAR)


_reporter: Reporter | None = None


def enable(stream=None, *, interactive: bool | None = None) -> Reporter | None:
    """Show notes, and progress unless ``STA_DEPLOY_PROGRESS=0``, on ``stream`` (default: stderr); returns the previous reporter."""
    global _reporter
    previous = _reporter
    steps = os.environ.get("STA_DEPLOY_PROGRESS", "").strip().lower() not in ("0", "false", "no", "off")
    _reporter = Reporter(stream, interactive=interactive, steps=steps)
    return previous


def restore(previous: Reporter | None) -> None:
    global _reporter
    _reporter = previous


@contextlib.contextmanager
def enabled(stream=None, *, interactive: bool | None = None):
    """Progress on for the duration of the block (what the CLI does around each command)."""
    previous = enable(stream, interactive=interactive)
    try:
        yield
    finally:
        restore(previous)


def note(text: str) -> None:
    """One line of information (nothing when progress is off)."""
    if _reporter is not None:
        _reporter.note(text)


def begin(text: str) -> Step:
    """Start a step; :func:`end` (or the next :func:`begin`) prints its line, :func:`abandon` drops it.

    The begin/end form keeps long functions flat; :func:`step` is the same as a ``with`` block."""
    if _reporter is None:
        return Step(text)
    return _reporter.begin(text)


def end(detail: str | None = None) -> None:
    if _reporter is not None:
        _reporter.end(detail)


def abandon() -> None:
    if _reporter is not None:
        _reporter.abandon()


@contextlib.contextmanager
def step(text: str):
    """``with step("building vit_b") as s: ...`` (set ``s.detail`` to add to the final line)."""
    current = begin(text)
    try:
        yield current
    except BaseException:
        abandon()
        raise
    end()


def start_counter(text: str, total: int, *, initial: int = 0, show: bool = True, unit: str = "") -> Counter:
    """A :class:`Counter` to :meth:`Counter.close` when done (:func:`counter` is the ``with`` form).

    ``show=False`` hides the bar (and the final count line) but still shows :meth:`Counter.write` lines."""
    return Counter(_reporter, text, total, initial, show=show, unit=unit)


@contextlib.contextmanager
def counter(text: str, total: int, *, initial: int = 0, show: bool = True, unit: str = ""):
    """``with counter("timing", 12) as done: ... done.update()`` once per unit."""
    counting = start_counter(text, total, initial=initial, show=show, unit=unit)
    try:
        yield counting
    except BaseException:
        counting.close(failed=True)
        raise
    counting.close()
