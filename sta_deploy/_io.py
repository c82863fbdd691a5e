"""Small file helpers shared by every writer: output folders, one writer per output, atomic writes,
stale-partial cleanup, safe readers and hashing.

The rules every writer follows:

* **Folders**: a missing parent folder of an output is created (as most CLIs do) when its nearest
  existing ancestor is a writable folder; folders created for an output that then fails are removed.
* **One writer per output**: writing ``x.onnx`` holds an exclusive lock (``.x.onnx.lock`` beside it,
  ``fcntl.flock``); a second process fails at once with "another sta-deploy is writing x.onnx (pid N)".
  The lock file is removed when the writer finishes.
* **Partials**: work in progress lives in a hidden ``.x.onnx.<random>.<pid>@<host>.partial`` file or
  folder beside the output, renamed into place only on success.  The name records the writer, so a
  later writer of the same output (holding the lock) removes partials whose writer process is gone
  (killed with SIGKILL, power loss) and never one whose writer is alive.
* **Permissions**: files are created with the user's umask (0644 by default), like any other tool.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from .errors import ConfigError, OutputBusyError, StaDeployError

PARTIAL_SUFFIX = ".partial"
# Partials named before writers recorded themselves (older versions) are removed once this old.
OWNERLESS_PARTIAL_AGE_S = 3600
_OWNED_PARTIAL = re.compile(r"^[A-Za-z0-9_]+\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]*)\.partial$")
_OWNERLESS_PARTIAL = re.compile(r"^[A-Za-z0-9_]+\.partial$")


# ----------------------------------------------------------------------------- folders
def writable_folder(path) -> Path:
    """The folder ``path`` will be written into, checked before any work starts.

    The folder may be missing (it is created when writing starts) as long as its nearest existing
    ancestor is a writable folder; otherwise a one-line error says why it cannot be written.
    """
    directory = Path(path).parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot create output folder {directory}: {existing} is a file; choose another -o path")
    if not os.access(existing, os.W_OK):
        if existing == directory:
            raise PermissionError(f"output folder {directory} is not writable; choose another -o path")
        raise PermissionError(f"cannot create output folder {directory}: {existing} is not writable; choose another -o path")
    return directory


def _create_folders(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; return the folders this call created, outermost first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    created = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
            created.append(folder)
        except FileExistsError:
            pass
    return created


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:  # not empty (the output is there) or already gone
            return


# ----------------------------------------------------------------------------- one writer per output
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40]


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists and belongs to someone else
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


class OutputLock:
    """Exclusive right to write ``path`` (and the files that go with it, e.g. its manifest).

    Re-entrant within one thread: the CLI takes it before building the model and the exporter takes
    it again.  Another process (or thread) gets :class:`OutputBusyError` at once, naming the holder.
    """

    _held: dict = {}  # (lock file, thread id) -> [fd, depth, folders created for it]
    _guard = threading.Lock()

    def __init__(self, path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._key = (str(self.lock_path.absolute()), threading.get_ident())

    def acquire(self) -> "OutputLock":
        with self._guard:
            held = self._held.get(self._key)
            if held is not None:
                held[1] += 1
                return self
            writable_folder(self.path)
            created = _create_folders(self.path.parent)
            try:
                fd = self._lock_file()
            except BaseException:
                _remove_if_empty(created)
                raise
            self._held[self._key] = [fd, 1, created]
        return self

    def _lock_file(self) -> int:
        import fcntl

        for _ in range(20):  # a finishing holder may unlink the file between our open and flock
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 200).decode(errors="replace").split()
                os.close(fd)
                holder = f"pid {owner[0]}" if owner else "pid unknown"
                raise OutputBusyError(
                    f"another sta-deploy is writing {self.path} ({holder}); wait for it to finish or choose another output path"
                ) from None
            try:
                current = os.stat(self.lock_path)
                locked = os.fstat(fd)
                same = (current.st_ino, current.st_dev) == (locked.st_ino, locked.st_dev)
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
                return fd
            os.close(fd)
        raise OutputBusyError(f"could not lock {self.lock_path}: other writers keep replacing it; try again")

    def release(self) -> None:
        with self._guard:
            held = self._held.get(self._key)
            if held is None:
                return
            held[1] -= 1
            if held[1] > 0:
                return
            del self._held[self._key]
            fd, _, created = held
            # Unlink while still holding the lock: a waiter that opened the old file sees it is gone.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path)
            os.close(fd)
            _remove_if_empty(created)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def output_lock(path) -> OutputLock:
    """``with output_lock(path): ...``: see :class:`OutputLock`."""
    return OutputLock(path)


# ----------------------------------------------------------------------------- partials
def _partial_suffix() -> str:
    """The end of this process's partial names: ``.<pid>@<host>.partial``."""
    return f".{os.getpid()}@{_host()}{PARTIAL_SUFFIX}"


def _is_stale_partial(entry: Path, tail: str) -> bool:
    owned = _OWNED_PARTIAL.match(tail)
    if owned:
        pid = int(owned["pid"])
        # Another host's writer cannot be checked from here: leave its partial alone.
        return owned["host"] == _host() and pid != os.getpid() and not _pid_alive(pid)
    if _OWNERLESS_PARTIAL.match(tail):
        try:
            return time.time() - entry.lstat().st_mtime > OWNERLESS_PARTIAL_AGE_S
        except OSError:
            return False
    return False


def remove_stale_partials(path) -> list[Path]:
    """Remove the partial files and folders beside ``path`` whose writer is gone; return them.

    Call it only while holding ``path``'s :class:`OutputLock`.
    """
    path = Path(path)
    prefix = f".{path.name}."
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    removed = []
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(PARTIAL_SUFFIX)) or not _is_stale_partial(entry, name[len(prefix):]):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    if removed:
        from . import _progress

        _progress.note(f"removed {len(removed)} unfinished output(s) of {path.name} left by a writer that is gone")
    return removed


def _refuse_existing(paths) -> None:
    for existing in paths:
        if Path(existing).exists():
            raise FileExistsError(f"{existing} already exists; pass --force to overwrite it")


_staging_locks: dict = {}


def open_staging(path, *, refuse_existing=()) -> Path:
    """A fresh hidden staging folder beside ``path`` for a multi-file output; undo with :func:`close_staging`.

    Takes ``path``'s lock (held until :func:`close_staging`), refuses any of ``refuse_existing`` that
    exists (checked under the lock, so two runs without --force cannot both write) and removes stale
    partials of ``path`` first.
    """
    path = Path(path)
    lock = OutputLock(path).acquire()
    try:
        _refuse_existing(refuse_existing)
        remove_stale_partials(path)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=_partial_suffix(), dir=path.parent))
    except BaseException:
        lock.release()
        raise
    _staging_locks[staging] = lock
    return staging


def close_staging(staging) -> None:
    """Remove the staging folder (whatever is left in it) and release its output's lock."""
    staging = Path(staging)
    shutil.rmtree(staging, ignore_errors=True)
    lock = _staging_locks.pop(staging, None)
    if lock is not None:
        lock.release()


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read it the classic way (set and restore)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path, *, force: bool = True):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or exception leaves no half-written artifact behind.  With ``force=False`` an existing
    ``path`` is refused before any work starts.  The file gets the user's umask (mkstemp alone
    would make it 0600), the output's lock is held while writing, and a missing folder is created.
    """
    path = Path(path)
    if not force and path.exists():
        raise FileExistsError(f"{path} already exists; pass --force (force=True) to overwrite it")
    with OutputLock(path):
        if not force and path.exists():
            raise FileExistsError(f"{path} already exists; pass --force (force=True) to overwrite it")
        remove_stale_partials(path)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_partial_suffix(), dir=path.parent)
        os.fchmod(handle, 0o666 & ~_umask())
        os.close(handle)
        temp = Path(temp_name)
        try:
            yield temp
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise


# ----------------------------------------------------------------------------- reading
def read_json_object(path, *, what: str, fix: str, error_type=StaDeployError) -> dict:
    """A JSON file that must hold an object: one-line ``error_type`` errors (naming ``what`` and ``fix``) otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise error_type(f"{what} {path} is not valid JSON ({error}); {fix}") from None
    if not isinstance(data, dict):
        raise error_type(f"{what} {path} holds a JSON {type(data).__name__}, not an object; {fix}")
    return data


def read_onnx(path, *, fix: str = "re-export it"):
    """The ``onnx.ModelProto`` of ``path`` without its external weights, or one line saying the file is broken."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends: the file is truncated or not ONNX
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise StaDeployError(
            f"{path} is not a readable ONNX model ({type(error).__name__}: {first[:120]}); the file is truncated or corrupt: {fix}"
        ) from None


def sha256_file(path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


class JsonLinesLog:
    """An append-only file of JSON lines that a killed run can resume: every line is flushed and
    fsync'ed as it is written, a torn last line (a writer killed mid-line) is dropped on the next
    read, and one writer at a time holds the file's :class:`OutputLock` from :meth:`lock` to :meth:`close`."""

    def __init__(self, path):
        self.path = Path(path)
        self._handle = None
        self._lock = None

    def lock(self) -> None:
        self._lock = output_lock(self.path).acquire()

    def read_lines(self, *, what: str) -> tuple[list[tuple[int, dict]], bool]:
        """``([(line number, object), ...], dropped)``: the file's JSON objects (blank lines skipped) and
        whether a torn last line was dropped (cut from the file only by the lock holder: without the
        lock a live writer may be mid-line).  A line that is not JSON: ConfigError naming ``what``."""
        if not self.path.exists():
            return [], False
        data = self.path.read_bytes()
        dropped = bool(data) and not data.endswith(b"\n")
        if dropped:
            cut = data.rfind(b"\n") + 1
            if self._lock is not None:
                with open(self.path, "r+b") as handle:
                    handle.truncate(cut)
            data = data[:cut]
        items = []
        for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append((number, json.loads(line)))
            except json.JSONDecodeError:
                raise ConfigError(f"{self.path}:{number} is not a JSON line; it is not {what} (choose another -o, or --restart)") from None
        return items, dropped and self._lock is not None

    def start_appending(self) -> None:
        self._handle = open(self.path, "a", encoding="utf-8")

    def write_line(self, item: dict) -> None:
        self._handle.write(json.dumps(item, separators=(",", ":")) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
