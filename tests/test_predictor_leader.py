"""Leader election over the Lease: one replica acts, the other takes over when the leader stops renewing."""

from __future__ import annotations


from conftest import wait_for
from guardgrid import keys
from guardgrid.config import load_settings
from guardgrid.kubeapi.base import KubeAPIError
from guardgrid.kubeapi.memory import InMemoryKubeAPI
from predictor.leader import LEASE_SECONDS, RENEW_DEADLINE_SECONDS, LeaderElector, default_identity
from predictor.service import PredictorService
from predictor.sources import StaticSource
from test_predictor_cycle import Clock, cluster, history


def test_only_one_replica_holds_the_lease_and_the_other_takes_over_after_it_expires():
    clock = Clock(0.0)
    api = InMemoryKubeAPI(clock=clock)
    first = LeaderElector(api, "guardgrid-system", "replica-a", clock=clock)
    second = LeaderElector(api, "guardgrid-system", "replica-b", clock=clock)
    assert first.try_acquire() and not second.try_acquire()
    clock.now += LEASE_SECONDS / 2
    assert first.try_acquire() and not second.try_acquire()  # renewed in time
    clock.now += LEASE_SECONDS + 1  # replica-a died: no renewal
    assert not first.is_leader()  # its own renew deadline passed long before anyone could take over
    assert second.try_acquire() and second.is_leader()
    assert api.leases["guardgrid-system/guardgrid-predictor"]["holder"] == "replica-b"


def test_a_leader_that_cannot_renew_stops_acting_before_the_lease_runs_out():
    clock = Clock(0.0)

    class Partitioned(InMemoryKubeAPI):
        broken = False

        def acquire_lease(self, namespace, name, identity, duration_seconds):
            if self.broken:
                raise KubeAPIError("connection refused", 0)
            return super().acquire_lease(namespace, name, identity, duration_seconds)

    api = Partitioned(clock=clock)
    elector = LeaderElector(api, "guardgrid-system", "replica-a", clock=clock)
    assert elector.try_acquire()
    api.broken = True
    clock.now += RENEW_DEADLINE_SECONDS - 1
    assert elector.try_acquire()  # this renewal failed, but the last good one is recent enough
    clock.now += 2
    assert not elector.try_acquire() and not elector.is_leader()
    assert RENEW_DEADLINE_SECONDS < LEASE_SECONDS  # so no two replicas ever act at once


def test_two_replicas_plan_the_same_slot_but_only_the_leader_creates_it():
    clock = Clock()
    api = cluster(clock)
    settings = load_settings({})
    replicas = []
    for name in ("replica-a", "replica-b"):
        elector = LeaderElector(api, settings.namespace, name, clock=clock)
        replica = PredictorService(settings, api, StaticSource(history(notready={"n0": 4, "n1": 4})), clock=clock,
                                   elector=elector)
        replica.cache.sync_now()
        elector.try_acquire()
        replicas.append(replica)
    reports = [replica.run_once().report for replica in replicas]
    assert [r.leader for r in reports] == [True, False]
    slots = [p for p in api.list("pods").items if p.labels.get(keys.STANDBY_FOR)]
    assert len(slots) == 1
    assert [s.state for s in reports[1].snapshot.standby] == ["planned"]  # it publishes, it does not act


def test_the_elector_thread_renews_until_stopped_and_then_lets_go():
    api = InMemoryKubeAPI()
    elector = LeaderElector(api, "guardgrid-system", "replica-a")
    elector.start()
    try:
        assert wait_for(elector.is_leader)  # the first attempt happens at once
        assert api.leases["guardgrid-system/guardgrid-predictor"]["holder"] == "replica-a"
    finally:
        elector.stop()
    assert not elector.is_leader()


def test_the_identity_is_the_pod_name_or_unique():
    assert default_identity("guardgrid-scheduler-7d9f-x2") == "guardgrid-scheduler-7d9f-x2"
    assert default_identity("") != default_identity("")


