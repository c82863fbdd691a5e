"""ONNX Runtime sessions flush subnormal floats (``sta_deploy.runtime.onnxrt.onnx_session``).

Swin's shifted-window mask (-100) makes the softmax emit exp(-100) = 3.7e-44, a subnormal; on Intel
cores every operation on one takes a microcode assist, which made swin_t 1.5x slower there.  ONNX
Runtime applies the flag to the calling thread only for the first session of a process, so every
check runs in a fresh child process where the session under test is the first one.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

EXP_MINUS_100 = float(np.float32(np.exp(np.float64(-100.0))))  # 3.7e-44 as float32: subnormal, not 0


@pytest.fixture(scope="module")
def softmax_model(tmp_path_factory):
    """Softmax over [0, -100]: the second probability is subnormal unless it is flushed."""
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
        "masked_softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    path = tmp_path_factory.mktemp("denormals") / "softmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def _masked_probability(path, keyword: str) -> float:
    script = textwrap.dedent(
        f"""
        import numpy as np
        from sta_deploy.runtime.onnxrt import onnx_session
        session = onnx_session({str(path)!r}{keyword})
        print(repr(float(session.run(None, {{"x": np.array([[0.0, -100.0]], np.float32)}})[0][0, 1])))
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    return float(child.stdout.strip().splitlines()[-1])


def test_sessions_flush_subnormals_by_default(softmax_model):
    assert EXP_MINUS_100 > 0.0 and EXP_MINUS_100 < np.finfo(np.float32).tiny
    assert _masked_probability(softmax_model, "") == 0.0


def test_denormal_as_zero_false_keeps_them(softmax_model):
    assert _masked_probability(softmax_model, ", denormal_as_zero=False") == pytest.approx(EXP_MINUS_100, rel=0.1)


def test_segment_sessions_inherit_the_setting():
    """--window-attention kernel graphs run as several sessions, each made from a copy of the options."""
    import onnxruntime as ort

    from sta_deploy.runtime.onnxrt import DENORMAL_AS_ZERO_KEY, _copy_options

    options = ort.SessionOptions()
    options.add_session_config_entry(DENORMAL_AS_ZERO_KEY, "1")
    assert _copy_options(options, ort).get_session_config_entry(DENORMAL_AS_ZERO_KEY) == "1"
    with pytest.raises(Exception):  # never set on the source, never set on the copy
        _copy_options(ort.SessionOptions(), ort).get_session_config_entry(DENORMAL_AS_ZERO_KEY)
