"""Fixtures shared by several test modules."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _no_progress_lines():
    """The CLI prints progress lines on stderr; tests that check stderr line by line are about errors
    and warnings, so progress is off for them (os.environ, so subprocesses inherit it).  The tests of
    progress itself (tests/test_robustness_progress.py) turn it back on."""
    previous = os.environ.get("STA_DEPLOY_PROGRESS")
    os.environ["STA_DEPLOY_PROGRESS"] = "0"
    yield
    if previous is None:
        os.environ.pop("STA_DEPLOY_PROGRESS", None)
    else:
        os.environ["STA_DEPLOY_PROGRESS"] = previous


@pytest.fixture
def one_torch_thread():
    """Run PyTorch on one thread: on a loaded 2-core machine two threads of tiny ops thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli(capsys):
    """Run ``sta-deploy ARGS...`` in-process: returns (exit code, stdout, stderr)."""
    from sta_deploy.cli.app import main

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory):
    """Tiny seeded exports shared by the serving tests, made on first use (see tests/_serve.py)."""
    from _serve import TinyExports

    return TinyExports(tmp_path_factory.mktemp("tiny_exports"))
