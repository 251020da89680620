"""`python -m evaluation.run`: simulate every policy on the chosen workloads and report.

    python -m evaluation.run [--workload builtin|openb|csv:JOBS.csv[:NODES.csv]]... [--seed N] [--seeds K]
                             [--policies default,checkpoint,guardgrid,guardgrid+migration] [--out out/]
                             [--workers 2] [--set PARAM=VALUE]...

Writes <out>/results.csv (one row per workload and policy, pooled over seeds), <out>/recoveries.csv (every
failure with its stages), <out>/evaluation.png and <out>/table.txt, and prints the table. Runs are spread
over worker processes; a progress bar counts finished jobs. The same arguments always give the same files.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import os
import queue
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from evaluation.policies import POLICY_NAMES, make_policy
from evaluation.report import format_table, paper_comparison, plot, write_recoveries_csv, write_summary_csv
from evaluation.sim.engine import Simulation
from evaluation.sim.params import SimParams
from evaluation.sim.results import SimResult, Summary, summarise
from evaluation.workloads import Workload, WorkloadError, builtin_workload, csv_workload, openb_workload

__all__ = ["WorkloadChoice", "Task", "run_task", "run_tasks", "evaluate", "main", "parse_workload",
           "parse_overrides"]


@dataclass(frozen=True)
class WorkloadChoice:
    """A workload named on the command line; built inside each worker (cheap, deterministic)."""

    kind: str  # builtin | openb | csv
    jobs_csv: str = ""
    nodes_csv: str = ""

    def build(self, seed: int) -> Workload:
        if self.kind == "builtin":
            return builtin_workload(seed=seed)
        if self.kind == "openb":
            return openb_workload(seed=seed)
        return csv_workload(self.jobs_csv, self.nodes_csv or None)

    @property
    def label(self) -> str:
        return self.kind if self.kind != "csv" else f"csv:{Path(self.jobs_csv).name}"


def parse_workload(text: str) -> WorkloadChoice:
    if text in ("builtin", "openb"):
        return WorkloadChoice(text)
    if text.startswith("csv:"):
        jobs, _, nodes = text[4:].partition(":")
        if not jobs:
            raise argparse.ArgumentTypeError("csv: needs a path, e.g. csv:my-jobs.csv")
        for path in filter(None, (jobs, nodes)):
            if not Path(path).is_file():
                raise argparse.ArgumentTypeError(f"{path}: no such file")
        return WorkloadChoice("csv", jobs, nodes)
    raise argparse.ArgumentTypeError(f"{text!r}: expected builtin, openb or csv:PATH[:NODES_PATH]")


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """`name=value` pairs for SimParams fields, converted to the field's type."""
    fields = {f.name: f for f in dataclasses.fields(SimParams)}
    values: dict[str, Any] = {}
    for pair in pairs:
        name, eq, raw = pair.partition("=")
        if not eq or name not in fields:
            raise argparse.ArgumentTypeError(f"--set {pair!r}: expected PARAM=VALUE with PARAM one of "
                                             f"{', '.join(sorted(fields))}")
        default = fields[name].default
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("true", "false"):
                    raise ValueError
                values[name] = raw.lower() == "true"
            else:
                values[name] = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--set {pair!r}: {raw!r} is not a valid value") from None
    return values


@dataclass(frozen=True)
class Task:
    workload: WorkloadChoice
    policy: str
    seed: int
    overrides: tuple[tuple[str, Any], ...] = ()


_progress_queue: Any = None  # set in worker processes by _init_worker


def _init_worker(progress: Any) -> None:
    global _progress_queue
    _progress_queue = progress
    logging.basicConfig(level=logging.ERROR)  # the predictor's own warnings are expected in a simulation


def run_task(task: Task, on_progress: Callable[[int], None] | None = None) -> SimResult:
    """One simulation: one workload, one policy, one seed."""
    workload = task.workload.build(task.seed)
    params = SimParams().with_overrides(**dict(task.overrides))
    sim = Simulation(workload, make_policy(task.policy, params), params, seed=task.seed, on_progress=on_progress)
    result = sim.run()
    return dataclasses.replace(result, workload=task.workload.label)


def _run_in_worker(task: Task) -> SimResult:
    done = [0]

    def report(n: int) -> None:
        done[0] += n
        if done[0] >= 10 and _progress_queue is not None:
            _progress_queue.put(done[0])
            done[0] = 0

    result = run_task(task, report)
    if done[0] and _progress_queue is not None:
        _progress_queue.put(done[0])
    return result


def run_tasks(tasks: Sequence[Task], workers: int = 2, progress: bool = True) -> list[SimResult]:
    """Results in the order of `tasks`, whatever the number of workers."""
    total = sum(len(t.workload.build(t.seed).jobs) for t in tasks)
    bar = tqdm(total=total, unit="job", desc="simulating", disable=not progress, file=sys.stderr,
               dynamic_ncols=True, mininterval=0.5)
    try:
        if workers <= 1:
            logging.getLogger("predictor").setLevel(logging.ERROR)
            return [run_task(task, bar.update) for task in tasks]
        # Spawned workers start clean; a fixed hash seed keeps set iteration (and so results) identical.
        os.environ.setdefault("PYTHONHASHSEED", "0")
        context = multiprocessing.get_context("spawn")
        updates = context.Queue()
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                 initargs=(updates,)) as pool:
            # Longest first (GuardGrid runs the predictor cycle, openb is the bigger cluster), so the last
            # worker is not left alone with a long run; results keep the order of `tasks`.
            order = sorted(range(len(tasks)), key=lambda i: (not tasks[i].policy.startswith("guardgrid"),
                                                               tasks[i].workload.kind != "openb", i))
            submitted = {i: pool.submit(_run_in_worker, tasks[i]) for i in order}
            futures: list[Future[SimResult]] = [submitted[i] for i in range(len(tasks))]
            while not all(f.done() for f in futures):
                try:
                    bar.update(updates.get(timeout=0.2))
                except queue.Empty:
                    pass
            while True:
                try:
                    bar.update(updates.get_nowait())
                except queue.Empty:
                    break
            return [f.result() for f in futures]
    finally:
        bar.close()


def evaluate(workloads: Sequence[WorkloadChoice], policies: Sequence[str], seeds: Sequence[int],
             overrides: dict[str, Any] | None = None, workers: int = 2,
             progress: bool = True) -> tuple[list[SimResult], list[Summary]]:
    """All runs, and one pooled summary per (workload, policy) in the order given."""
    items = tuple(sorted((overrides or {}).items()))
    tasks = [Task(w, p, s, items) for w in workloads for p in policies for s in seeds]
    results = run_tasks(tasks, workers, progress)
    summaries = []
    for w in workloads:
        for p in policies:
            summaries.append(summarise([r for r in results if r.workload == w.label and r.policy == p]))
    return results, summaries


def write_outputs(out: Path, results: Sequence[SimResult], summaries: Sequence[Summary],
                  credits: Sequence[str] = ()) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": out / "table.txt", "csv": out / "results.csv", "recoveries": out / "recoveries.csv",
             "plot": out / "evaluation.png"}
    text = format_table(summaries) + "\n\n" + paper_comparison(summaries) + "\n"
    if credits:
        text += "\n" + "\n".join(f"Data: {c}" for c in credits) + "\n"
    paths["table"].write_text(text)
    write_summary_csv(summaries, paths["csv"])
    write_recoveries_csv(results, paths["recoveries"])
    plot(results, summaries, paths["plot"])
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.run", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", action="append", type=parse_workload,
                        help="builtin, openb or csv:JOBS.csv[:NODES.csv] (repeatable; default: builtin and openb)")
    parser.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds, pooled per policy (default 1)")
    parser.add_argument("--policies", default=",".join(POLICY_NAMES),
                        help=f"comma-separated subset of {','.join(POLICY_NAMES)}")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output directory (default out/)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes (default: 2, or 1 on a single core)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="PARAM=VALUE",
                        help="change a model parameter (see docs/evaluation.md), e.g. --set image_pull_mib_per_s=100")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICY_NAMES]
    if unknown or not policies:
        parser.error(f"unknown policy {', '.join(unknown) or '(none)'}; choose from {', '.join(POLICY_NAMES)}")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    try:
        overrides = parse_overrides(args.overrides)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    workloads = args.workload or [WorkloadChoice("builtin"), WorkloadChoice("openb")]
    seeds = list(range(args.seed, args.seed + args.seeds))
    started = time.monotonic()
    try:
        built = {w.label: w.build(seeds[0]) for w in workloads}
    except WorkloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for label, workload in built.items():
        print(f"workload {label}: {workload.description}", file=sys.stderr)
    results, summaries = evaluate(workloads, policies, seeds, overrides, args.workers, not args.no_progress)
    credits = [w.credit for w in built.values() if w.credit]
    paths = write_outputs(args.out, results, summaries, credits)
    print(paths["table"].read_text())
    print(f"({len(results)} simulations in {time.monotonic() - started:.0f} s)")
    for name, path in paths.items():
        print(f"{name:>10}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
