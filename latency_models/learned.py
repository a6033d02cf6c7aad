"""Learned latency predictors: fitted on a profile, stored as data, never as pickle.

Features (:func:`features`) are computed from the TFLite-level op table of an arch
(:mod:`latency_models.analysis`, no TF graph; per stage, cached in a
:class:`latency_models.segments.SegmentCache`):
for each op group (1x1, 3x3 and larger regular convs, depthwise by kernel, fully connected,
element-wise kinds) the summed MACs, output bytes, input bytes, parameter bytes and op
count, plus a channel-utilisation term for matrix ops (CPU kernels are vectorised over
output channels, so thin layers cost more per MAC), plus totals.

Three model kinds (:mod:`latency_models.regressors`) are fitted and the one with the lowest
held-out error is kept:

- ``additive``: latency = sum over op groups of non-negative per-feature costs (a per-op
  additive model, nn-Meter's idea at op granularity), fitted by non-negative least squares
  on relative error with Huber-style reweighting; stored in the JSON;
- ``gbt``: gradient-boosted trees (LightGBM) on log latency; stored in LightGBM's own text
  format;
- ``mlp``: a small multilayer perceptron (scikit-learn) on standardised log features;
  weights stored in an ``.npz`` loaded with ``allow_pickle=False``.

A predictor is a directory: ``predictor.json`` (format, version, kind, feature names, the
training data's hash, held-out accuracy, the measured source's version) and the model file.
Loading checks the format and version and refuses anything else, so a predictor received
from someone else cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from search_spaces import Arch

from latency_models.analysis import analyze_keras, analyze_tflite
from latency_models.base import LATENCY_ONLY, LatencyResult, LatencySource
from latency_models.segments import SegmentCache, head_ops, stage_ops, stem_ops
from latency_models.registry import register_loader
from latency_models.regressors import KINDS, REGRESSORS

log = logging.getLogger(__name__)

FORMAT = "nas-latency-predictor"
VERSION = 1

# Op groups: (name, test on an OpInfo).
GROUPS = ("conv1x1", "conv3x3", "conv5x5+", "dw3x3", "dw5x5+", "fc", "add", "mul", "logistic", "mean",
          "softmax", "hard_swish", "other")
PER_GROUP = ("macs", "out_bytes", "in_bytes", "param_bytes", "count", "thin_macs")
TOTALS = ("total_macs", "total_param_bytes", "max_op_io_bytes", "input_bytes", "n_ops")
# Every feature is a sum over ops except these two, so an arch's vector is the combination of
# its segments' vectors (cached per stage: _SEGMENTS).
_MAX_COLUMN, _INPUT_COLUMN = len(GROUPS) * len(PER_GROUP) + 2, len(GROUPS) * len(PER_GROUP) + 3
FEATURES = tuple(f"{g}.{k}" for g in GROUPS for k in PER_GROUP) + TOTALS


def _group(op) -> str:
    t = op.op_type
    k = max(op.kernel) if op.kernel else 1
    if t in ("CONV_2D", "TRANSPOSE_CONV"):
        return "conv1x1" if k == 1 else "conv3x3" if k == 3 else "conv5x5+"
    if t == "DEPTHWISE_CONV_2D":
        return "dw3x3" if k <= 3 else "dw5x5+"
    return {"FULLY_CONNECTED": "fc", "ADD": "add", "MUL": "mul", "LOGISTIC": "logistic", "MEAN": "mean",
            "SOFTMAX": "softmax", "HARD_SWISH": "hard_swish"}.get(t, "other")


_INDEX = {name: i for i, name in enumerate(FEATURES)}


def features_of_ops(ops, input_shape=None) -> np.ndarray:
    """The feature vector of a sequence of ops (a whole network or one segment of it)."""
    x = np.zeros(len(FEATURES))
    for op in ops:
        g = _group(op)
        in_bytes = sum(math.prod(s) for s in op.input_shapes)
        cout = op.output_shape[-1] if op.output_shape else 1
        x[_INDEX[f"{g}.macs"]] += op.macs
        x[_INDEX[f"{g}.out_bytes"]] += op.activation_bytes
        x[_INDEX[f"{g}.in_bytes"]] += in_bytes
        x[_INDEX[f"{g}.param_bytes"]] += op.param_bytes
        x[_INDEX[f"{g}.count"]] += 1
        # Vector units are 16-32 lanes wide: a layer with few output channels wastes lanes.
        x[_INDEX[f"{g}.thin_macs"]] += op.macs * 16.0 / min(16.0, max(1.0, cout)) if op.macs else 0.0
        x[_INDEX["total_macs"]] += op.macs
        x[_INDEX["total_param_bytes"]] += op.param_bytes
        x[_MAX_COLUMN] = max(x[_MAX_COLUMN], op.activation_bytes + in_bytes)
        x[_INDEX["n_ops"]] += 1
    if input_shape is not None:
        x[_INPUT_COLUMN] = math.prod(input_shape)
    return x


def features_of_analysis(a) -> np.ndarray:
    return features_of_ops(a.ops, a.input_shape)


def combine(segment_features: Sequence[np.ndarray], input_bytes: float) -> np.ndarray:
    """An arch's features from its segments' (sums, but the max and the input size)."""
    stack = np.vstack(segment_features)
    x = stack.sum(axis=0)
    x[_MAX_COLUMN] = stack[:, _MAX_COLUMN].max()
    x[_INPUT_COLUMN] = input_bytes
    return x


# The feature vector of every stem, stage and head met.
_SEGMENTS = SegmentCache(stem=lambda stem, shape: features_of_ops(stem_ops(stem, shape)),
                         stage=lambda block, shape: features_of_ops(stage_ops(block, shape)),
                         head=lambda head, shape, classes: features_of_ops(head_ops(head, shape, classes)))


def features(archs: Sequence, num_classes: int | None = None) -> np.ndarray:
    """Feature matrix, one row per arch (Arch or arch string); no TF graph, stages cached."""
    rows = []
    for a in archs:
        segs, shape, _ = _SEGMENTS.values(a if isinstance(a, Arch) else Arch.from_string(a), num_classes)
        rows.append(combine(segs, float(math.prod(shape))))
    return np.vstack(rows) if rows else np.zeros((0, len(FEATURES)))


# ------------------------------------------------------------------------------- metrics


def accuracy(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Spearman rank correlation, MAPE and the share of predictions within +-10%."""
    from scipy.stats import spearmanr

    pred, true = np.asarray(pred, float), np.asarray(true, float)
    rel = np.abs(pred / true - 1)
    rho = spearmanr(pred, true).statistic if len(true) > 2 else float("nan")
    return {"n": int(len(true)), "spearman": float(rho), "mape": float(rel.mean()),
            "within_10pct": float((rel <= 0.10).mean()), "within_5pct": float((rel <= 0.05).mean())}


# -------------------------------------------------------------------------- the predictor


@dataclass
class Predictor:
    """A fitted latency predictor and its provenance."""

    kind: str
    model: Any
    meta: dict[str, Any]

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        return np.maximum(self.model.predict(X), 1e-6)

    def predict(self, archs: Sequence, num_classes: int | None = None) -> np.ndarray:
        """Predicted latency (ms) of each arch, batched."""
        return self.predict_features(features(archs, num_classes or self.meta.get("num_classes")))

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if hasattr(self.model, "save"):
            self.model.save(d)
        meta = {**self.meta, "format": FORMAT, "version": VERSION, "kind": self.kind, "features": list(FEATURES),
                "state": self.model.state()}
        (d / "predictor.json").write_text(json.dumps(meta, indent=1) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "Predictor":
        d = Path(directory)
        f = d / "predictor.json" if d.is_dir() else d
        if not f.is_file():
            raise ValueError(f"predictor {str(directory)!r}: no predictor.json there")
        try:
            meta = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"predictor {str(directory)!r}: predictor.json is not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"predictor {str(directory)!r}: not a latency predictor (format "
                             f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})")
        if meta.get("version") != VERSION:
            raise ValueError(f"predictor {str(directory)!r}: version {meta.get('version')!r} is not supported; "
                             f"this toolkit reads version {VERSION}")
        if meta.get("kind") not in REGRESSORS:
            raise ValueError(f"predictor {str(directory)!r}: unknown kind {meta.get('kind')!r}; allowed: "
                             f"{', '.join(KINDS)}")
        if meta.get("features") != list(FEATURES):
            raise ValueError(f"predictor {str(directory)!r}: its features differ from this toolkit's "
                             f"({len(meta.get('features') or [])} vs {len(FEATURES)}); refit it")
        try:
            model = REGRESSORS[meta["kind"]].load(meta.get("state") or {}, f.parent, len(FEATURES))
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"predictor {str(directory)!r}: cannot load its {meta['kind']} model ({e})") from None
        return cls(meta["kind"], model, meta)


def data_hash(rows: Sequence[dict]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(f"{r['arch']}|{r['num_classes']}|{r['latency_ms']}\n".encode())
    return h.hexdigest()[:16]


def split(rows: Sequence[dict], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Train/held-out row indices, by a seeded shuffle (the same split for every model)."""
    idx = np.random.default_rng(seed).permutation(len(rows))
    n_test = max(1, int(round(holdout * len(rows))))
    return sorted(idx[n_test:].tolist()), sorted(idx[:n_test].tolist())


def fit_predictor(rows: Sequence[dict], *, kinds: Sequence[str] = KINDS, holdout: float = 0.2, seed: int = 0,
                  progress=None) -> tuple[Predictor, dict[str, dict]]:
    """Fit every kind on the training rows and keep the one best on the held-out rows.

    The kept model is the one trained on the training rows only (no refit on everything),
    so ``nas latency eval`` on the same profile scores it on rows it never saw.

    ``rows`` are profile rows (``arch``, ``num_classes``, ``latency_ms``, ``status``, ``source``...).
    Returns the predictor and every kind's held-out accuracy.
    """
    ok = [r for r in rows if r.get("status", "ok") == "ok" and r.get("latency_ms") not in ("", None)]
    if len(ok) < 20:
        raise ValueError(f"profile: {len(ok)} usable rows; fitting a predictor needs at least 20")
    for k in kinds:
        if k not in REGRESSORS:
            raise ValueError(f"predictor kind: unknown {k!r}; allowed: {', '.join(KINDS)}")
    classes = {int(r["num_classes"]) for r in ok}
    X = np.vstack([features([r["arch"]], int(r["num_classes"])) for r in ok])
    y = np.array([float(r["latency_ms"]) for r in ok])
    if (y <= 0).any():
        raise ValueError("profile: latency_ms must be positive in every row")
    train, test = split(ok, holdout, seed)
    scores = {}
    fitted = {}
    for k in kinds:
        m = REGRESSORS[k]().fit(X[train], y[train], **({} if k == "additive" else {"seed": seed}))
        scores[k] = accuracy(np.maximum(m.predict(X[test]), 1e-6), y[test])
        fitted[k] = m
        log.info("%s: held-out %s", k, scores[k])
        if progress:
            progress(k, scores[k])
    best = min(kinds, key=lambda k: (scores[k]["mape"], -scores[k]["within_10pct"]))
    sources = sorted({r.get("source_version", r.get("source", "")) for r in ok})
    meta = {"kind": best, "held_out": scores[best], "candidates": scores, "holdout": holdout, "split_seed": seed,
            "n_train": len(train), "n_test": len(test), "training_data_hash": data_hash(ok),
            "measured_with": sources, "spaces": sorted({r.get("space", "") for r in ok}),
            "num_classes": classes.pop() if len(classes) == 1 else None}
    return Predictor(best, fitted[best], meta), scores


def held_out_rows(predictor: Predictor, rows: Sequence[dict]) -> tuple[list[dict], str]:
    """The rows to evaluate on: the recorded held-out split when ``rows`` is the training
    profile (same data hash), else every usable row."""
    ok = [r for r in rows if r.get("status", "ok") == "ok" and r.get("latency_ms") not in ("", None)]
    m = predictor.meta
    if m.get("training_data_hash") == data_hash(ok):
        _, test = split(ok, m["holdout"], m["split_seed"])
        return [ok[i] for i in test], "held-out rows of the training profile"
    return ok, "all rows (a profile the predictor was not trained on)"


def evaluate(predictor: Predictor, rows: Sequence[dict]) -> dict[str, Any]:
    test, what = held_out_rows(predictor, rows)
    if not test:
        raise ValueError("profile: no usable rows to evaluate on")
    pred = np.concatenate([predictor.predict([r["arch"]], int(r["num_classes"])) for r in test])
    return {**accuracy(pred, np.array([float(r["latency_ms"]) for r in test])), "rows": what}


# ------------------------------------------------------------------------------ as a source

SHIPPED = Path(__file__).with_name("data") / "tflite_cpu_model"


class LearnedSource(LatencySource):
    """Latency from a fitted predictor directory (default: the shipped host predictor)."""

    name = "tflite-cpu-model"
    metrics = LATENCY_ONLY
    version = f"{FORMAT}/{VERSION}"

    def __init__(self, path: str | None = None):
        self.path = Path(path) if path else SHIPPED
        if path is None and not (SHIPPED / "predictor.json").is_file():
            raise ValueError("tflite-cpu-model: no host predictor is shipped in this install; fit one with "
                             "'nas latency profile' and 'nas latency fit'")
        self.predictor = Predictor.load(self.path)
        if path is not None:
            self.name = str(path)

    def describe(self) -> str:
        m = self.predictor.meta
        return (f"{self.version} {self.predictor.kind} data={m.get('training_data_hash')} "
                f"measured_with={'; '.join(m.get('measured_with', []))[:120]}")

    def measure(self, target) -> LatencyResult:
        if target.arch is None:
            a = analyze_keras(target.keras_model()) if target.kind == "keras" else analyze_tflite(target.tflite())
            x = features_of_analysis(a)[None]
        else:
            x = features([target.arch], target.num_classes or self.predictor.meta.get("num_classes"))
        return self.result(latency_ms=float(self.predictor.predict_features(x)[0]),
                           details={"kind": self.predictor.kind})


# A predictor directory holds predictor.json; any other .json file given is tried as one too.
register_loader("predictor.json", lambda path: LearnedSource(str(path)))
