"""Progress a person can see (issue 12): step lines on stderr with their time, one line per step off a
terminal (CI), stdout left to the results (--json stays clean), the library silent unless asked."""

from __future__ import annotations

import io
import json
import re

import pytest

import sta_deploy.export.graph_checks
from sta_deploy import _progress, count_flops
from sta_deploy.bench import time_callable
from sta_deploy.export.graph_checks import StaticShapeReport

from test_export_helpers import TINY_ARGS, run_cli

EXPORT = ("export", "--model", "vit_s", "--r1", "32", *TINY_ARGS)
SECONDS = r"\d+\.\d s"


@pytest.fixture
def progress_on(monkeypatch):
    """Progress as in a CI job: enabled (the suite turns it off in conftest.py), CI=true."""
    monkeypatch.setenv("STA_DEPLOY_PROGRESS", "1")
    monkeypatch.setenv("CI", "true")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_export_and_validate_print_one_line_per_step_and_keep_json_clean(tmp_path, progress_on):
    code, out, err = run_cli(*EXPORT, "--no-validate", "-o", tmp_path / "x.onnx")
    assert code == 0, err
    expected = [
        rf"building vit_s r1=32: {SECONDS}",
        r"warning: no --checkpoint given: .*",
        rf"tracing and optimising vit_s with torch\.onnx: {SECONDS}",
        rf"writing the model: 0\.\d MB in {SECONDS}",
        rf"checking static shapes and the graph with onnx\.checker: {SECONDS}",
    ]
    lines = err.splitlines()
    assert len(lines) == len(expected) and all(re.fullmatch(p, line) for p, line in zip(expected, lines)), err
    assert "\r" not in err and "\033" not in err  # no terminal control codes in a log
    code, out, err = run_cli("validate", tmp_path / "x.onnx", "--clips", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["passed"] is True and len(out.splitlines()) == 1
    assert re.fullmatch(rf"validating on ONNX Runtime against PyTorch: {SECONDS}\n", err), err


def test_a_failed_step_prints_no_done_line_only_the_error(tmp_path, progress_on, monkeypatch):
    monkeypatch.setattr(
        sta_deploy.export.graph_checks, "check_static_shapes", lambda proto, **kwargs: StaticShapeReport(ok=False, dynamic_tensors=["t"])
    )
    code, _, err = run_cli(*EXPORT, "-o", tmp_path / "x.onnx")
    assert code == 1
    lines = err.splitlines()
    assert lines[-1].startswith("sta-deploy: error: exported graph is not static")
    assert [line.split(":")[0] for line in lines[:-1]] == ["building vit_s r1=32", "warning", "tracing and optimising vit_s with torch.onnx", "writing the model"]
    assert "Traceback" not in err


def test_on_a_terminal_a_step_shows_while_it_runs_and_is_cleared_when_it_fails(progress_on, monkeypatch):
    monkeypatch.delenv("CI")
    terminal = Terminal()
    with _progress.enabled(terminal):
        with _progress.step("tracing"):
            assert terminal.getvalue() == "tracing ..."
        assert re.fullmatch(rf"tracing ...\r\033\[Ktracing: {SECONDS}\n", terminal.getvalue())
        terminal.seek(0), terminal.truncate()
        with pytest.raises(ValueError):
            with _progress.step("writing"):
                raise ValueError("disk full")
    assert terminal.getvalue() == "writing ...\r\033[K"  # the error line then starts on a clean line
    monkeypatch.setenv("CI", "true")
    assert not _progress.Reporter(Terminal()).interactive  # CI logs get plain lines even on a pseudo-terminal


def test_counter_on_a_terminal_without_tqdm_redraws_in_place(progress_on, monkeypatch):
    monkeypatch.delenv("CI")
    monkeypatch.setattr(_progress.Reporter, "_bar", lambda self, *args: None)
    terminal = Terminal()
    with _progress.enabled(terminal):
        with _progress.counter("evaluate", 2, unit="clips") as done:
            done.update(postfix="top-1 50%")
            done.write("skipped b.mp4: not a video")
            done.update()
    text = terminal.getvalue()
    assert "\r\033[Kevaluate: 1/2 clips  top-1 50%" in text and "\r\033[Kskipped b.mp4: not a video\n" in text
    assert re.search(rf"\r\033\[Kevaluate: 2/2 clips in {SECONDS}\n$", text), text


def test_the_library_is_silent_unless_progress_is_enabled(capsys, progress_on):
    time_callable("model", lambda: None, batch=1, warmup=1, runs=3)
    _progress.note("a note")
    with _progress.step("a step"):
        pass
    assert capsys.readouterr() == ("", "")
    log = io.StringIO()
    with _progress.enabled(log, interactive=False):
        time_callable("model", lambda: None, batch=1, warmup=1, runs=3)
    assert re.fullmatch(rf"timing model \(1 warm-up \+ 3 timed\): 4/4 runs in {SECONDS}\n", log.getvalue())
    assert capsys.readouterr() == ("", "")


def test_evaluate_counts_clips_on_stderr_and_prints_the_paper_gflops(tmp_path, progress_on):
    pytest.importorskip("av")
    from sta_deploy.video.synthetic import moving_shapes, write_video

    for label in ("a", "b"):
        (tmp_path / "clips" / label).mkdir(parents=True)
        write_video(tmp_path / "clips" / label / "clip.mp4", moving_shapes(16, 32, 32, seed=len(label)))
    small = [*TINY_ARGS, "--img-size", "32", "--num-classes", "2"]
    common = ["evaluate", tmp_path / "clips", "--model", "vit_s", "--r1", "1", *small, "--views", "1x1", "-o", tmp_path / "run", "--threads", "1", "--no-plot"]
    code, out, err = run_cli(*common, "--json")
    assert code == 0, err
    summary = json.loads(out)  # stdout: the JSON alone
    counts = [line for line in err.splitlines() if line.startswith("evaluate:")]
    assert len(counts) == 1 and re.fullmatch(rf"evaluate: 2/2 clips in {SECONDS}, top-1 r1=1: \d+\.\d%", counts[0]), err
    overrides = dict(embed_dim=32, depth=3, num_heads=2, img_size=32, num_classes=2)
    for row in summary["results"]:
        # the figure 'sta-deploy models' and 'flops' print: STA's own products not included
        assert row["gflops"] == pytest.approx(count_flops("vit_s", row["r1"], **overrides).gflops)
    code, out, _ = run_cli(*common)
    assert code == 0 and "GFLOPs per view without STA's own products" in out
