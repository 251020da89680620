"""`python -m evaluation.run`: same seed -> same bytes, outputs written, bad arguments refused clearly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from evaluation.policies import POLICY_NAMES
from evaluation.report import format_table, paper_comparison
from evaluation.run import WorkloadChoice, evaluate, main, write_outputs
from evaluation.sim.params import markdown_table
from evaluation.sim.results import STAGES

# A small trace (three hours on three nodes) keeps each evaluation to about a second; failures are made
# frequent so that every run has some.
TRACE = """job_id,submit_time,duration,memory_profile,progress_curve,memory_request_gib,gpus,dataset_image
a,0,5400,150:2:0.05,exp:0.2,120,4,true
b,300,3600,100:1:0.04,linear,110,2,false
c,600,7200,220:3:0.06,exp:0.1,180,4,true
d,900,3600,60:2:0.05,exp:0.3,48,1,true
e,1200,5400,200:2:0.05,linear,200,8,false
f,1800,3600,90:2:0.05,exp:0.2,70,2,true
"""
NODES = "name,memory_gib,gpus\nn1,384,8\nn2,384,8\nn3,256,8\n"
OFTEN = {"node_failure_rate_per_hour": 0.3}


@pytest.fixture
def trace(tmp_path: Path) -> WorkloadChoice:
    (tmp_path / "jobs.csv").write_text(TRACE)
    (tmp_path / "nodes.csv").write_text(NODES)
    return WorkloadChoice("csv", str(tmp_path / "jobs.csv"), str(tmp_path / "nodes.csv"))


def outputs(tmp_path: Path, trace: WorkloadChoice, name: str, seed: int, workers: int = 1,
            policies: tuple[str, ...] = POLICY_NAMES) -> dict[str, bytes]:
    results, summaries = evaluate([trace], policies, [seed], OFTEN, workers=workers, progress=False)
    paths = write_outputs(tmp_path / name, results, summaries)
    return {key: path.read_bytes() for key, path in paths.items()}


def test_the_same_seed_gives_byte_identical_files_and_another_seed_different_ones(tmp_path: Path,
                                                                                   trace: WorkloadChoice) -> None:
    first = outputs(tmp_path, trace, "first", seed=4)
    again = outputs(tmp_path, trace, "again", seed=4)
    other = outputs(tmp_path, trace, "other", seed=5)
    assert first["csv"] == again["csv"] and first["recoveries"] == again["recoveries"]
    assert first["table"] == again["table"] and first["plot"] == again["plot"]
    assert first["recoveries"] != other["recoveries"]
    assert first["plot"].startswith(b"\x89PNG")


def test_worker_processes_give_the_same_results_as_one_process(tmp_path: Path, trace: WorkloadChoice) -> None:
    policies = ("checkpoint", "guardgrid")
    one = outputs(tmp_path, trace, "one", seed=4, workers=1, policies=policies)
    two = outputs(tmp_path, trace, "two", seed=4, workers=2, policies=policies)
    assert one["csv"] == two["csv"] and one["recoveries"] == two["recoveries"]


def test_the_results_csv_has_one_row_per_policy_with_every_reported_figure(tmp_path: Path,
                                                                          trace: WorkloadChoice) -> None:
    files = outputs(tmp_path, trace, "run", seed=4)
    rows = list(csv.DictReader(files["csv"].decode().splitlines()))
    assert [r["policy"] for r in rows] == list(POLICY_NAMES)
    for column in ("recovery_mean_s", "recovery_p95_s", "oom_per_1000_job_hours", "jct_mean_h", "makespan_h",
                   "standby_mean_gib", "standby_pct_of_cluster", *(f"{s}_mean_s" for s in STAGES)):
        assert column in rows[0]
    for row in rows:
        assert int(row["recovered"]) + int(row["failed_again"]) + int(row["unrecovered"]) == int(row["failures"])
        assert float(row["jct_mean_h"]) > 0 and float(row["makespan_h"]) >= float(row["jct_mean_h"])
    assert rows[0]["standby_mean_gib"] == "0.000"  # no standby slots without GuardGrid
    recoveries = list(csv.DictReader(files["recoveries"].decode().splitlines()))
    assert sum(int(r["failures"]) for r in rows) == sum(1 for r in recoveries if r["cause"] != "migration")


def test_the_table_names_every_policy_and_compares_with_the_papers(trace: WorkloadChoice) -> None:
    _, summaries = evaluate([trace], POLICY_NAMES, [4], OFTEN, workers=1, progress=False)
    table = format_table(summaries)
    for label in ("(a) default", "(b) checkpoint", "(c) GuardGrid", "(d) GuardGrid+migr."):
        assert label in table
    comparison = paper_comparison(summaries)
    assert "16.7x" in comparison and "93%" in comparison and "41.5%" in comparison
    assert "csv:jobs.csv: recovery" in comparison


def test_the_command_line_runs_a_user_trace_and_says_where_the_outputs_are(tmp_path: Path, trace: WorkloadChoice,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--workload", f"csv:{trace.jobs_csv}:{trace.nodes_csv}", "--policies", "default,guardgrid",
                 "--out", str(tmp_path / "out"), "--workers", "1", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "(c) GuardGrid" in printed and "(b) checkpoint" not in printed
    for name in ("results.csv", "recoveries.csv", "evaluation.png", "table.txt"):
        assert (tmp_path / "out" / name).is_file() and str(tmp_path / "out" / name) in printed


@pytest.mark.parametrize(("argv", "message"), [
    (["--policies", "fifo"], "unknown policy fifo"),
    (["--workload", "csv:/nonexistent/jobs.csv"], "no such file"),
    (["--workload", "alibaba"], "expected builtin, openb or csv:PATH"),
    (["--set", "tick_seconds=fast"], "'fast' is not a valid value"),
    (["--set", "warp_speed=9"], "expected PARAM=VALUE with PARAM one of"),
    (["--seeds", "0"], "--seeds must be at least 1"),
])
def test_bad_arguments_are_refused_with_a_reason(argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_malformed_user_trace_stops_the_run_with_the_loader_message(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("job_id,submit_time,duration,memory_profile,progress_curve\nx,0,60,lots:1:0,linear\n")
    assert main(["--workload", f"csv:{bad}", "--out", str(tmp_path / "out"), "--workers", "1"]) == 2
    assert "bad.csv:2: column 'memory_profile'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_every_model_parameter_is_documented_with_a_source() -> None:
    table = markdown_table()
    rows = [line for line in table.splitlines()[2:]]
    assert rows
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 6 and all(cells), row
        assert cells[4] in ("Kubernetes default", "public measurement", "captured (fixtures)", "assumption",
                            "simulation choice")


def test_the_documented_parameter_table_matches_the_code() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "evaluation.md").read_text()
    assert markdown_table() in docs, "docs/evaluation.md: paste `python -m evaluation.sim.params` output"
