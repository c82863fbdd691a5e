"""Running models: ONNX Runtime sessions, PyTorch models and TensorRT engines, each fed clips the same way
(:mod:`.batching`), and TensorRT's GPU-less parse check and trtexec."""
