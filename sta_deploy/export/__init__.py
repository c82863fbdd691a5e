"""From a model to a deployable file: the ONNX export, its manifest, graph checks and recipes."""
