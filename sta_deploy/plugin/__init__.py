"""The STAStageSelect TensorRT plugin seen from Python: its identity, its export, its CPU reference and
its ONNX Runtime custom op.  The C++/CUDA sources live in ``plugins/sta_stage_select``."""
