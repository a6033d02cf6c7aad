"""Timing invokes of a TFLite interpreter, shared by the measured sources.

Coral's convention: create the interpreter once, run warm-up invokes (the first loads the
parameters into the Edge TPU's SRAM, or warms the CPU caches), then time many invokes and
report the median. The stable mode keeps adding rounds until the median of the round
medians moves less than a bound, because shared machines are noisy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimingStats:
    median_ms: float
    p90_ms: float
    p10_ms: float
    n_runs: int
    rounds: int = 1

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: the relative width of the middle 80% of runs."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms > 0 else 0.0


def fill_inputs(interpreter, seed: int = 0) -> None:
    """Random (not constant) inputs of the right dtype, so no runtime shortcut skews timing."""
    rng = np.random.default_rng(seed)
    for d in interpreter.get_input_details():
        dt = np.dtype(d["dtype"])
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            x = rng.integers(info.min, info.max, size=d["shape"], endpoint=True, dtype=dt)
        else:
            x = rng.random(d["shape"], dtype=np.float32).astype(dt)
        interpreter.set_tensor(d["index"], x)


def time_invokes(interpreter, n_runs: int = 50, warmup: int = 2) -> np.ndarray:
    """Milliseconds of ``n_runs`` timed invokes after ``warmup`` untimed ones."""
    if n_runs < 1:
        raise ValueError(f"n_runs: expected at least 1, got {n_runs}")
    fill_inputs(interpreter)
    for _ in range(warmup):
        interpreter.invoke()
    out = np.empty(n_runs)
    clock = time.perf_counter
    for i in range(n_runs):
        t0 = clock()
        interpreter.invoke()
        out[i] = (clock() - t0) * 1e3
    return out


def summarize(times_ms: np.ndarray, rounds: int = 1) -> TimingStats:
    t = np.asarray(times_ms, dtype=float)
    return TimingStats(float(np.median(t)), float(np.percentile(t, 90)), float(np.percentile(t, 10)),
                       int(t.size), rounds)


def time_stable(interpreter, n_runs: int = 50, warmup: int = 2, *, tolerance: float = 0.02,
                max_rounds: int = 10, min_rounds: int = 3) -> TimingStats:
    """Rounds of ``n_runs`` invokes until the last ``min_rounds`` round medians agree.

    Stops when (max - min) / median of the last ``min_rounds`` round medians is within
    ``tolerance`` (2% by default) or after ``max_rounds``; returns statistics over all runs
    of the agreeing rounds.
    """
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance: expected a fraction in (0, 1), got {tolerance}")
    rounds: list[np.ndarray] = [time_invokes(interpreter, n_runs, warmup)]
    while True:
        last = rounds[-min_rounds:]
        meds = np.array([np.median(r) for r in last])
        if len(last) == min_rounds and (meds.max() - meds.min()) / np.median(meds) <= tolerance:
            break
        if len(rounds) >= max_rounds:
            break
        rounds.append(time_invokes(interpreter, n_runs, warmup=0))
    return summarize(np.concatenate(rounds[-min_rounds:]), rounds=len(rounds))
