"""Workload sources: the built-in generator, user CSV traces (and their errors), the real Alibaba openb trace."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from evaluation.sim.params import GiB, MiB
from evaluation.workloads import (OPENB_CREDIT, OPENB_DIR, BuiltinParams, OpenbParams, WorkloadError,
                                  builtin_workload, csv_workload, load_jobs_csv, load_nodes_csv, openb_workload,
                                  parse_memory_profile, parse_progress_curve)

EXAMPLES = Path(__file__).resolve().parent.parent / "evaluation" / "examples"
HEADER = "job_id,submit_time,duration,memory_profile,progress_curve\n"


def write(tmp_path: Path, text: str, name: str = "jobs.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_builtin_generator_is_deterministic_per_seed_and_respects_its_parameters() -> None:
    params = BuiltinParams(nodes=6, jobs=40)
    first, again, other = builtin_workload(params, 7), builtin_workload(params, 7), builtin_workload(params, 8)
    assert first == again and first != other
    assert len(first.nodes) == 6 and len(first.jobs) == 40
    node_memory = params.node_memory_gib * GiB
    for job in first.jobs:
        assert job.gpu_milli // 1000 in params.gpu_choices
        assert job.peak_bytes <= params.max_peak_fraction * node_memory
        assert params.duration_min_hours * 3600 <= job.duration <= params.duration_max_hours * 3600
        assert job.dataset_image == (job.dataset_bytes <= params.dataset_image_max_gib * GiB)
    assert [j.submit_time for j in first.jobs] == sorted(j.submit_time for j in first.jobs)


def test_the_example_user_trace_loads_with_its_documented_columns() -> None:
    workload = csv_workload(EXAMPLES / "jobs.csv", EXAMPLES / "nodes.csv")
    assert [n.name for n in workload.nodes] == ["gpu-a-1", "gpu-a-2", "gpu-a-3", "gpu-b-1", "gpu-b-2"]
    assert workload.nodes[3].memory_bytes == 256 * GiB and workload.nodes[3].gpu_milli == 4000
    gpt2 = next(j for j in workload.jobs if j.job_id == "gpt2-pretrain")
    assert gpt2.submit_time == 1200 and gpt2.duration == 28800
    assert gpt2.peak_bytes == 180 * GiB and gpt2.request_bytes == 160 * GiB
    assert gpt2.ramp_epochs == 4 and gpt2.noise == 0.03 and gpt2.epochs == 40 and gpt2.gpu_milli == 8000
    assert gpt2.progress.kind == "points" and gpt2.progress.value(0.2) == pytest.approx(0.55)
    assert not gpt2.migratable and not gpt2.dataset_image
    bert = next(j for j in workload.jobs if j.job_id == "bert-ft-1")
    assert bert.dataset_image and bert.progress.kind == "exp" and bert.progress.value(1.0) == pytest.approx(1.0)


def test_optional_columns_take_their_documented_defaults(tmp_path: Path) -> None:
    (job,) = load_jobs_csv(write(tmp_path, HEADER + "a,0,600,32:2:0.05,linear\n"))
    assert job.request_bytes == job.peak_bytes == 32 * GiB
    assert job.gpu_milli == 0 and job.epochs == 10 and job.migratable and not job.dataset_image
    assert job.image_bytes == 8 * GiB and job.dataset_bytes == 20 * GiB and job.checkpoint_bytes == 4 * GiB


@pytest.mark.parametrize(("body", "message"), [
    ("job_id,submit_time,duration,memory_profile\na,0,60,1:1:0\n", r"jobs.csv:1: missing column\(s\) progress_curve"),
    (HEADER + "a,0,600,32:2,linear\n", r"jobs.csv:2: column 'memory_profile'.*<peak_gib>:<ramp_epochs>:<noise>"),
    (HEADER + "a,0,600,-4:2:0.1,linear\n", "column 'memory_profile'.*peak_gib must be a positive number"),
    (HEADER + "a,soon,600,32:2:0.05,linear\n", "jobs.csv:2: column 'submit_time': 'soon' is not a number"),
    (HEADER + "a,0,0,32:2:0.05,linear\n", "column 'duration': '0' must be a finite number > 0"),
    (HEADER + "a,0,600,32:2:0.05,sigmoid\n", "column 'progress_curve'.*expected exp:<tau>, linear or points"),
    (HEADER + "a,0,600,32:2:0.05,points:0.5=1;0.2=2\n", "strictly increasing"),
    (HEADER + "a,0,600,32:2:0.05,linear\na,5,600,32:2:0.05,linear\n", "jobs.csv:3: job_id 'a' appears twice"),
    (HEADER + "a b,0,600,32:2:0.05,linear\n", "may contain only letters"),
    (HEADER + ",0,600,32:2:0.05,linear\n", "column 'job_id' is empty"),
    (HEADER, "no jobs"),
    ("", "empty file"),
])
def test_a_bad_user_trace_is_rejected_with_file_line_and_column(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        load_jobs_csv(write(tmp_path, body))


def test_a_missing_trace_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="cannot open"):
        load_jobs_csv(tmp_path / "nope.csv")


def test_a_job_bigger_than_every_node_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "huge,0,600,900:2:0.05,linear\n")
    with pytest.raises(WorkloadError, match="job huge asks for more than any node has"):
        csv_workload(path)


def test_a_bad_nodes_file_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="need columns name and memory_gib"):
        load_nodes_csv(write(tmp_path, "host,ram\nx,1\n", "nodes.csv"))
    with pytest.raises(WorkloadError, match="nodes.csv:2: column 'memory_gib'"):
        load_nodes_csv(write(tmp_path, "name,memory_gib\nx,lots\n", "nodes.csv"))


def test_profile_and_curve_parsers_accept_the_documented_forms() -> None:
    assert parse_memory_profile("48:3:0.05") == (48 * GiB, 3.0, 0.05)
    assert parse_progress_curve("exp:0.3").value(0.0) == 0.0
    assert parse_progress_curve("linear").value(0.25) == 0.25
    points = parse_progress_curve("points:0=0.1;0.5=0.7;1=0.75")
    assert points.value(0.25) == pytest.approx(0.4) and points.describe() == "points:0=0.1;0.5=0.7;1=0.75"


def test_the_openb_loader_uses_the_real_trace_for_nodes_and_pod_requests() -> None:
    with (OPENB_DIR / "nodes.csv").open() as handle:
        trace_nodes = {row["sn"]: row for row in csv.DictReader(handle)}
    with (OPENB_DIR / "pods.csv").open() as handle:
        trace_requests = {int(row["memory_mib"]) for row in csv.DictReader(handle)}
    workload = openb_workload(OpenbParams(node_fraction=0.05, hours=2.0), seed=2)
    assert workload.credit == OPENB_CREDIT and "Beware of Fragmentation" in workload.credit
    assert 60 <= len(workload.nodes) <= 90  # a stratified 5% of 1523
    for node in workload.nodes:
        row = trace_nodes[node.name]
        assert node.memory_bytes == int(row["memory_mib"]) * MiB and node.gpu_milli == int(row["gpu"]) * 1000
    assert workload.jobs
    for job in workload.jobs:
        assert round(job.request_bytes / MiB) in trace_requests
        assert 60 <= job.duration <= 24 * 3600
    assert workload == openb_workload(OpenbParams(node_fraction=0.05, hours=2.0), seed=2)


def test_the_openb_multi_gpu_resample_has_no_lifetimes_and_is_refused_clearly() -> None:
    with pytest.raises(WorkloadError, match="pods-multigpu50.csv"):
        openb_workload(OpenbParams(node_fraction=0.05, hours=1.0, pods_file="pods-multigpu50.csv"), seed=1)
