"""Serving exported models with NVIDIA Triton Inference Server (the ``serve`` extra:
``pip install 'sta-deploy[serve]'``, i.e. nvidia-pytriton and tritonclient).

* :mod:`.repository`: ``sta-deploy triton-repo``, a model repository from an export
  (:mod:`.configs`, :mod:`.pbtxt` write and schema-check the ``config.pbtxt`` files;
  :mod:`.triton_models` are the Python-backend models);
* :mod:`.server`: ``sta-deploy serve``, a real ``tritonserver`` on this machine;
* :mod:`.client`, :mod:`.remote`: ``sta-deploy predict --url``.

Nothing here is imported by the layers below (export, runtime, video); heavy and optional imports
(tritonclient, pytriton, onnxruntime) happen on use.
"""
