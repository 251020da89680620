"""`make demo`, services part: the real predictor, extender and webhook processes answer the captured requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.demo import run_services


def test_the_demo_drives_admission_filter_prioritize_and_preempt_through_the_real_services(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = run_services(tmp_path)
    printed = capsys.readouterr().out
    # every process (gunicorn masters and workers, the predictor) is gone
    assert all(s.process is not None and s.process.poll() is not None for s in demo.services)
    assert "services stopped" in printed
    # predictor: a snapshot from the synthetic history, with the captured standby slot and checkpoint advice
    assert "history source: synthetic" in printed
    assert "standby slot for resnet50-train on worker-3" in printed
    assert "checkpoint advice for bert-finetune" in printed
    # webhook: both pods admitted and mutated
    assert printed.count("allowed=True") == 2
    assert "priorityClassName=guardgrid-training, priority=1000" in printed
    assert "init container guardgrid-stage-dataset: registry.example.com/datasets/glue-sst2:2024.1" in printed
    # extender: bert filtered and scored over the six nodes; resnet50's own standby slot kept for preemption
    assert "filter over 6 nodes: 6 passed" in printed
    assert "prioritize: worker-" in printed
    assert "preempt candidate worker-3, victims ['469f5c63-ce80-465e-bfab-a466f8eda9ae']: kept" in printed
    assert "filter on the nominated node worker-3: passed" in printed
