"""The TFLite interpreter: LiteRT (``ai_edge_litert``), else the legacy ``tflite_runtime``."""

from __future__ import annotations

import logging
from pathlib import Path

from latency_models.errors import RuntimeNotFound

log = logging.getLogger(__name__)


def interpreter_module():
    """The module that provides ``Interpreter`` and ``load_delegate``, and its name.

    LiteRT is the maintained runtime (``tf.lite.Interpreter`` is deprecated in TF 2.21);
    ``tflite_runtime`` (last release 2.14) is what older Coral images ship.
    """
    try:
        from ai_edge_litert import interpreter as mod

        return mod, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as mod  # type: ignore[import-not-found]

        return mod, "tflite_runtime"
    except ImportError:
        raise RuntimeNotFound("no TFLite interpreter: install it with 'pip install ai-edge-litert'") from None


def make_interpreter(model: bytes | str | Path, *, num_threads: int | None = None, delegates=None,
                     default_delegates: bool = True):
    """An allocated interpreter for ``.tflite`` bytes or a path.

    ``default_delegates=False`` turns off the XNNPACK CPU delegate and runs the builtin
    kernels: XNNPACK refuses some int8 models (quantization scales out of its range) and
    LiteRT 2.3 then aborts the process instead of raising.
    """
    mod, _ = interpreter_module()
    kw = {"num_threads": num_threads} if num_threads else {}
    if delegates:
        kw["experimental_delegates"] = list(delegates)
    if not default_delegates:
        kw["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if isinstance(model, (bytes, bytearray)):
        it = mod.Interpreter(model_content=bytes(model), **kw)
    else:
        it = mod.Interpreter(model_path=str(model), **kw)
    it.allocate_tensors()
    return it
