"""The Triton Python-backend models of a generated repository.

Each model's ``1/model.py`` in the repository is a two-line shim importing ``TritonPythonModel``
from here, so the code runs from the installed package (the Python backend's stub must be able to
``import sta_deploy``: the local ``sta-deploy serve`` sees to that; in NVIDIA's container install
the package there, see docs/serving.md):

* :mod:`.backbone`: the exported model on ONNX Runtime (pure or plugin-mode ONNX, the STA plugin
  node served by its CPU reference);
* :mod:`.preprocess`: encoded video bytes -> the backbone's views (``sta_deploy.video``);
* :mod:`.classify`: views -> the backbone (in its batch size, through Triton) -> averaged
  probabilities and the top-k classes.

``triton_python_backend_utils`` exists only inside the stub; it is imported when a model starts.
"""
