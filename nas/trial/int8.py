"""The accuracy the Edge TPU will give: a trained model quantized to full int8 and run.

The Edge TPU runs int8 models only, and post-training quantization can cost a candidate
accuracy that its float model does not show (activations with outliers, depthwise
convolutions with wide per-channel ranges). :func:`int8_accuracy` measures it as the Edge TPU
will meet it: the model converted by the same converter as the deployment model
(:func:`latency_models.convert.to_int8_tflite`, calibrated on training images) and run on the
host's LiteRT, in a child process (LiteRT beside TensorFlow can abort the process). Trials
call it with ``score.accuracy: int8``; ``nas export`` for its summary.

Quantization-aware training is not offered: ``tensorflow-model-optimization`` (0.8) wraps
``tf_keras`` (Keras 2) models only, and this toolkit's models are Keras 3's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from latency_models.convert import to_int8_tflite
from latency_models.isolated import invoke_isolated

log = logging.getLogger(__name__)

__all__ = ["Int8Score", "evaluate_tflite", "int8_accuracy", "is_distributed", "plain_model"]


@dataclass(frozen=True)
class Int8Score:
    """What :func:`int8_accuracy` found: ``accuracy`` on ``n`` validation images, the
    ``tflite`` file, and the seconds spent converting and evaluating."""

    accuracy: float
    n: int
    tflite: bytes
    convert_s: float
    eval_s: float


def evaluate_tflite(tflite: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a full-int8 ``.tflite`` on float images ``x`` in [0, 1] (quantized
    with the model's own input scale and zero point) and labels ``y``."""
    if not len(y):
        raise ValueError("int8 accuracy: no validation images")
    _, info = invoke_isolated(tflite, np.zeros((1, *x.shape[1:]), np.int8))
    scale, zero = info["input"]["quantization"]
    xq = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    logits, _ = invoke_isolated(tflite, xq)
    return float((np.asarray(logits).reshape(len(y), -1).argmax(axis=-1) == y).mean())


def int8_accuracy(model, split, *, calibration_images: int, eval_images: int | None, seed: int = 0) -> Int8Score:
    """``model`` (a trained float32 Keras model, one device) quantized post-training on
    ``calibration_images`` training images of ``split`` and evaluated on its first
    ``eval_images`` validation images (None: all). Raises what the conversion or the
    interpreter raised."""
    t0 = time.perf_counter()
    calib = split.sample_train(calibration_images, seed)
    tflite = to_int8_tflite(model, calib, n_samples=len(calib))
    t1 = time.perf_counter()
    x, y = split.val_arrays(limit=eval_images)
    acc = evaluate_tflite(tflite, x, y)
    return Int8Score(acc, len(y), tflite, round(t1 - t0, 3), round(time.perf_counter() - t1, 3))


def plain_model(model, arch, shape, classes: int, *, mixed: bool, seed: int = 0):
    """The trained ``model`` as a float32 Keras model on one device: the model itself, or,
    when it was trained under ``mixed_float16`` (``mixed``) or a distribution strategy, a
    rebuild in float32 outside the strategy given its weights (float32 under mixed precision
    too). What is saved and converted: ``model.keras`` loads anywhere and the int8 converter
    sees float32 ops."""
    if not mixed and not is_distributed(model):
        return model
    from search_spaces import build_model

    plain = build_model(arch, shape, classes, seed=seed)
    plain.set_weights(model.get_weights())
    return plain


def is_distributed(model) -> bool:
    v = model.weights[0].value if model.weights else None
    return v is not None and type(v).__name__ in ("MirroredVariable", "DistributedVariable", "SyncOnReadVariable")
