"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
import torch


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
