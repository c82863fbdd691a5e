"""Small file helpers shared by every writer: atomic writes and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path


def writable_folder(path) -> Path:
    """The folder ``path`` will be written into, or a one-line error saying why it cannot be."""
    directory = Path(path).parent if str(Path(path).parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"output folder {directory} does not exist; create it first")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"output folder {directory} is not writable; choose another -o path")
    return directory


@contextlib.contextmanager
def atomic_path(path, *, force: bool = True):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or exception leaves no half-written artifact behind.  With ``force=False`` an existing
    ``path`` is refused before any work starts.
    """
    path = Path(path)
    if not force and path.exists():
        raise FileExistsError(f"{path} already exists; pass --force (force=True) to overwrite it")
    directory = writable_folder(path)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=directory)
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise


def sha256_file(path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
