"""The report's plots: accuracy against latency and parameter bytes, reward over the run,
how decided the controller became (``pareto.png``, ``reward.png``, ``entropy.png``). Each
takes a :class:`nas.results.report.Report` (not imported: the report imports these)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from latency_models.edgetpu.model import Constants as _EdgeTPUConstants

from nas.core.record import TrialRecord, best_result, pareto_front

__all__ = ["latency_axis", "plot_entropy", "plot_pareto", "plot_reward"]

# The Edge TPU's on-chip memory (parameters past what it caches stream from the host) and the
# most of it the compiler keeps for activations: the predictor's own constants.
SRAM_BYTES = _EdgeTPUConstants().sram_bytes
RESERVE_BYTES = _EdgeTPUConstants().max_reserve_bytes


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(plt, fig, ax, path: Path, legend_loc: str) -> None:
    """The look every report plot shares: grid, small legend, tight layout, 110 dpi PNG."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=legend_loc)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pareto(rep: Any, path: Path) -> None:
    """Left: proxy accuracy vs deployment latency. Right: the same accuracy vs the deployment
    model's parameter bytes on the Edge TPU, with its SRAM: what lies right of it streams."""
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12.5, 5), gridspec_kw={"width_ratios": [1.35, 1]})
    order = {r.trial_id: i for i, r in enumerate(rep.results)}
    ok = [r for r in rep.results if r.usable]
    sc = None
    for a, x_of in ((ax, lambda r: r.latency_ms), (ax2, _param_mib)):
        placed = [r for r in ok if x_of(r) is not None]
        if placed:
            sc = a.scatter([x_of(r) for r in placed], [r.scored_accuracy for r in placed], s=18,
                           c=[order[r.trial_id] + 1 for r in placed], cmap="viridis", zorder=2, label="trials",
                           vmin=1, vmax=len(rep.results))
        off = [r for r in placed if r.off_chip]
        if off:
            a.scatter([x_of(r) for r in off], [r.scored_accuracy for r in off], s=70, facecolors="none",
                      edgecolors="tab:red", lw=1, zorder=3, label=f"parameters off-chip ({len(off)})")
        bad = [r for r in rep.results if r.status.value == "infeasible" and x_of(r) is not None]
        if bad:
            a.scatter([x_of(r) for r in bad], [0 for _ in bad], marker="x", c="0.5", label=f"infeasible ({len(bad)})")
    if sc is not None:
        fig.colorbar(sc, ax=ax2, label="trial (completion order)")
    front = sorted(pareto_front(rep.results), key=lambda r: r.latency_ms)
    if front:
        ax.step([r.latency_ms for r in front], [r.scored_accuracy for r in front], where="post", c="tab:orange",
                lw=1.5, zorder=3, label="Pareto front")
        best = best_result(rep.results)
        for a, x in ((ax, best.latency_ms), (ax2, _param_mib(best))):
            if x is not None:
                a.scatter([x], [best.scored_accuracy], s=160, facecolors="none", edgecolors="tab:red", lw=1.5,
                          zorder=4, label="best reward")
    ax.axvline(rep.cfg.reward.target_ms, ls=":", c="0.3", label=f"target {rep.cfg.reward.target_ms} ms")
    for i, ref in enumerate(r for r in rep.references if r.latency_ms is not None):
        color = ("tab:red", "tab:purple", "tab:brown")[i % 3]
        if ref.accuracy is not None:
            ax.scatter([ref.latency_ms], [ref.accuracy], marker="s", s=60, c=color, zorder=4,
                       label=f"{ref.label} (same recipe)")
        else:
            ax.axvline(ref.latency_ms, ls="--", c=color, lw=1, label=f"{ref.label} latency (not trained)")
    cap = rep.cfg.reward.constraints.max_off_chip_bytes
    ax2.axvline(SRAM_BYTES / 2**20, c="tab:red", ls="--", lw=1, label=f"Edge TPU SRAM ({SRAM_BYTES / 2**20:.0f} MiB)")
    # What of the SRAM holds parameters depends on the activations (the compiler reserves up
    # to about 2 MiB for them), so the cliff lies somewhere in this band.
    ax2.axvspan((SRAM_BYTES - RESERVE_BYTES) / 2**20, SRAM_BYTES / 2**20, color="tab:red", alpha=0.08,
                label="the parameter cache ends in here")
    if cap is not None:
        ax2.axvline((SRAM_BYTES + cap) / 2**20, c="0.3", ls=":", lw=1,
                    label=f"max_off_chip_bytes {cap:,} (beyond the SRAM)")
    latency_axis(ax)
    ylabel = f"validation accuracy (proxy{', int8' if rep.cfg.score.accuracy == 'int8' else ''})"
    ax.set(xlabel=f"deployment latency (ms, {rep.cfg.latency.source})", ylabel=ylabel,
           title=f"{rep.cfg.name}: accuracy vs deployment latency")
    ax2.set(xlabel="deployment parameters on the Edge TPU (MiB, on + off chip)", ylabel=ylabel,
            title="against the on-chip memory")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="lower right")
    _finish(plt, fig, ax, path, "lower right")


def latency_axis(ax) -> None:
    """A latency x axis: log scale with plain tick labels (1, 2, 5, 10 ms) when the values span
    more than 8x, as deployment latencies do once some models outgrow the SRAM."""
    lo, hi = ax.get_xlim()
    if hi / max(lo, 1e-9) <= 8:
        return
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ticks = [t for t in (0.5, 1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000) if lo <= t <= hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _param_mib(r: TrialRecord) -> float | None:
    """The deployment model's compiled parameter bytes (on + off chip), in MiB."""
    if r.on_chip_bytes is None or r.off_chip_bytes is None:
        return None
    return (r.on_chip_bytes + r.off_chip_bytes) / 2**20


def plot_reward(rep: Any, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    x = np.arange(1, len(rep.results) + 1)
    rew = np.array([r.reward if r.usable else np.nan for r in rep.results], dtype=float)
    okm = np.isfinite(rew)
    ax.scatter(x[okm], rew[okm], s=14, c="tab:blue", label="trial reward")
    if okm.any():
        best = np.fmax.accumulate(np.where(okm, rew, -np.inf))
        best[~np.isfinite(best)] = np.nan
        ax.plot(x, best, c="tab:orange", label="best so far")
        floor = np.nanmin(rew)
    else:
        floor = 0.0
    bad = ~okm
    if bad.any():
        ax.scatter(x[bad], np.full(bad.sum(), floor), marker="x", c="tab:red",
                   label=f"failed / infeasible ({int(bad.sum())})")
    ax.set(xlabel="trial (completion order)", ylabel="reward", title=f"{rep.cfg.name}: reward over trials")
    _finish(plt, fig, ax, path, "lower right")


def plot_entropy(rep: Any, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    if rep.policy_entropy:
        ax.plot(np.arange(1, len(rep.policy_entropy) + 1), rep.policy_entropy, c="tab:blue",
                label="policy entropy (mean over decisions)")
    w = rep.window  # only full windows: a shorter one cannot show the entropy it has
    ax.plot(np.arange(w, len(rep.decision_entropy) + 1), rep.decision_entropy[w - 1:], c="tab:green",
            label=f"entropy of the decisions of the last {w} proposals")
    ax.axhline(rep.max_entropy, ls=":", c="0.3", label="uniform policy")
    ax.axhline(rep.random_window_entropy, ls="--", c="tab:green", lw=1, alpha=0.6,
               label=f"random search, {w}-proposal window")
    ax.set(xlabel="proposal", ylabel="nats per decision", ylim=(0, rep.max_entropy * 1.1 + 1e-9),
           title=f"{rep.cfg.name}: how decided the {rep.cfg.controller.name} controller became")
    ax.set_xlim(0, len(rep.decision_entropy) + 1)
    _finish(plt, fig, ax, path, "lower left")
