"""``nas report RUN_DIR``: what a search found, as a Markdown page, PNG plots and TensorBoard logs.

Writes into ``RUN/report`` (or ``--out``)::

    report.md      the Pareto table, failures by reason, and the best archs with their
                   per-layer latency breakdown and on/off-chip split
    pareto.png     accuracy vs latency: every trial (coloured by when it ran), the Pareto
                   front, the target latency and the references scaled to the run's size
    reward.png     reward of every trial in completion order, the best so far, failures
    entropy.png    how decided the controller became: its policy entropy (``mnas``) and the
                   entropy of the decisions it proposed over a sliding window (any controller)
    tensorboard/   per-trial scalars: ``tensorboard --logdir RUN/report/tensorboard``

A report is derived from the run folder alone (``trials.csv``, ``state.json``, the
experiment), so it can be made again at any time, during a search too. The folder is built
beside the output and renamed into place; an existing report folder is replaced, any other
non-empty folder is refused.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import ExperimentConfig
from .search import RunFolder, RunFolderError, best_result, make_space, pareto_front, staged_folder
from .tblog import USABLE, EventLog, log_trials, usable

log = logging.getLogger(__name__)

REFERENCES = {"efficientnet_edgetpu_s": "EfficientNet-EdgeTPU-S", "mnasnet_a1": "MnasNet-A1"}


@dataclass
class Reference:
    key: str
    label: str
    arch: str
    latency_ms: float | None
    accuracy: float | None = None  # only when trained (--train-references)


@dataclass
class Report:
    run: RunFolder
    cfg: ExperimentConfig
    results: list[dict[str, Any]]
    policy_entropy: list[float] = field(default_factory=list)   # one per proposal (mnas), nats/decision
    decision_entropy: list[float] = field(default_factory=list)  # windowed, one per proposal
    max_entropy: float = 0.0                                     # of a uniform policy, nats/decision
    window: int = 20
    random_window_entropy: float = 0.0                           # uniform proposals, same window
    references: list[Reference] = field(default_factory=list)
    breakdowns: list[tuple[dict[str, Any], Any]] = field(default_factory=list)  # (trial, LatencyResult)
    breakdown_source: str = ""


# ------------------------------------------------------------------------------ analysis

def windowed_decision_entropy(indices: list[list[int]], n_choices: list[int], window: int) -> list[float]:
    """Mean over decisions of the empirical entropy (nats) of the last ``window`` proposals.

    Any controller's proposals can be scored this way: a random search stays near the
    uniform maximum, a converging controller falls towards 0. A window of W proposals
    cannot show more than log(W) nats, so the curve starts low for the first few.
    """
    out = []
    arr = np.asarray(indices, dtype=np.int64).reshape(len(indices), len(n_choices))
    for i in range(len(arr)):
        w = arr[max(0, i - window + 1): i + 1]
        ents = []
        for d, n in enumerate(n_choices):
            p = np.bincount(w[:, d], minlength=n) / len(w)
            p = p[p > 0]
            ents.append(float(-(p * np.log(p)).sum()))
        out.append(float(np.mean(ents)) if ents else 0.0)
    return out


def controller_entropy(cfg: ExperimentConfig, state_text: str, window: int):
    """Replay the run's ask/tell log into a fresh controller and read its entropy after each ask.

    Returns (policy entropy per proposal or [], windowed decision entropy, uniform maximum,
    the window used, and what uniform random proposals score with that window).
    """
    from search_spaces import Arch

    from .search import _controller_view, make_controller

    space = make_space(cfg)
    n_choices = [len(d.choices) for d in space.decision_list]
    max_ent = float(np.mean([math.log(n) for n in n_choices])) if n_choices else 0.0
    d = json.loads(state_text)
    events, archs, results = d["events"], d["archs"], d["results"]
    ctrl = make_controller(cfg, space)
    policy, proposed = [], []
    # A window longer than a short run would leave no full window to show.
    window = min(window, max(2, sum(e[0] == "ask" for e in events) // 2))
    for ev in events:
        kind, tid = ev[0], ev[1]
        if kind == "ask":
            ctrl.ask()
            ent = ctrl.summary().get("entropy")
            if isinstance(ent, float) and math.isfinite(ent):
                policy.append(ent)
            proposed.append(archs[tid])
        elif kind == "tell":
            ctrl.feedback(Arch.from_string(archs[tid]), _controller_view(results[tid]))
    indices = []
    for a in proposed:
        try:
            indices.append(space.indices(space.encode(Arch.from_string(a))))
        except (ValueError, KeyError):  # an arch outside the space (user-seeded): not a decision
            continue
    rng = np.random.default_rng(0)
    uniform = windowed_decision_entropy(
        [[int(rng.integers(n)) for n in n_choices] for _ in range(window * 50)], n_choices, window)
    return policy, windowed_decision_entropy(indices, n_choices, window), max_ent, window, float(
        np.mean(uniform[window - 1:]))


def _breakdown_source(cfg: ExperimentConfig):
    """The run's latency source when it predicts per layer; else the ``edgetpu-model`` predictor."""
    from latency_models import get_source

    from .trial import latency_source

    try:
        src = latency_source(cfg)
    except Exception as e:  # noqa: BLE001 - e.g. an Edge TPU run reported on a machine without one
        log.info("report: latency source %s unavailable here (%s); using edgetpu-model", cfg.latency.source, e)
        src = None
    if src is None or getattr(src, "measured", False):
        return get_source("edgetpu-model")
    return src


def _target(arch, cfg: ExperimentConfig, num_classes: int | None):
    from latency_models import Target

    res = arch.resolution
    return Target(arch, input_shape=(res, res, cfg.data.channels), num_classes=num_classes)


def _num_classes(cfg: ExperimentConfig, results: list[dict[str, Any]]) -> int:
    """The class count the trials were built with: recorded per trial; for runs made before
    it was, from the data (the head's size changes the latency)."""
    for r in results:
        if isinstance(r.get("num_classes"), int):
            return r["num_classes"]
    from search_spaces import Arch

    from .trial import load_data

    return load_data(cfg, Arch.from_string(results[0]["arch"]).resolution).num_classes


def build(run_dir: str | Path, *, top: int = 3, window: int = 20, train_references: bool = False) -> Report:
    """Read a run folder and compute everything the report shows (no files written)."""
    from search_spaces import Arch
    from search_spaces.references import reference

    from .export import run_experiment

    run = RunFolder(run_dir)
    if not run.path.is_dir():
        raise RunFolderError(f"RUN_DIR: {str(run_dir)!r} does not exist")
    cfg = run_experiment(run)
    results = run.results()
    if not results:
        raise RunFolderError(f"RUN_DIR: {str(run_dir)!r} has no finished trial yet (no trials.csv rows)")
    rep = Report(run=run, cfg=cfg, results=results, window=window)
    if run.state_file.is_file():
        try:
            (rep.policy_entropy, rep.decision_entropy, rep.max_entropy, rep.window,
             rep.random_window_entropy) = controller_entropy(
                cfg, run.state_file.read_text(), window)
        except (ValueError, KeyError, TypeError) as e:
            log.warning("report: cannot replay %s (%s); no entropy plot", run.state_file, e)

    src = _breakdown_source(cfg)
    rep.breakdown_source = src.describe()
    classes = _num_classes(cfg, results)
    ranked = sorted((r for r in results if usable(r)), key=lambda r: -r["reward"])[:top]
    for r in ranked:
        rep.breakdowns.append((r, src.measure(_target(Arch.from_string(r["arch"]), cfg, classes))))

    sp = cfg.space
    for key, label in REFERENCES.items():
        kw = {k: v for k, v in (("width", sp.width), ("depth", sp.depth), ("resolution", sp.resolution)) if v}
        arch = reference(key, num_classes=classes, **kw)
        try:
            lat = src.measure(_target(arch, cfg, classes)).latency_ms
        except Exception as e:  # noqa: BLE001 - a reference the source cannot place is left out of the plot
            log.warning("report: no latency for %s (%s)", label, e)
            lat = None
        ref = Reference(key, label, arch.to_string(), lat)
        if train_references:
            from .trial import run_trial

            out = run_trial(ref.arch, cfg)
            if out["status"] == "ok":
                ref.accuracy = out["accuracy"]
                ref.latency_ms = out["latency_ms"]
            else:
                log.warning("report: training %s failed: %s", label, out.get("reason"))
        rep.references.append(ref)
    return rep


# ------------------------------------------------------------------------------ output

def _n(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else "-"


def markdown(rep: Report) -> str:
    cfg, results = rep.cfg, rep.results
    status = Counter(r.get("status") for r in results)
    rw = cfg.reward
    reward_text = (f"{rw.kind} reward, target {rw.target_ms} ms" +
                   (f", preset {rw.preset}" if rw.preset and rw.alpha is None and rw.beta is None else "") +
                   (f", alpha {rw.alpha}" if rw.alpha is not None else "") + (f", beta {rw.beta}" if rw.beta is not None else ""))
    b = io.StringIO()
    b.write(f"# Search report: {cfg.name}\n\n")
    b.write(f"Run folder `{rep.run.path}`: {len(results)} trials "
            f"({', '.join(f'{n} {s}' for s, n in status.most_common())}) of `{cfg.space.name}` "
            f"(resolution {cfg.space.resolution}, width {cfg.space.width}, depth {cfg.space.depth}) with the "
            f"`{cfg.controller.name}` controller; {reward_text}; latency from `{cfg.latency.source}`; "
            f"data `{cfg.data.source}`, {cfg.train.epochs} epochs.\n\n")
    front = pareto_front(results)
    b.write(f"## Pareto front (accuracy vs latency), {len(front)} archs\n\n")
    b.write("| trial | accuracy | latency ms | reward | params | MACs | on-chip B | off-chip B |\n"
            "|---|---|---|---|---|---|---|---|\n")
    for r in front:
        b.write(f"| {r['trial_id']} | {_n(r['accuracy'], '.4f')} | {_n(r['latency_ms'], '.3f')} | "
                f"{_n(r['reward'], '.4f')} | {_n(r.get('params'), ',')} | {_n(r.get('macs'), ',')} | "
                f"{_n(r.get('on_chip_bytes'), ',')} | {_n(r.get('off_chip_bytes'), ',')} |\n")
    best = best_result(results)
    if best is not None:
        b.write(f"\nBest reward {best['reward']:.4f} (accuracy {best['accuracy']:.4f}, {best['latency_ms']:.3f} ms), "
                f"trial {best['trial_id']}: `{best['arch']}`\n")
    failed = Counter(str(r.get("reason")) for r in results if r.get("status") not in USABLE)
    if failed:
        b.write("\n## Failed and infeasible trials\n\n| trials | status: reason |\n|---|---|\n")
        by = Counter((r.get("status"), str(r.get("reason"))) for r in results if r.get("status") not in USABLE)
        for (s, why), n in by.most_common():
            b.write(f"| {n} | {s}: {why.replace('|', '/')} |\n")
    if rep.references:
        b.write("\n## References at the run's size\n\n| reference | latency ms | accuracy |\n|---|---|---|\n")
        for ref in rep.references:
            b.write(f"| {ref.label} | {_n(ref.latency_ms, '.3f')} | "
                    f"{_n(ref.accuracy, '.4f') if ref.accuracy is not None else 'not trained (--train-references)'} |\n")
    b.write(f"\n## Best archs, per layer\n\nLatency breakdown from `{rep.breakdown_source}`.\n")
    for r, lat in rep.breakdowns:
        b.write(f"\n### {r['trial_id']}: reward {r['reward']:.4f}, accuracy {r['accuracy']:.4f}\n\n`{r['arch']}`\n\n")
        on, off = lat.on_chip_bytes, lat.off_chip_bytes
        split = ""
        if on is not None and off is not None:
            split = (f"; parameters {on:,} B on chip, {off:,} B streamed from the host"
                     f"{' (all on chip)' if off == 0 else ''}")
        b.write(f"{lat.latency_ms:.3f} ms predicted{split}; ops on TPU/CPU "
                f"{_n(lat.ops_on_tpu, 'd')}/{_n(lat.ops_on_cpu, 'd')}.\n\n")
        if lat.layers:
            total = sum(ly.latency_ms for ly in lat.layers) or 1.0
            b.write("| # | layer | op | ms | share | on-chip B | off-chip B | device |\n"
                    "|---|---|---|---|---|---|---|---|\n")
            for i, ly in enumerate(lat.layers):
                b.write(f"| {i} | {ly.name} | {ly.op} | {ly.latency_ms:.4f} | {100 * ly.latency_ms / total:.1f}% | "
                        f"{ly.on_chip_bytes:,} | {ly.off_chip_bytes:,} | {ly.device} |\n")
    b.write("\n## Plots\n\n![accuracy vs latency](pareto.png)\n\n![reward over trials](reward.png)\n")
    if rep.decision_entropy:
        b.write("\n![controller entropy](entropy.png)\n")
    return b.getvalue()


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


def plot_pareto(rep: Report, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    order = {r["trial_id"]: i for i, r in enumerate(rep.results)}
    ok = [r for r in rep.results if usable(r)]
    if ok:
        sc = ax.scatter([r["latency_ms"] for r in ok], [r["accuracy"] for r in ok], s=18,
                        c=[order[r["trial_id"]] + 1 for r in ok], cmap="viridis", zorder=2, label="trials")
        fig.colorbar(sc, ax=ax, label="trial (completion order)")
    bad = [r for r in rep.results if r.get("status") == "infeasible" and isinstance(r.get("latency_ms"), float)]
    if bad:
        ax.scatter([r["latency_ms"] for r in bad], [0 for _ in bad], marker="x", c="0.5", label="infeasible")
    front = sorted(pareto_front(rep.results), key=lambda r: r["latency_ms"])
    if front:
        ax.step([r["latency_ms"] for r in front], [r["accuracy"] for r in front], where="post", c="tab:orange",
                lw=1.5, zorder=3, label="Pareto front")
        best = best_result(rep.results)
        ax.scatter([best["latency_ms"]], [best["accuracy"]], s=160, facecolors="none", edgecolors="tab:red",
                   lw=1.5, zorder=4, label="best reward")
    ax.axvline(rep.cfg.reward.target_ms, ls=":", c="0.3", label=f"target {rep.cfg.reward.target_ms} ms")
    for i, ref in enumerate(r for r in rep.references if r.latency_ms is not None):
        color = ("tab:red", "tab:purple", "tab:brown")[i % 3]
        if ref.accuracy is not None:
            ax.scatter([ref.latency_ms], [ref.accuracy], marker="s", s=60, c=color, zorder=4,
                       label=f"{ref.label} (same recipe)")
        else:
            ax.axvline(ref.latency_ms, ls="--", c=color, lw=1, label=f"{ref.label} latency (not trained)")
    ax.set(xlabel=f"latency (ms, {rep.cfg.latency.source})", ylabel="validation accuracy",
           title=f"{rep.cfg.name}: accuracy vs latency")
    _finish(plt, fig, ax, path, "lower right")


def plot_reward(rep: Report, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    x = np.arange(1, len(rep.results) + 1)
    rew = np.array([r["reward"] if usable(r) else np.nan for r in rep.results], dtype=float)
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


def plot_entropy(rep: Report, path: Path) -> None:
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


def write_tensorboard(rep: Report, folder: Path) -> None:
    """Per-trial scalars at step = completion order (as the search logs them live), the
    controller's entropies, and the best arch as text."""
    events = EventLog(folder)
    try:
        log_trials(events, rep.results)
        for step, e in enumerate(rep.policy_entropy, start=1):
            events.scalar("controller/policy_entropy", e, step)
        for step, e in enumerate(rep.decision_entropy, start=1):
            events.scalar("controller/decision_entropy", e, step)
        b = best_result(rep.results)
        if b is not None:
            events.text("search/best_arch", b["arch"], len(rep.results))
    finally:
        events.close()


def write(rep: Report, out: str | Path | None = None, *, tensorboard: bool = True) -> Path:
    """Write the report folder (built beside it, then renamed into place)."""
    out_dir = Path(out) if out is not None else rep.run.path / "report"
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "report.md").is_file())):
        raise RunFolderError(f"--out: {str(out_dir)!r} exists and is not a report folder; choose another --out")
    with staged_folder(out_dir) as work:
        (work / "report.md").write_text(markdown(rep))
        plot_pareto(rep, work / "pareto.png")
        plot_reward(rep, work / "reward.png")
        if rep.decision_entropy:
            plot_entropy(rep, work / "entropy.png")
        if tensorboard:
            write_tensorboard(rep, work / "tensorboard")
    return out_dir
