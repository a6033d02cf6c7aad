"""``nas report RUN_DIR``: what a search found, as a Markdown page, PNG plots and TensorBoard logs.

Writes into ``RUN/report`` (or ``--out``)::

    report.md      the Pareto table, failures by reason, and the best archs with their
                   per-layer latency breakdown and on/off-chip split
    pareto.png     proxy accuracy vs the deployment model's latency: every trial (coloured by
                   when it ran; off-chip ones ringed), the Pareto front, the target latency and
                   the references at the deployment scale; beside it, accuracy vs the
                   deployment model's parameter bytes against the Edge TPU's SRAM
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

from latency_models import Target, get_source
from search_spaces import Arch
from search_spaces.references import reference

from nas.trial import proxy
from nas.config.experiment import ExperimentConfig
from nas.core.errors import RunFolderError
from nas.core.events import Ask, Repeat
from nas.ledger.ledger import Ledger, make_space, read_state_json
from nas.trial.recipe import latency_source, load_data
from nas.core.record import TrialRecord, best_result, pareto_front
from nas.ledger.folder import RunFolder, staged_folder
from nas.ledger.tblog import EventLog, log_trials
from nas.trial.entry import run_trial
from nas.results.plots import SRAM_BYTES, plot_entropy, plot_pareto, plot_reward

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
    results: list[TrialRecord]
    policy_entropy: list[float] = field(default_factory=list)   # one per proposal (mnas), nats/decision
    decision_entropy: list[float] = field(default_factory=list)  # windowed, one per proposal
    max_entropy: float = 0.0                                     # of a uniform policy, nats/decision
    window: int = 20
    random_window_entropy: float = 0.0                           # uniform proposals, same window
    references: list[Reference] = field(default_factory=list)
    breakdowns: list[tuple[TrialRecord, Any]] = field(default_factory=list)  # (trial, LatencyResult)
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
    space = make_space(cfg)
    n_choices = [len(d.choices) for d in space.decision_list]
    max_ent = float(np.mean([math.log(n) for n in n_choices])) if n_choices else 0.0
    _, events, _, _ = read_state_json(state_text)
    policy, proposed = [], []
    # A window longer than a short run would leave no full window to show.
    window = min(window, max(2, sum(isinstance(e, (Ask, Repeat)) for e in events) // 2))

    def on_ask(ctrl, arch: str) -> None:
        ent = ctrl.summary().get("entropy")
        if isinstance(ent, float) and math.isfinite(ent):
            policy.append(ent)
        proposed.append(arch)

    Ledger.from_json(cfg, state_text, on_ask=on_ask)
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
    try:
        src = latency_source(cfg)
    except Exception as e:  # noqa: BLE001 - e.g. an Edge TPU run reported on a machine without one
        # Visible: the breakdown then comes from another source than the run's latencies.
        log.warning("report: the run's latency source %s cannot be loaded here (%s); the per-layer breakdown "
                    "uses the edgetpu-model predictor", cfg.latency.source, e)
        src = None
    if src is None or getattr(src, "measured", False):
        return get_source("edgetpu-model")
    return src


def _target(arch, cfg: ExperimentConfig, num_classes: int | None):
    res = arch.resolution
    return Target(arch, input_shape=(res, res, cfg.data.channels), num_classes=num_classes)


def _num_classes(cfg: ExperimentConfig, results: list[TrialRecord]) -> int:
    """The class count the trials were built with: recorded per trial; for runs made before
    it was, from the data (the head's size changes the latency)."""
    for r in results:
        if r.num_classes is not None:
            return r.num_classes
    return load_data(cfg, Arch.from_string(results[0].arch).resolution).num_classes


def build(run_dir: str | Path, *, top: int = 3, window: int = 20, train_references: bool = False) -> Report:
    """Read a run folder and compute everything the report shows (no files written)."""
    run = RunFolder(run_dir)
    if not run.path.is_dir():
        raise RunFolderError(f"RUN_DIR: {str(run_dir)!r} does not exist")
    cfg = run.experiment()
    results = run.results()
    if not results:
        raise RunFolderError(f"RUN_DIR: {str(run_dir)!r} has no finished trial yet (no trials.csv rows)")
    rep = Report(run=run, cfg=cfg, results=results, window=window)
    state = run.state_text()
    if state is not None:
        try:
            (rep.policy_entropy, rep.decision_entropy, rep.max_entropy, rep.window,
             rep.random_window_entropy) = controller_entropy(cfg, state, window)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            log.warning("report: cannot replay %s (%s); no entropy plot", run.state_file, e)

    src = _breakdown_source(cfg)
    rep.breakdown_source = src.describe()
    classes = _num_classes(cfg, results)
    ranked = sorted((r for r in results if r.usable), key=lambda r: -r.reward)[:top]
    for r in ranked:
        rep.breakdowns.append((r, src.measure(_target(Arch.from_string(r.arch), cfg, classes))))

    # References at the deployment scale (their latency); a trained one is trained as its
    # proxy, like every trial.
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
            out = run_trial(ref.arch, cfg)
            if out.usable:
                ref.accuracy = out.accuracy
                ref.latency_ms = out.latency_ms
            else:
                log.warning("report: training %s failed: %s", label, out.reason)
        rep.references.append(ref)
    return rep


# ------------------------------------------------------------------------------ output

def _n(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else "-"


def markdown(rep: Report) -> str:
    cfg, results = rep.cfg, rep.results
    status = Counter(r.status.value for r in results)
    rw = cfg.reward
    reward_text = (f"{rw.kind} reward, target {rw.target_ms} ms" +
                   (f", preset {rw.preset}" if rw.preset and rw.alpha is None and rw.beta is None else "") +
                   (f", alpha {rw.alpha}" if rw.alpha is not None else "") + (f", beta {rw.beta}" if rw.beta is not None else ""))
    measured = [r for r in results if r.latency_ms is not None]
    b = io.StringIO()
    b.write(f"# Search report: {cfg.name}\n\n")
    b.write(f"Run folder `{rep.run.path}`: {len(results)} trials "
            f"({', '.join(f'{n} {s}' for s, n in status.most_common())}) with the "
            f"`{cfg.controller.name}` controller; {proxy.describe(cfg)}; {reward_text}; latency from "
            f"`{cfg.latency.source}`; data `{cfg.data.source}`, {cfg.train.epochs} epochs.\n\n")
    if cfg.search.strategy == "oneshot":
        _oneshot_table(b, rep)
    if measured:
        lats = [r.latency_ms for r in measured]
        b.write(f"Deployment latency of the trials: {min(lats):.3f} to {max(lats):.3f} ms "
                f"({max(lats) / min(lats):.1f}x); {sum(r.off_chip for r in measured)} of {len(measured)} stream "
                f"parameters from the host (the Edge TPU's {SRAM_BYTES / 2**20:.0f} MiB SRAM cannot hold them).\n\n")
    front = pareto_front(results)
    int8 = cfg.score.accuracy == "int8"
    b.write(f"## Pareto front (proxy {'int8 ' if int8 else ''}accuracy vs deployment latency), {len(front)} archs\n\n")
    if int8:
        b.write(f"Scored on the int8 model: each trained proxy quantized post-training "
                f"({cfg.score.calibration_images} calibration images) and evaluated on "
                f"{cfg.score.eval_images or 'all the'} validation images; float accuracy beside it.\n\n")
    b.write(f"| trial | accuracy |{' int8 accuracy | int8 - float |' if int8 else ''} latency ms | reward | params | "
            f"MACs | on-chip B | off-chip B | proxy params | proxy MACs |\n|---|---|{'---|---|' if int8 else ''}"
            "---|---|---|---|---|---|---|---|\n")
    for r in front:
        drop = (r.int8_accuracy - r.accuracy) if r.int8_accuracy is not None and r.accuracy is not None else None
        extra = f" {_n(r.int8_accuracy, '.4f')} | {_n(drop, '+.4f')} |" if int8 else ""
        b.write(f"| {r.trial_id} | {_n(r.accuracy, '.4f')} |{extra} {_n(r.latency_ms, '.3f')} | {_n(r.reward, '.4f')} | "
                f"{_n(r.params, ',')} | {_n(r.macs, ',')} | {_n(r.on_chip_bytes, ',')} | "
                f"{_n(r.off_chip_bytes, ',')} | {_n(r.proxy_params, ',')} | {_n(r.proxy_macs, ',')} |\n")
    best = best_result(results)
    if best is not None:
        also = f", int8 {best.int8_accuracy:.4f}" if best.int8_accuracy is not None else ""
        b.write(f"\nBest reward {best.reward:.4f} (proxy accuracy {best.accuracy:.4f}{also}, deployment "
                f"{best.latency_ms:.3f} ms), trial {best.trial_id}: `{best.arch}`, trained as `{best.proxy_arch}`\n")
    if int8:
        _int8_table(b, results)
    bad = [r for r in results if not r.usable]
    if bad:
        b.write("\n## Failed and infeasible trials\n\n| trials | status: reason |\n|---|---|\n")
        by = Counter((r.status.value, str(r.reason)) for r in bad)
        for (st, why), n in by.most_common():
            b.write(f"| {n} | {st}: {why.replace('|', '/')} |\n")
    if rep.references:
        b.write("\n## References at the deployment scale\n\n| reference | latency ms | accuracy (as a proxy) |\n"
                "|---|---|---|\n")
        for ref in rep.references:
            b.write(f"| {ref.label} | {_n(ref.latency_ms, '.3f')} | "
                    f"{_n(ref.accuracy, '.4f') if ref.accuracy is not None else 'not trained (--train-references)'} |\n")
    b.write(f"\n## Best archs, per layer of the deployment model\n\nLatency breakdown from `{rep.breakdown_source}`.\n")
    for r, lat in rep.breakdowns:
        b.write(f"\n### {r.trial_id}: reward {r.reward:.4f}, accuracy {r.accuracy:.4f}\n\n`{r.arch}`\n\n"
                f"trained as `{r.proxy_arch}` ({_n(r.proxy_params, ',')} params; deployed "
                f"{_n(r.params, ',')})\n\n")
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
    b.write("\n## Plots\n\n![accuracy vs deployment latency and parameter bytes](pareto.png)\n\n"
            "![reward over trials](reward.png)\n")
    if rep.decision_entropy:
        b.write("\n![controller entropy](entropy.png)\n")
    return b.getvalue()


def _flipped(scores: list[tuple[float, float]]) -> tuple[int, int]:
    """(pairs compared, pairs the second score ranks the other way round from the first), over
    the pairs that neither score ties."""
    pairs = [(x, y) for i, x in enumerate(scores) for y in scores[i + 1:] if x[0] != y[0] and x[1] != y[1]]
    return len(pairs), sum((x[0] > y[0]) != (x[1] > y[1]) for x, y in pairs)


def _oneshot_table(b: io.StringIO, rep: Report) -> None:
    """The supernets' candidates: their one-shot accuracy beside what retraining gave, and how
    far the two rankings agree (how well the supernet ranked what it handed over)."""
    path = rep.run.path / "oneshot" / "candidates.json"
    if not path.is_file():
        b.write("One-shot search: the supernets have not handed over their candidates yet.\n\n")
        return
    cands = [TrialRecord.from_dict(c) for c in json.loads(path.read_text())["candidates"]]
    trained = {r.arch: r for r in rep.results if r.usable and r.accuracy is not None}
    b.write(f"## One-shot candidates, {len(cands)} from the supernets (`oneshot/candidates.json`), retrained as "
            f"the trials above\n\n| trial | picked as | one-shot accuracy | retrained accuracy | latency ms |\n"
            "|---|---|---|---|---|\n")
    for c in cands:
        r = trained.get(c.arch)
        b.write(f"| {r.trial_id if r else '(not retrained)'} | {c.reason} | {_n(c.accuracy, '.4f')} | "
                f"{_n(r.accuracy if r else None, '.4f')} | {_n(c.latency_ms, '.3f')} |\n")
    n, flipped = _flipped([(c.accuracy, trained[c.arch].accuracy) for c in cands
                           if c.arch in trained and c.accuracy is not None])
    if n:
        b.write(f"\nOf {n} pairs of candidates, retraining ranked {flipped} the other way round from the "
                f"supernet ({100 * flipped / n:.0f}%).\n")
    b.write("\n")


def _int8_table(b: io.StringIO, results) -> None:
    """Every scored trial's float and int8 accuracy, and how far the two rankings agree."""
    both = [r for r in results if r.usable and r.accuracy is not None and r.int8_accuracy is not None]
    if not both:
        return
    b.write("\n## Float vs int8 accuracy, every trial\n\n")
    if len(both) > 1:
        n, flipped = _flipped([(r.accuracy, r.int8_accuracy) for r in both])
        b.write(f"Of {n} pairs of trials, {flipped} are ranked the other way round by int8 accuracy "
                f"({100 * flipped / max(1, n):.0f}%).\n\n")
    b.write("| trial | accuracy | int8 accuracy | int8 - float | latency ms |\n|---|---|---|---|---|\n")
    for r in sorted(both, key=lambda r: -r.int8_accuracy):
        b.write(f"| {r.trial_id} | {r.accuracy:.4f} | {r.int8_accuracy:.4f} | {r.int8_accuracy - r.accuracy:+.4f} | "
                f"{_n(r.latency_ms, '.3f')} |\n")


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
            events.text("search/best_arch", b.arch, len(rep.results))
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
