"""What ``nas search`` shows: a live progress bar, one line per finished trial, and the
Pareto table at the end (also ``nas report``'s console summary)."""

from __future__ import annotations

import io
import math
import sys
from typing import Any, TextIO

from nas.core.events import Listener, ProgressEvent, TrialFinished, TrialStarted
from nas.ledger.ledger import Ledger
from nas.core.record import Status, TrialRecord, best_result, pareto_front

__all__ = ["Listener", "Progress", "count_text", "pareto_table", "trial_line"]




class Progress:
    """Live progress: a tqdm bar (done/total, running, failed, best reward) and one line per
    finished trial; the Pareto set is printed again whenever it changes."""

    def __init__(self, total: int, prior: Ledger | None = None, *, stream: TextIO = sys.stderr,
                 enabled: bool = True):
        from tqdm import tqdm

        self.results: list[TrialRecord] = list(prior.ordered_results()) if prior else []
        self.running: set[str] = set()
        self.stream = stream
        self.front_key: tuple = tuple(r.trial_id for r in pareto_front(self.results))
        self.bar = tqdm(total=total, initial=min(total, len(self.results)), file=stream, disable=None if enabled else True,
                        unit="trial", dynamic_ncols=True, leave=True)
        self._postfix()

    def __call__(self, event: ProgressEvent) -> None:
        if isinstance(event, TrialStarted):
            self.running.add(event.trial_id)
        elif isinstance(event, TrialFinished):
            payload = event.record
            self.running.discard(payload.trial_id)
            self.results.append(payload)
            self.bar.write(trial_line(payload), file=self.stream)
            self.bar.update(1)
            front = pareto_front(self.results)
            key = tuple(r.trial_id for r in front)
            if key != self.front_key and front:
                self.front_key = key
                self.bar.write("  pareto: " + ", ".join(f"{r.scored_accuracy:.3f}@{r.latency_ms:.2f}ms" for r in front),
                               file=self.stream)
        self._postfix()

    def _postfix(self) -> None:
        failed = sum(r.status in (Status.FAILED, Status.INFEASIBLE) for r in self.results)
        best = best_result(self.results)
        self.bar.set_postfix_str(f"running {len(self.running)}, failed {failed}, best "
                                 f"{best.reward:.4f}" if best else f"running {len(self.running)}, failed {failed}")

    def close(self) -> None:
        self.bar.close()


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else "-"


def _mib(n: Any) -> str:
    """Bytes as MiB with two decimals ("-" for no value)."""
    return _num(n / 2**20 if isinstance(n, (int, float)) else None, ".2f")


def count_text(n: Any) -> str:
    """A parameter or MAC count in brief: 4.46M, 230.0K ("-" for no value)."""
    if not isinstance(n, (int, float)):
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def trial_line(r: TrialRecord) -> str:
    """One line per finished trial: proxy accuracy, deployment latency and memory, both sizes."""
    head = f"{r.status.value:<10} {r.trial_id}"
    sizes = f"params {count_text(r.params)} (proxy {count_text(r.proxy_params)})"
    memory = f"off-chip {_mib(r.off_chip_bytes)} MiB" if r.off_chip else "on-chip"
    if r.status in (Status.OK, Status.STOPPED):
        int8 = f" (int8 {_num(r.int8_accuracy, '.4f')})" if r.int8_accuracy is not None else ""
        return (f"{head}  acc {_num(r.accuracy, '.4f')}{int8}  latency {_num(r.latency_ms, '.3f')} ms  {memory}  {sizes}  "
                f"reward {_num(r.reward, '.4f')}  ({_num(r.trial_s, '.1f')} s)")
    if r.status is Status.INFEASIBLE:
        return f"{head}  latency {_num(r.latency_ms, '.3f')} ms  {memory}  {sizes}  {r.reason}"
    return f"{head}  {r.reason}"


def pareto_table(results: list[TrialRecord]) -> str:
    """The Pareto front (proxy accuracy vs deployment latency) and the best arch, as text;
    with int8 scoring (``score.accuracy: int8``), the int8 accuracy beside the float one."""
    front = pareto_front(results)
    int8 = any(r.int8_accuracy is not None for r in results)
    buf = io.StringIO()
    n_ok = sum(r.usable for r in results)
    n_off = sum(r.off_chip for r in results if r.latency_ms is not None)
    buf.write(f"{len(results)} trials, {n_ok} usable, {n_off} with parameters off-chip; Pareto front "
              f"(proxy {'int8 ' if int8 else ''}accuracy vs deployment latency), {len(front)} archs:\n")
    buf.write(f"{'accuracy':>9} {'int8':>7} " if int8 else f"{'accuracy':>9} ")
    buf.write(f"{'latency_ms':>10} {'reward':>8} {'params':>10} {'MACs':>13} {'off_chip':>10} {'proxy_params':>12}  trial\n")
    for r in front:
        buf.write(f"{_num(r.accuracy, '.4f'):>9} " + (f"{_num(r.int8_accuracy, '.4f'):>7} " if int8 else ""))
        buf.write(f"{_num(r.latency_ms, '.3f'):>10} {_num(r.reward, '.4f'):>8} "
                  f"{_num(r.params, ','):>10} {_num(r.macs, ','):>13} {_num(r.off_chip_bytes, ','):>10} "
                  f"{_num(r.proxy_params, ','):>12}  {r.trial_id}\n")
    best = best_result(results)
    if best is not None:
        also = f", int8 {best.int8_accuracy:.4f}" if best.int8_accuracy is not None else ""
        buf.write(f"best reward {best.reward:.4f} (proxy accuracy {best.accuracy:.4f}{also}, deployment "
                  f"{best.latency_ms:.3f} ms), trial {best.trial_id}:\n  {best.arch}\n"
                  f"  trained as {best.proxy_arch}\n")
    else:
        buf.write("no trial succeeded\n")
    return buf.getvalue()
