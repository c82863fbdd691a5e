"""``--dtype int8``: ONNX Runtime dynamic quantization of the blocks, STA left in float32."""

from __future__ import annotations

import numpy as np
import onnx

import sta_deploy
from sta_deploy.bench import STA_SCOPE
from sta_deploy.onnx_export import export_onnx
from sta_deploy.validate import TOLERANCES, validate_onnx


def test_int8_export_quantizes_blocks_only_and_validates(tmp_path):
    model = sta_deploy.create_model("vit_s", r1=32, embed_dim=64, depth=3, num_heads=2, seed=0)
    path = tmp_path / "q.onnx"
    result = export_onnx(model, path, dtype="int8", with_kept=True)
    assert result.manifest["dtype"] == "int8"
    graph = onnx.load(str(path)).graph
    integer_products = [n for n in graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul")]
    assert integer_products, "no quantized matrix product in the graph"
    scope = {n.name: next((p.value for p in n.metadata_props if p.key == "namespace"), "") for n in graph.node}
    # Every STA node keeps its float arithmetic: no quantized op carries the STA scope.
    assert not [n.name for n in integer_products if STA_SCOPE in scope.get(n.name, "")]
    assert any(STA_SCOPE in value and n.op_type == "MatMul" for n in graph.node for value in [scope.get(n.name, "")])
    # Every linear weight of every block is stored as int8.
    int8_elements = sum(
        int(np.prod(init.dims)) for init in graph.initializer if init.data_type == onnx.TensorProto.INT8
    )
    block_weights = sum(p.numel() for name, p in model.named_parameters() if name.startswith("blocks.") and name.endswith(("qkv.weight", "proj.weight", "fc1.weight", "fc2.weight")))
    assert int8_elements >= block_weights
    report = validate_onnx(path, clips=3)
    assert report.tolerances == TOLERANCES["int8"]
    assert report.passed, report.table()
    assert report.cosine > 0.99
