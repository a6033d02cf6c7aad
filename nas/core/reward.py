"""Rewards: accuracy and latency (and hard constraints) to one scalar.

- MNAS (Tan et al. 2019): ``R = ACC * (LAT / T) ** w`` with ``w = alpha`` if ``LAT <= T`` else
  ``beta``. Presets: ``soft`` (alpha = beta = -0.07, the paper's default: doubling latency
  costs about 5% relative accuracy) and ``hard`` (alpha = 0, beta = -1).
- TuNAS absolute (Bender et al. 2020): ``R = ACC + beta * |LAT / T - 1|`` (beta = -0.1).

Hard constraints (off-chip bytes, parameters, all ops on the Edge TPU, latency) make a
candidate infeasible: it gets no reward and a recorded reason, and the controller learns
nothing from it.

>>> cfg = RewardConfig(target_ms=2.0)                       # MNAS soft
>>> round(reward(0.75, 4.0, cfg), 4)                        # twice the target
0.7145
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping

from pydantic import Field, model_validator

from nas.core.section import Section

__all__ = ["KINDS", "PRESETS", "Constraints", "RewardConfig", "reward"]

PRESETS = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}
KINDS = ("mnas", "tunas")


class Constraints(Section):
    """``reward.constraints``: hard limits on the deployment model; None means unconstrained."""

    at = "reward.constraints"

    max_off_chip_bytes: int | None = Field(None, ge=0)
    max_params: int | None = Field(None, ge=1)
    max_latency_ms: float | None = Field(None, gt=0)
    all_ops_on_tpu: bool = False

    def violation(self, m: Mapping[str, Any]) -> str | None:
        """The first violated constraint, as a reason to record, or None."""
        def val(k):
            v = m.get(k)
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        if self.max_off_chip_bytes is not None and val("off_chip_bytes") is not None \
                and val("off_chip_bytes") > self.max_off_chip_bytes:
            return f"off_chip_bytes {val('off_chip_bytes'):,} > max_off_chip_bytes {self.max_off_chip_bytes:,}"
        if self.max_params is not None and val("params") is not None and val("params") > self.max_params:
            return f"params {val('params'):,} > max_params {self.max_params:,}"
        if self.max_latency_ms is not None and val("latency_ms") is not None \
                and val("latency_ms") > self.max_latency_ms:
            return f"latency_ms {val('latency_ms'):.3f} > max_latency_ms {self.max_latency_ms}"
        if self.all_ops_on_tpu and (val("ops_on_cpu") or 0) > 0:
            return f"ops_on_cpu {val('ops_on_cpu')} > 0 (all_ops_on_tpu)"
        return None


class RewardConfig(Section):
    """``reward``: the reward's kind, latency target and exponents, and the hard constraints.

    The MNAS reward takes a ``preset`` (``soft`` when none is given) or both ``alpha`` and
    ``beta`` (explicit values win over the preset); the TuNAS reward takes only ``beta``.
    """

    at = "reward"

    kind: Literal["mnas", "tunas"] = "mnas"
    target_ms: float = Field(gt=0)
    preset: Literal["soft", "hard"] | None = Field(None, description="mnas only; soft when not given")
    alpha: float | None = None
    beta: float | None = None
    constraints: Constraints = Field(default_factory=Constraints)

    @model_validator(mode="before")
    @classmethod
    def _default_preset(cls, data):
        # soft by default for the MNAS reward only: the absolute reward has no preset, and a
        # default there would be one more value that the reward ignores (and a dumped config re-parses).
        if isinstance(data, dict) and data.get("kind", "mnas") == "mnas" and "preset" not in data:
            data = {**data, "preset": "soft"}
        return data

    @model_validator(mode="after")
    def _exponents(self):
        if self.kind == "mnas" and self.preset is None and (self.alpha is None or self.beta is None):
            raise ValueError("reward: with preset null give alpha and beta")
        # The absolute reward has one weight; a preset or alpha would be ignored, so say so.
        if self.kind == "tunas" and (self.preset is not None or self.alpha is not None):
            raise ValueError(f"reward: kind tunas (ACC + beta * |LAT/T - 1|) takes only beta (default -0.1); got "
                             f"preset {self.preset!r}, alpha {self.alpha!r}: remove them, or use kind mnas")
        return self

    @property
    def exponents(self) -> tuple[float, float]:
        """(alpha, beta): explicit values win over the preset."""
        a, b = PRESETS[self.preset] if self.preset else (None, None)
        if self.kind == "tunas":
            a, b = None, -0.1
        alpha = self.alpha if self.alpha is not None else a
        beta = self.beta if self.beta is not None else b
        return (alpha if alpha is not None else 0.0), beta


def reward(accuracy: float, latency_ms: float, cfg: RewardConfig) -> float:
    """The scalar reward; NaN when accuracy or latency is missing or not finite."""
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (accuracy, latency_ms)) or latency_ms <= 0:
        return float("nan")
    alpha, beta = cfg.exponents
    ratio = latency_ms / cfg.target_ms
    if cfg.kind == "tunas":
        return accuracy + beta * abs(ratio - 1)
    return accuracy * ratio ** (alpha if latency_ms <= cfg.target_ms else beta)
