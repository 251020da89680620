"""The evaluation's outputs: a table on stdout, CSV files, and a PNG.

Why fixed formatting everywhere: the same seed must give byte-identical files (the tests compare them),
so floats are written with a fixed number of decimals and rows in a fixed order.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluation.sim.results import CAUSES, STAGES, SimResult, Summary  # noqa: E402

__all__ = ["format_table", "write_summary_csv", "write_recoveries_csv", "plot", "paper_comparison",
           "POLICY_LABELS"]

POLICY_LABELS: Mapping[str, str] = {
    "default": "(a) default",
    "checkpoint": "(b) checkpoint",
    "guardgrid": "(c) GuardGrid",
    "guardgrid+migration": "(d) GuardGrid+migr.",
}
_COLORS = {"default": "#7f7f7f", "checkpoint": "#1f77b4", "guardgrid": "#2ca02c", "guardgrid+migration": "#d62728"}
_STAGE_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")


def _num(value: float, digits: int = 0) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    out = [line, "-" * len(line)]
    for row in rows:
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(out)


def format_table(summaries: Sequence[Summary]) -> str:
    """Two tables: recovery (time and stages) and outcomes (OOM rate, completion, standby memory)."""
    recovery_header = ["workload", "policy", "job failures (OOM kills, nodes failed)", "recovered", "mean s", "median s", "p95 s",
                       "reschedule", "node start", "image pull", "dataset", "model load", "on own slot"]
    cause_header = ["workload", "policy", *(f"{c} {what}" for c in ("OOM kill", "node failure")
                                             for what in ("n", "mean s", "median s"))]
    cause_rows = []
    recovery_rows = []
    outcome_header = ["workload", "policy", "OOM/1000 job-h", "JCT mean h", "makespan h", "unfinished",
                      "standby GiB (%)", "reactive", "lost work h", "ckpt h", "migrations"]
    outcome_rows = []
    for s in summaries:
        label = POLICY_LABELS.get(s.policy, s.policy)
        recovery_rows.append([
            s.workload, label, f"{s.failures} ({s.oom_kills} OOM, {s.node_failures} nodes)",
            f"{s.recovered}" + (f" +{s.failed_again} again +{s.unrecovered} open" if s.failed_again or s.unrecovered
                                else ""),
            _num(s.recovery_mean_s), _num(s.recovery_median_s), _num(s.recovery_p95_s),
            *(_num(s.stage_mean_s.get(stage, math.nan)) for stage in STAGES), str(s.warm_from_slot),
        ])
        cells = []
        for cause in CAUSES:
            count, mean, median = s.by_cause.get(cause, (0, math.nan, math.nan))
            cells += [str(count), _num(mean), _num(median)]
        cause_rows.append([s.workload, label, *cells])
        outcome_rows.append([
            s.workload, label, _num(s.oom_per_1000_job_hours, 2), _num(s.jct_mean_h, 2), _num(s.makespan_h, 1),
            str(s.unfinished_jobs), f"{_num(s.standby_mean_gib, 0)} ({_num(s.standby_pct, 1)}%)",
            "-" if math.isnan(s.reactive_pct) else f"{s.reactive_pct:.0f}%",
            _num(s.lost_work_h, 1), _num(s.checkpoint_h, 1), str(s.migrations),
        ])
    return ("Recovery time per failure (seconds; stage columns are means over recovered failures)\n"
            + _table(recovery_header, recovery_rows)
            + "\n\nRecovery time by cause (policies with fewer OOM kills have a different mix)\n"
            + _table(cause_header, cause_rows) + "\n\nOutcomes\n" + _table(outcome_header, outcome_rows))


def paper_comparison(summaries: Sequence[Summary]) -> str:
    """GuardGrid against the baselines, next to what the papers claim (nothing here is tuned to them)."""
    lines = ["Against the papers' claims (GuardGrid: up to 16.7x faster recovery, 93% fewer OOM kills; "
             "SpeCon: up to 41.5% shorter JCT, 24.7% shorter makespan):"]
    by_key = {(s.workload, s.policy): s for s in summaries}
    for workload in dict.fromkeys(s.workload for s in summaries):
        base = by_key.get((workload, "default"))
        ckpt = by_key.get((workload, "checkpoint"))
        gg = by_key.get((workload, "guardgrid"))
        mig = by_key.get((workload, "guardgrid+migration"))
        parts = []
        if base and gg:
            parts.append(f"recovery {_ratio(base.recovery_mean_s, gg.recovery_mean_s)} vs (a)")
        if ckpt and gg:
            parts.append(f"{_ratio(ckpt.recovery_mean_s, gg.recovery_mean_s)} vs (b)")
        if base and gg:
            change = _change(base.oom_per_1000_job_hours, gg.oom_per_1000_job_hours)
            parts.append(f"OOM kills/1000 job-h {change} vs (a)")
        if gg and mig:
            parts.append(f"migration: JCT {_change(gg.jct_mean_h, mig.jct_mean_h)}, makespan "
                         f"{_change(gg.makespan_h, mig.makespan_h)} vs (c)")
        if parts:
            lines.append(f"  {workload}: " + "; ".join(parts))
    return "\n".join(lines)


def _ratio(before: float, after: float) -> str:
    if math.isnan(before) or math.isnan(after) or after <= 0:
        return "n/a"
    factor = before / after
    return f"{factor:.2f}x faster" if factor >= 1 else f"{1 / factor:.2f}x slower"


def _change(before: float, after: float) -> str:
    if math.isnan(before) or math.isnan(after) or before <= 0:
        return "n/a"
    change = (after - before) / before * 100.0
    return f"{abs(change):.1f}% {'lower' if change < 0 else 'higher'}"


def write_summary_csv(summaries: Sequence[Summary], path: Path) -> None:
    rows = [s.as_row() for s in summaries]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def write_recoveries_csv(results: Sequence[SimResult], path: Path) -> None:
    """Every failure and migration with its stages and outcome, for your own analysis."""
    header = ["workload", "policy", "seed", "job", "cause", "node", "failed_at_s", "recovery_s", "outcome",
              *STAGES, "lost_work_s", "image_warm", "on_own_slot_node", "took_over_slot"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for result in results:
        for rec in result.recoveries:
            writer.writerow([result.workload, result.policy, result.seed, rec.job, rec.cause, rec.node,
                             f"{rec.failed_at:.3f}",
                             f"{rec.recovery_seconds:.3f}" if rec.outcome == "recovered" else "",
                             rec.outcome, *(f"{rec.stages[s]:.3f}" if s in rec.stages else "" for s in STAGES),
                             f"{rec.lost_work:.3f}", int(rec.image_warm), int(rec.on_slot_node),
                             int(rec.standby_used)])
    path.write_text(buffer.getvalue())


def plot(results: Sequence[SimResult], summaries: Sequence[Summary], path: Path) -> None:
    """Per workload: recovery-time CDFs, OOM kills per 1000 job-hours, mean recovery by stage."""
    workloads = list(dict.fromkeys(s.workload for s in summaries))
    fig, axes = plt.subplots(len(workloads), 3, figsize=(16, 4.6 * len(workloads)), squeeze=False)
    for row, workload in zip(axes, workloads):
        rows = [s for s in summaries if s.workload == workload]
        policies = [s.policy for s in rows]
        cdf, oom, stages = row
        for policy in policies:
            times = np.sort([r.recovery_seconds / 60.0 for res in results if res.workload == workload
                             and res.policy == policy for r in res.recoveries
                             if r.cause != "migration" and r.outcome == "recovered"])
            if len(times):
                cdf.step(times, np.arange(1, len(times) + 1) / len(times), where="post",
                         label=f"{POLICY_LABELS.get(policy, policy)} (n={len(times)})",
                         color=_COLORS.get(policy), linewidth=2)
        cdf.set_xscale("log")
        cdf.set_xlabel("recovery time (minutes, log scale)")
        cdf.set_ylabel("fraction of recovered failures")
        cdf.set_title(f"{workload}: recovery-time CDF")
        cdf.grid(True, which="both", alpha=0.3)
        cdf.legend(loc="lower right", fontsize=8)
        labels = [POLICY_LABELS.get(p, p) for p in policies]
        values = [s.oom_per_1000_job_hours for s in rows]
        bars = oom.bar(labels, values, color=[_COLORS.get(p) for p in policies])
        oom.bar_label(bars, labels=[_num(v, 1) for v in values], fontsize=8)
        oom.set_ylabel("OOM kills per 1000 job-hours")
        oom.set_title(f"{workload}: OOM kills")
        oom.tick_params(axis="x", labelsize=8)
        bottom = np.zeros(len(rows))
        for stage, color in zip(STAGES, _STAGE_COLORS):
            heights = np.array([np.nan_to_num(s.stage_mean_s.get(stage, 0.0)) / 60.0 for s in rows])
            stages.bar(labels, heights, bottom=bottom, label=stage.replace("_", " "), color=color)
            bottom += heights
        stages.set_ylabel("mean recovery time (minutes)")
        stages.set_title(f"{workload}: recovery time by stage")
        stages.legend(fontsize=8)
        stages.tick_params(axis="x", labelsize=8)
    fig.suptitle("GuardGrid evaluation (simulation running GuardGrid's real extender and predictor code)",
                 fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: same input, same bytes
    plt.close(fig)
