"""``search.strategy: oneshot`` in a run folder: the supernets, then their candidates as trials.

``nas search`` on a one-shot experiment runs in two phases, both resumable:

1. **Supernets.** One :class:`~nas.oneshot.search.OneShotSearch` per latency target
   (``search.oneshot.targets_ms``, default ``reward.target_ms``), each in its own Ray task
   (in this process with ``--runner local``), each writing ::

       RUN/oneshot/target-<ms>ms/checkpoint.json   step, random states, the supernet's ledger
       RUN/oneshot/target-<ms>ms/weights-<step>.npz the supernet's weights and optimizer slots
       RUN/oneshot/target-<ms>ms/progress.json     the last step's figures (the live display reads it)
       RUN/oneshot/target-<ms>ms/candidates.json   when done: its candidates, one-shot scored trial records
       RUN/tensorboard/oneshot-<ms>ms/             oneshot/loss, entropy, latency_ms, reward, accuracy

   A killed search resumes from the last checkpoint (``search.oneshot.checkpoint_s``).
2. **Retraining.** The candidates of every target, merged (``RUN/oneshot/candidates.json``,
   the policies' most likely archs first, then by one-shot reward, at most ``budget.trials``),
   become trials of the ordinary search path: they are the search's queue (``search.queue``,
   recorded as an override in ``run.json``), proposed by the same ledger and told to the same
   controller, so ``trials.csv``, ``nas report`` (under the experiment's controller) and
   ``nas export`` are the same as for any search, and ``--resume`` after this point resumes
   the retraining.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from search_spaces import Arch, count_params
from search_spaces.supernet_shapes import stage_shapes

from nas.trial import proxy
from nas.config.experiment import ExperimentConfig
from nas.ledger.ledger import make_controller, make_space
from nas.trial.recipe import latency_source, load_data
from nas.ledger.folder import RunFolder, atomic_write

log = logging.getLogger(__name__)

__all__ = ["ONESHOT_CONTROLLERS", "check", "merged_candidates", "merged_file", "retrain_overrides", "run_supernet",
           "supernet_cpus", "supernet_gpus", "target_dir", "targets"]

#: The controllers a one-shot search can drive (the toolkit's LSTM policy, TuNAS's logits).
ONESHOT_CONTROLLERS = ("mnas", "logits")

#: Steps between two progress.json updates (the display polls it).
PROGRESS_EVERY = 10


def targets(cfg: ExperimentConfig) -> list[float]:
    return list(cfg.search.oneshot.targets_ms or [cfg.reward.target_ms])


def supernet_cpus(cfg: ExperimentConfig) -> float:
    """CPUs each supernet asks for: ``search.oneshot.cpus``, else the search's share."""
    if cfg.search.oneshot.cpus is not None:
        return cfg.search.oneshot.cpus
    return cfg.budget.cpus_per_trial * cfg.budget.concurrency / len(targets(cfg))


def supernet_gpus(cfg: ExperimentConfig, largest_node: float | None = None) -> float:
    """GPUs each supernet asks for: ``search.oneshot.gpus``, else the search's share
    (``budget.gpus_per_trial`` x ``budget.concurrency`` over the targets), whole GPUs above 1
    (Ray's rule), at most ``largest_node``'s (one task runs on one node)."""
    g = cfg.search.oneshot.gpus
    if g is None:
        g = cfg.budget.gpus_per_trial * cfg.budget.concurrency / len(targets(cfg))
        if g > 1:
            g = float(math.floor(g))
        if largest_node is not None and g > largest_node:
            log.info("search.oneshot.gpus: the search's share is %g GPUs per supernet; the largest node has %g",
                     g, largest_node)
            g = float(largest_node)
    elif g > 1 and not float(g).is_integer():
        raise ValueError(f"search.oneshot.gpus: {g:g} is neither a share of one GPU nor whole GPUs; allowed: a "
                         "fraction in [0, 1] or a whole number")
    return g


def merged_file(run: RunFolder) -> Path:
    """The merged candidates: once written, the supernets are done and the run retrains."""
    return run.path / "oneshot" / "candidates.json"


def target_dir(run: RunFolder | str | Path, target_ms: float) -> Path:
    root = run.path if isinstance(run, RunFolder) else Path(run)
    return root / "oneshot" / f"target-{target_ms:g}ms"


def check(cfg: ExperimentConfig) -> None:
    """Before a one-shot search: a controller that can drive it, a space a supernet holds."""
    if cfg.search.queue:
        raise ValueError(f"search.queue: a one-shot search queues its supernets' candidates there itself; allowed: "
                         f"an empty queue with search.strategy: oneshot (given {len(cfg.search.queue)} arch strings)")
    if cfg.controller.name not in ONESHOT_CONTROLLERS:
        raise ValueError(f"controller.name: {cfg.controller.name!r} cannot drive a one-shot search "
                         f"(search.strategy: oneshot); allowed: {', '.join(ONESHOT_CONTROLLERS)}")
    try:
        stage_shapes(proxy.space_of(make_space(cfg), cfg))
    except ValueError as e:
        raise ValueError(f"search.strategy: oneshot needs a space a supernet can hold, and space "
                         f"{cfg.space.name!r} is not one ({e}); allowed: efficientnet_edgetpu, "
                         "efficientnet_edgetpu_bench, mnasnet, or search.strategy: standalone") from None


def _latency_fn(cfg: ExperimentConfig, num_classes: int, source=None) -> Callable[[Sequence[Arch]], list[dict[str, Any]]]:
    src = source if source is not None else latency_source(cfg)
    channels = cfg.data.channels
    wants_params = cfg.reward.constraints.max_params is not None

    def latency(archs: Sequence[Arch]) -> list[dict[str, Any]]:
        out = []
        for a, r in zip(archs, src.measure_archs(list(archs), num_classes=num_classes, channels=channels)):
            d = {k: getattr(r, k) for k in ("latency_ms", "on_chip_bytes", "off_chip_bytes", "ops_on_cpu")}
            if wants_params:
                d["params"] = count_params(a, (a.resolution, a.resolution, channels), num_classes)
            out.append(d)
        return out

    return latency


def _log_step(events, step: int, out: dict[str, float]) -> None:
    for k, v in out.items():
        if v is not None and math.isfinite(v):
            events.scalar(f"oneshot/{k}", v, step)


def run_supernet(cfg: ExperimentConfig, target_ms: float, run_dir: str, latency=None) -> list[dict[str, Any]]:
    """One supernet at ``target_ms`` to the end, resumed from its checkpoint if it has one; its
    candidates (as dicts). In a Ray task or in this process; writes only its own folder.
    ``latency``: the latency source (default: the experiment's; a measurement service's client
    on a cluster). It trains on every GPU the process sees (``train.devices``), in
    ``train.precision``, with ``train.jit_compile``."""
    from nas.trial.devices import precision, setup_gpus, strategy
    from nas.oneshot.search import OneShotSearch
    from nas.ledger.tblog import EventLog
    from nas.trial.worker import limit_threads

    folder = target_dir(run_dir, target_ms)
    done = folder / "candidates.json"
    if done.is_file():
        return json.loads(done.read_text())["candidates"]
    gpus = supernet_gpus(cfg)
    if not gpus:
        limit_threads(supernet_cpus(cfg))
    setup_gpus(cfg, share=min(1.0, gpus) if gpus else None)
    space = make_space(cfg)
    proxies = proxy.space_of(space, cfg)
    split = load_data(cfg, proxy.of(space.sample(0), cfg).resolution)
    rcfg = cfg.reward.model_copy(update={"target_ms": target_ms})
    strat = strategy(cfg, f"supernet {target_ms:g} ms")
    with precision(cfg):
        search = OneShotSearch(space, proxies, split, make_controller(cfg, space), rcfg,
                               _latency_fn(cfg, split.num_classes, latency), cfg.search.oneshot, seed=cfg.seed,
                               strategy=strat, jit_compile=cfg.train.jit_compile,
                               loss_scale=cfg.train.precision == "mixed_float16")
    resumed = search.restore(folder)
    events = EventLog(Path(run_dir) / "tensorboard" / f"oneshot-{target_ms:g}ms")
    every = cfg.search.oneshot.checkpoint_s
    t0 = last = time.monotonic()

    def progress(extra: dict[str, Any]) -> None:
        atomic_write(folder / "progress.json", json.dumps({
            "target_ms": target_ms, "step": search.step_index, "total_steps": search.total_steps,
            "warmup_steps": search.warmup_steps, "seconds": round(time.monotonic() - t0, 1), **extra}))

    def on_step(step: int, out: dict[str, float]) -> None:
        nonlocal last
        _log_step(events, step, out)
        if step % PROGRESS_EVERY == 0 or step == search.total_steps:
            progress({k: v for k, v in out.items() if v is None or math.isfinite(v)})
        if time.monotonic() - last >= every or step == search.total_steps:
            search.save(folder)
            events.flush()
            last = time.monotonic()

    log.info("supernet %g ms: %s at step %d of %d", target_ms, "resumed" if resumed else "started",
             search.step_index, search.total_steps)
    progress({"phase": "training"})
    result = search.run(on_step=on_step)
    events.close()
    cands = [{"target_ms": target_ms, **c.as_dict(drop_empty=True)} for c in result.candidates]
    ent = [e for e in result.curves["entropy"] if math.isfinite(e)]
    summary = {"target_ms": target_ms, "steps": result.steps, "seconds": round(result.seconds, 1),
               "replicas": strat.num_replicas_in_sync if strat is not None else 1, "precision": cfg.train.precision,
               "resumed": resumed, "tracing": search.trainer.tracing_counts(),
               "entropy_first_last": [ent[0], ent[-1]] if ent else None, "candidates": cands}
    atomic_write(done, json.dumps(summary, indent=1) + "\n")
    progress({"phase": "done"})
    return cands


def merged_candidates(per_target: Sequence[Sequence[dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    """The candidates of every target (trial records as dicts, with their ``target_ms``), each
    arch once: the most likely archs first (in target order), then the sampled ones by one-shot
    reward; at most ``limit``."""
    seen: dict[str, dict[str, Any]] = {}

    def is_likely(c) -> bool:
        return c["reason"].startswith("most likely")

    def reward(c) -> float:
        r = c.get("reward")
        return r if r is not None and math.isfinite(r) else -1e9

    sampled = sorted((c for cs in per_target for c in cs if not is_likely(c)), key=lambda c: -reward(c))
    likely = [c for cs in per_target for c in cs if is_likely(c)]
    for c in [*likely, *sampled]:
        seen.setdefault(c["arch"], c)
    return list(seen.values())[:limit]


def retrain_overrides(cands: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What ``run.json`` records once the supernets are done: the candidates as the search's
    queue (``search.queue``: trained first, in order, their results told to the same
    controller), the budget their number."""
    return {"search.queue": [c["arch"] for c in cands], "budget.trials": len(cands)}


# ------------------------------------------------------------------------------ the driver's side

class SupernetProgress:
    """What ``nas search`` shows while the supernets train: a line per target at every tenth
    of its steps (read from its ``progress.json``, so the same for Ray tasks and local runs)."""

    def __init__(self, run: RunFolder, target_list: Sequence[float], stream):
        self.run, self.targets, self.stream = run, list(target_list), stream
        self.shown: dict[float, int] = {}
        # A resumed search finds the killed one's last progress.json: not news until rewritten.
        self.since = time.time()

    def poll(self) -> None:
        for t in self.targets:
            p = target_dir(self.run, t) / "progress.json"
            try:
                if p.stat().st_mtime < self.since:
                    continue
                d = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            total = max(1, d["total_steps"])
            tenth = d["step"] * 10 // total if d.get("phase") != "done" else 11
            if tenth <= self.shown.get(t, -1):
                continue
            self.shown[t] = tenth
            self.stream.write(progress_line(d) + "\n")
            self.stream.flush()


def progress_line(d: dict[str, Any]) -> str:
    """One supernet's state in a line."""
    head = f"supernet {d['target_ms']:g} ms: "
    if d.get("phase") == "done":
        return head + f"done, {d['total_steps']} steps in {d['seconds']:.0f} s"
    warm = d["step"] < d["warmup_steps"]
    text = head + f"step {d['step']}/{d['total_steps']}{' (warm-up)' if warm else ''}"
    for key, label, fmt in (("loss", "loss", ".3f"), ("reward", "reward", ".3f"), ("accuracy", "acc", ".3f"),
                            ("latency_ms", "latency", ".2f"), ("entropy", "entropy", ".3f")):
        if d.get(key) is not None:
            text += f", {label} {d[key]:{fmt}}{' ms' if key == 'latency_ms' else ''}"
    return text + f" [{d['seconds']:.0f} s]"


def run_supernets_local(cfg: ExperimentConfig, run: RunFolder, display: SupernetProgress) -> list[list[dict]]:
    """The supernets one after another in this process, the display polled from a thread."""
    import threading

    stop = threading.Event()

    def watch():
        while not stop.wait(2.0):
            display.poll()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        out = [run_supernet(cfg, t, str(run.path)) for t in targets(cfg)]
    finally:
        stop.set()
        thread.join()
        display.poll()
    return out


def finish_supernets(cfg: ExperimentConfig, run: RunFolder, per_target: Sequence[Sequence[dict]]) -> list[dict]:
    """Merge the targets' candidates, write ``RUN/oneshot/candidates.json`` and record the
    retraining in ``run.json``; the merged list."""
    cands = merged_candidates(per_target, cfg.budget.trials)
    if not cands:
        raise ValueError("search.oneshot: no supernet gave a feasible candidate (every sampled arch broke a "
                         "reward constraint or had no finite reward); allowed: looser reward.constraints or "
                         "targets_ms")
    atomic_write(merged_file(run), json.dumps({"candidates": cands}, indent=1) + "\n")
    return cands
