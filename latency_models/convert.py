"""Full-integer (int8) TFLite conversion of Keras models: what ``edgetpu_compiler`` accepts.

Weights and activations int8, input and output int8 (or uint8), builtin int8 ops only, so a
model that converts here either compiles for the Edge TPU or fails with an op the compiler
reports. Calibration uses the experiment's data when given; random data is only for
latency-only use, where the values do not change the timing.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import numpy as np

log = logging.getLogger(__name__)


class ConversionError(RuntimeError):
    """The TFLite converter rejected a model (recorded as a failed trial, not a crash)."""


def _representative(model, data, n_samples: int, seed: int) -> Callable[[], Iterable[list[np.ndarray]]]:
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if data is None:
        rng = np.random.default_rng(seed)
        data = rng.random((n_samples, *shape), dtype=np.float32)
    elif callable(data):
        return data
    data = np.asarray(data, dtype=np.float32)
    if data.shape[1:] != shape:
        raise ValueError(f"representative data: expected samples of shape {shape}, got {data.shape[1:]}")

    def gen():
        for x in data[:n_samples] if n_samples else data:
            yield [x[None]]

    return gen


def to_int8_tflite(model, representative=None, *, n_samples: int = 1, io_type: str = "int8",
                   seed: int = 0) -> bytes:
    """Convert a Keras model to a full-integer ``.tflite`` (returned as bytes).

    ``representative`` is an array of float inputs ``(N, H, W, C)``, a generator function
    yielding ``[input]`` lists, or None for ``n_samples`` random images in [0, 1).
    ``io_type`` is ``"int8"`` or ``"uint8"`` (the model's input and output tensors).
    """
    import tensorflow as tf

    if io_type not in ("int8", "uint8"):
        raise ValueError(f"io_type: unknown {io_type!r}; allowed: int8, uint8")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(model, representative, n_samples, seed)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = getattr(tf, io_type)
    try:
        return conv.convert()
    except Exception as e:  # the converter raises many types; all mean "this model does not convert"
        raise ConversionError(f"int8 TFLite conversion failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
