"""Making a folder unwritable for a test, as any user: chmod for a normal user; as root (whom chmod
does not stop) the immutable flag (chattr +i), else a read-only tmpfs mounted over it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import pytest


def _run(*command) -> bool:
    if shutil.which(command[0]) is None:
        return False
    return subprocess.run(command, capture_output=True, timeout=30).returncode == 0


@contextlib.contextmanager
def unwritable(folder):
    """``folder`` (an existing, empty folder) cannot be written inside the block; skips with the reason otherwise."""
    folder = str(folder)
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        try:
            yield "chmod 555"
        finally:
            os.chmod(folder, 0o755)
        return
    if _run("chattr", "+i", folder):
        try:
            yield "chattr +i"
        finally:
            _run("chattr", "-i", folder)
        return
    if _run("mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", folder):
        try:
            yield "read-only tmpfs"
        finally:
            _run("umount", folder)
        return
    pytest.skip("running as root without chattr +i or mount: no way to make a folder unwritable for root here")
