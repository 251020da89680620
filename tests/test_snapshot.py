import math

import orjson
import pytest

from guardgrid.snapshot import JobAdvice, NodeForecast, Snapshot, SnapshotError, StandbySlot, WorkloadPeak


def _snapshot() -> Snapshot:
    return Snapshot(generated_at=1_800_000_000.0, horizon_seconds=600, mode="reactive", cluster_memory_load=0.9,
                    nodes={"worker-1": NodeForecast(1.0e9, 1.0e8, 0.02, 1.3e11, 0.01)},
                    workloads={"bert": WorkloadPeak(9.0e9)},
                    standby=(StandbySlot("resnet", "worker-3", 1.0e11, "ml/standby-resnet-0", "ready"),),
                    jobs={"resnet": JobAdvice(1800.0, 36000.0, 60.0)})


def test_a_snapshot_survives_its_wire_form_unchanged():
    snapshot = _snapshot()
    assert Snapshot.from_json(snapshot.to_json()) == snapshot
    wire = orjson.loads(snapshot.to_json())
    assert wire["apiVersion"] == "guardgrid.io/v1" and wire["kind"] == "Snapshot"


def test_unknown_keys_are_ignored_for_forward_compatibility():
    wire = orjson.loads(_snapshot().to_json())
    wire["future_field"] = {"x": 1}
    wire["nodes"]["worker-1"]["future"] = 3
    assert Snapshot.from_dict(wire) == _snapshot()


@pytest.mark.parametrize(("mutate", "where"), [
    (lambda w: w.pop("generated_at"), "generated_at: missing"),
    (lambda w: w.update(kind="Other"), "expected apiVersion"),
    (lambda w: w.update(mode="panic"), "snapshot.mode"),
    (lambda w: w["nodes"]["worker-1"].update(forecast_mean_bytes="lots"), "nodes.worker-1.forecast_mean_bytes"),
    (lambda w: w["nodes"]["worker-1"].update(forecast_std_bytes=True), "forecast_std_bytes"),
    (lambda w: w["standby"][0].pop("node"), "standby[0].node"),
    (lambda w: w.update(jobs=[1]), "snapshot.jobs"),
])
def test_a_broken_snapshot_is_refused_naming_the_key(mutate, where):
    wire = orjson.loads(_snapshot().to_json())
    mutate(wire)
    with pytest.raises(SnapshotError, match=where.replace("[", r"\[").replace("]", r"\]")):
        Snapshot.from_dict(wire)


def test_non_json_is_a_snapshot_error_not_a_crash():
    with pytest.raises(SnapshotError, match="not JSON"):
        Snapshot.from_json(b"<html>")


def test_age_never_goes_negative_and_missing_mtbf_means_infinite():
    assert _snapshot().age(0) == 0
    wire = orjson.loads(_snapshot().to_json())
    del wire["jobs"]["resnet"]["mtbf_seconds"]
    assert math.isinf(Snapshot.from_dict(wire).jobs["resnet"].mtbf_seconds)


def test_an_infinite_mtbf_travels_as_null_and_comes_back_infinite():
    snapshot = Snapshot(generated_at=1.0, jobs={"never-fails": JobAdvice(14400.0, math.inf, 60.0)})
    wire = orjson.loads(snapshot.to_json())
    assert wire["jobs"]["never-fails"]["mtbf_seconds"] is None
    assert Snapshot.from_json(snapshot.to_json()) == snapshot
