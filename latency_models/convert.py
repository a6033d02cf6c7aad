"""Full-integer (int8) TFLite conversion of Keras models: what ``edgetpu_compiler`` accepts.

Weights and activations int8, input and output int8 (or uint8), builtin int8 ops only, so a
model that converts here either compiles for the Edge TPU or fails with an op the compiler
reports. Calibration uses the experiment's data when given; random data is only for
latency-only use, where the values do not change the timing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from latency_models.errors import ConversionError

log = logging.getLogger(__name__)


# Bumped when the conversion recipe changes, so cached models are not reused across recipes.
CONVERTER_VERSION = "1"


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


def _quiet_absl() -> None:
    # TF warns through absl that the frozen-graph path is deprecated on every conversion;
    # it is the documented choice here (see _frozen_converter), so users need not see it.
    absl_log = logging.getLogger("absl")
    if not any(getattr(f, "_nas_quiet", False) for f in absl_log.filters):
        def drop(record: logging.LogRecord) -> bool:
            return "trackable_obj" not in record.getMessage()

        drop._nas_quiet = True  # type: ignore[attr-defined]
        absl_log.addFilter(drop)


def _frozen_converter(model, tf):
    """A converter over the model's frozen inference function.

    ``TFLiteConverter.from_keras_model`` writes the model to a SavedModel and loads it back
    before converting; freezing the variables into a concrete function skips that round
    trip and is about 3x faster here (benchmarks/latency_throughput.py) with the same ops.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    _quiet_absl()
    spec = tf.TensorSpec((1, *(int(d) for d in model.inputs[0].shape[1:])), tf.float32, name="input")
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    # Without trackable_obj TF takes its frozen-graph path (it logs that this is deprecated);
    # with it, TF writes a SavedModel again, which is the cost this function avoids.
    return tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(fn)])


def to_int8_tflite(model, representative=None, *, n_samples: int = 1, io_type: str = "int8",
                   seed: int = 0, method: str = "frozen") -> bytes:
    """Convert a Keras model to a full-integer ``.tflite`` (returned as bytes).

    ``representative`` is an array of float inputs ``(N, H, W, C)``, a generator function
    yielding ``[input]`` lists, or None for ``n_samples`` random images in [0, 1).
    ``io_type`` is ``"int8"`` or ``"uint8"`` (the model's input and output tensors).
    ``method`` is ``"frozen"`` (fast; falls back to the other on failure) or ``"saved_model"``
    (TensorFlow's own Keras path).
    """
    import tensorflow as tf

    if io_type not in ("int8", "uint8"):
        raise ValueError(f"io_type: unknown {io_type!r}; allowed: int8, uint8")
    if method not in ("frozen", "saved_model"):
        raise ValueError(f"method: unknown {method!r}; allowed: frozen, saved_model")
    rep = _representative(model, representative, n_samples, seed)

    def convert(conv) -> bytes:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = getattr(tf, io_type)
        return conv.convert()

    if method == "frozen":
        try:
            return convert(_frozen_converter(model, tf))
        except Exception as e:  # noqa: BLE001 - any failure here still leaves TF's own path to try
            log.warning("frozen-graph conversion failed (%s: %s); trying the SavedModel path",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    try:
        return convert(tf.lite.TFLiteConverter.from_keras_model(model))
    except Exception as e:  # the converter raises many types; all mean "this model does not convert"
        raise ConversionError(f"int8 TFLite conversion failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e


# ------------------------------------------------------------------------------ cache

_MEMORY: "OrderedDict[str, bytes]" = OrderedDict()
_MEMORY_ITEMS = 64


def cache_dir() -> Path:
    """Where converted models are cached: ``$NAS_CACHE_DIR`` or ``~/.cache/edgetpu-nas``."""
    return Path(os.environ.get("NAS_CACHE_DIR") or Path.home() / ".cache" / "edgetpu-nas") / "tflite"


def _cache_key(target) -> str | None:
    import tensorflow as tf

    if target.arch is None and target.path is None:
        return None  # an in-memory Keras model has no stable identity to cache by
    rep = target.representative
    if rep is None:
        calib = "random1"
    elif callable(rep):
        return None
    else:
        calib = hashlib.sha256(np.ascontiguousarray(rep, dtype=np.float32).tobytes()).hexdigest()[:16]
    raw = f"{target.key}|{calib}|{target.io_type}|tf{tf.__version__}|{CONVERTER_VERSION}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def cached_int8_tflite(target) -> bytes:
    """The int8 ``.tflite`` of a :class:`~latency_models.target.Target`, converted at most once.

    Keyed by the arch string (or file hash), input shape, classes, calibration data, io
    type and TF version; kept in memory (last 64) and on disk (``cache_dir()``).
    """
    key = _cache_key(target) if target.cache else None
    if key is not None:
        if key in _MEMORY:
            _MEMORY.move_to_end(key)
            return _MEMORY[key]
        path = cache_dir() / f"{key}.tflite"
        if path.is_file():
            blob = path.read_bytes()
            _remember(key, blob)
            return blob
    t0 = time.perf_counter()
    blob = to_int8_tflite(target.keras_model(), target.representative, io_type=target.io_type)
    log.info("converted %s to int8 in %.1f s (%d bytes)", target.label[:80], time.perf_counter() - t0, len(blob))
    if key is not None:
        _remember(key, blob)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(blob)
            os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
        except OSError as e:
            log.warning("cannot write the conversion cache %s: %s", path.parent, e)
    return blob


def _remember(key: str, blob: bytes) -> None:
    _MEMORY[key] = blob
    while len(_MEMORY) > _MEMORY_ITEMS:
        _MEMORY.popitem(last=False)
