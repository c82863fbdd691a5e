"""Polygraphy's TensorRT loaders and runner, set up for the TensorRT flavour in use.

Polygraphy picks TensorRT or TensorRT-RTX once, when ``polygraphy.backend.trt`` is first imported
(``POLYGRAPHY_USE_TENSORRT_RTX``); :func:`polygraphy_backend` makes that choice follow the module
:func:`sta_deploy.runtime.trt.import_tensorrt` returned, and refuses a second flavour in the same
process in one line instead of mixing the two libraries.  Polygraphy reports problems by logging
them and raising ``PolygraphyException("...")``; :func:`quiet_polygraphy` captures its log so that the
error we raise quotes TensorRT's own first error line.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

from ..errors import first_line


class PolygraphyUnavailable(RuntimeError):
    """Polygraphy is missing or already set up for the other TensorRT flavour."""


def polygraphy_backend(trt):
    """``polygraphy.backend.trt`` driving ``trt`` (the ``tensorrt`` or ``tensorrt_rtx`` module)."""
    wants_rtx = trt.__name__ == "tensorrt_rtx"
    try:
        from polygraphy import config as polygraphy_config
    except ImportError:
        raise PolygraphyUnavailable("TensorRT engines are built and run through Polygraphy: pip install polygraphy") from None
    if "polygraphy.backend.trt" in sys.modules:
        if polygraphy_config.USE_TENSORRT_RTX != wants_rtx:
            loaded = "TensorRT-RTX" if polygraphy_config.USE_TENSORRT_RTX else "TensorRT"
            raise PolygraphyUnavailable(
                f"this process already set Polygraphy up for {loaded}; run {trt.__name__} work in a separate process"
            )
    else:
        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1" if wants_rtx else "0"
        polygraphy_config.USE_TENSORRT_RTX = wants_rtx
    import polygraphy.backend.trt as backend

    return backend


@contextlib.contextmanager
def quiet_polygraphy(action: str):
    """Run Polygraphy silently; turn its exceptions into one line naming ``action`` and TensorRT's first error."""
    from polygraphy.exception import PolygraphyException

    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    except PolygraphyException as error:
        errors = [line.split("] ", 1)[-1].strip() for line in log.getvalue().splitlines() if line.startswith("[E]")]
        detail = "; ".join(dict.fromkeys(errors)) or first_line(error)
        raise RuntimeError(f"{action}: {detail[:400]}") from None
