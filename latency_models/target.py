"""What a latency source measures: an arch, a Keras model, or a ``.tflite``/``.keras`` file.

:class:`Target` normalises the accepted forms and produces, lazily and at most once, what a
source needs: the Keras model, the int8 ``.tflite`` bytes (cached by arch string), or the
static analysis. Predictors ask only for the analysis, which for an arch needs no TF graph.
"""

from __future__ import annotations

import hashlib
import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

import search_spaces
from search_spaces import Arch, build_model

from latency_models import analysis, convert

log = logging.getLogger(__name__)


def _is_keras_model(obj: Any) -> bool:
    # Avoid importing keras just to answer "is this a model?" for archs and paths.
    return any(c.__name__ in ("Model", "Functional", "Sequential") and c.__module__.startswith("keras")
               for c in type(obj).__mro__)


def condition_for_latency(model) -> None:
    """Make an untrained model's int8 quantization non-degenerate, without changing its ops.

    Timing does not depend on weight values, but quantization does: in an untrained model a
    squeeze-excite reduce conv (1x1 spatial, a handful of channels) can be negative for the
    calibration image, so its ReLU output is all zeros and gets a scale near 1e-8. XNNPACK
    then refuses the model ("failed to create XNNPACK runtime") and the measurement would
    time the slow builtin kernels instead. Its inputs are pooled post-activation values
    (mostly non-negative), so non-negative kernels keep it alive, as it is in a trained net.
    """
    for layer in model.layers:
        if type(layer).__name__ == "Conv2D" and layer.use_bias and layer.kernel.shape[:2] == (1, 1) \
                and layer.name.endswith("se_reduce"):
            layer.kernel.assign(np.abs(layer.kernel.numpy()))


class Target:
    """One thing to measure.

    ``obj`` is an :class:`Arch`, an arch string, a reference name (``"mobilenet_v2"``), a
    Keras model, a path to a ``.keras`` or ``.tflite`` file, or ``.tflite`` bytes.
    ``input_shape``/``num_classes`` apply to archs (defaults: the arch's resolution, 3
    channels; its classes or 1000). ``representative`` is calibration data for the int8
    conversion (an array of float inputs); None calibrates on one random image, which is
    right for latency-only use.
    """

    def __init__(self, obj: Any, *, input_shape=None, num_classes: int | None = None,
                 representative=None, io_type: str = "int8", cache: bool = True, name: str | None = None):
        self._name = name  # what logs and errors call it (default: the arch string or path)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.num_classes = num_classes
        self.representative = representative
        self.io_type = io_type
        self.cache = cache
        self.arch: Arch | None = None
        self.path: Path | None = None
        self._model = None
        self._tflite: bytes | None = None
        if isinstance(obj, Arch):
            self.kind, self.arch = "arch", obj
            self._normalise_shape()
        elif isinstance(obj, (bytes, bytearray)):
            self.kind, self._tflite = "tflite", bytes(obj)
        elif _is_keras_model(obj):
            self.kind, self._model = "keras", obj
        elif isinstance(obj, (str, Path)):
            self._from_text(obj)
        else:
            raise ValueError(f"latency target: expected an Arch, arch string, reference name, Keras model or "
                             f".keras/.tflite path, got {type(obj).__name__}")

    def _from_text(self, obj: str | Path) -> None:
        text = str(obj)
        if text.endswith((".tflite", ".keras")) or isinstance(obj, Path):
            p = Path(text)
            if not p.is_file():
                raise ValueError(f"latency target: file {text!r} does not exist")
            if p.suffix not in (".tflite", ".keras"):
                raise ValueError(f"latency target: {text!r} is neither a .tflite nor a .keras file")
            self.path = p
            self.kind = "tflite" if p.suffix == ".tflite" else "keras"
        elif text in search_spaces.reference_names():
            self.kind, self.arch = "arch", search_spaces.reference(text)
            self._normalise_shape()
        elif text.startswith("v") and ":" in text:
            self.kind, self.arch = "arch", Arch.from_string(text)
            self._normalise_shape()
        else:
            raise ValueError(
                f"latency target: {text!r} is not a .keras/.tflite path, an arch string or a reference name; "
                f"references: {', '.join(search_spaces.reference_names())}")

    def _normalise_shape(self) -> None:
        # A square RGB input is the arch's own resolution: fold it in, so the label, the
        # cache key and the arch string all say what is really measured.
        shape = self.input_shape
        if shape is not None and len(shape) == 3 and shape[0] == shape[1] and shape[2] == 3:
            self.arch = self.arch.replace(resolution=int(shape[0]))
            self.input_shape = None

    # ------------------------------------------------------------------------ descriptions

    @property
    def label(self) -> str:
        if self._name:
            return self._name
        if self.arch is not None:
            return self.arch.to_string()
        if self.path is not None:
            return str(self.path)
        return f"<{self.kind} model>"

    @cached_property
    def key(self) -> str:
        """A content key for caches: arch string + shape + classes, or a hash of the file/bytes."""
        if self.arch is not None:
            raw = f"{self.arch.to_string()}|{self.input_shape}|{self.num_classes}|{self.io_type}"
        elif self._tflite is not None:
            raw = hashlib.sha256(self._tflite).hexdigest()
        elif self.path is not None:
            raw = hashlib.sha256(self.path.read_bytes()).hexdigest()
        else:
            raw = f"keras-model-{id(self._model)}"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    # ------------------------------------------------------------------------ artefacts

    def keras_model(self):
        """The Keras model (built from the arch or loaded from ``.keras``); None for ``.tflite``.

        An arch measured for latency only (no calibration data) is built with fixed seeds
        and conditioned (:func:`condition_for_latency`), so its int8 file is reproducible.
        """
        if self._model is None:
            if self.arch is not None:
                self._model = build_model(self.arch, self.input_shape, self.num_classes, seed=0)
                if self.representative is None:
                    condition_for_latency(self._model)
            elif self.kind == "keras" and self.path is not None:
                import keras

                self._model = keras.models.load_model(self.path, compile=False, safe_mode=True)  # no Lambda code
        return self._model

    def tflite(self) -> bytes:
        """The full-integer ``.tflite`` bytes: read, or converted (and cached for archs)."""
        if self._tflite is None:
            if self.kind == "tflite" and self.path is not None:
                self._tflite = self.path.read_bytes()
            else:
                self._tflite = convert.cached_int8_tflite(self)
        return self._tflite

    def analysis(self):
        """Static analysis (op table, MACs, params, Edge TPU compatibility)."""
        if self.arch is not None:
            return analysis.analyze_arch(self.arch, self.input_shape, self.num_classes)
        if self.kind == "keras":
            return analysis.analyze_keras(self.keras_model())
        return analysis.analyze_tflite(self.tflite())
