"""The discrete-event simulation: a heap of timed events over the cluster, the jobs and a policy.

Events: a job is submitted; a replacement pod appears after a failure; a pod finishes loading and starts
training; a job finishes; a failed node's replacement joins; the scheduler runs a pass; the predictor runs a
cycle (GuardGrid policies); and a tick every `tick_seconds`, at which memory moves (vectorised over all
jobs), nodes that run out of memory kill pods, nodes fail with a hazard that rises with their load, training
speed follows contention, and one sample of each node's memory use is recorded, as Prometheus would.

Determinism: every random draw comes from a generator seeded by (seed, purpose[, job]); node failure draws
are taken for every node at every tick and each job's memory noise from its own stream, so two policies
run on the same seed see the same luck wherever their decisions do not differ (common random numbers),
and the same seed always gives the same result. Ties between events at one instant are broken by
insertion order.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from evaluation.sim.cluster import EPOCH, BoundPod, Cluster, InvariantError, pod_record
from evaluation.sim.model import ar1_step, contention_speed, failure_probability, memory_level, transfer_seconds
from evaluation.sim.params import SimParams
from evaluation.sim.results import JobOutcome, RecoveryRecord, SimResult
from evaluation.workloads import JobSpec, Workload
from guardgrid import keys
from guardgrid.records import PodRecord

__all__ = ["Simulation", "Phase", "JobRun", "Placement", "PodMeta", "SimPolicy", "EPOCH"]

_NOISE_BLOCK = 64


class Phase(enum.IntEnum):
    WAITING = 0  # not submitted yet
    PENDING = 1  # a pod exists, not bound
    LOADING = 2  # bound, running its recovery/start-up stages
    RUNNING = 3  # training
    DOWN = 4  # failed; its replacement pod does not exist yet
    DONE = 5


class Event(enum.IntEnum):
    SUBMIT = 0
    TICK = 1
    FINISH = 2
    REPLACEMENT = 3
    LOADED = 4
    NODE_UP = 5
    CYCLE = 6
    SCHEDULE = 7
    INJECT = 8


@dataclass(frozen=True)
class Placement:
    """Where the scheduler binds a pod, and the standby slots it preempts to make room."""

    node: int
    victims: tuple[str, ...] = ()


@dataclass(frozen=True)
class PodMeta:
    """How the policy's admission shapes a job's pod (what GuardGrid's webhook would have set)."""

    priority: int = 0
    priority_class: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    dataset_from_image: bool = False


class SimPolicy(Protocol):
    """What the engine needs from a policy (implementations: evaluation/policies.py)."""

    name: str
    cycle_seconds: float | None

    def attach(self, sim: Simulation) -> None: ...

    def pod_meta(self, job: JobRun) -> PodMeta: ...

    def checkpoint_interval(self, job: JobRun) -> float | None: ...

    def place(self, job: JobRun) -> Placement | None: ...

    def cycle(self) -> None: ...


@dataclass(eq=False)
class JobRun:
    """A job's runtime state."""

    spec: JobSpec
    index: int
    phase: Phase = Phase.WAITING
    node: int = -1
    pod_uid: str = ""
    incarnation: int = 0
    work: float = 0.0  # training done at `seg_start`
    seg_start: float = 0.0
    rate: float = 0.0  # work per wall second (speed x checkpoint efficiency)
    interval: float | None = None  # checkpoint interval (work seconds) of the current pod
    cost: float = 0.0  # checkpoint cost C (seconds)
    pending_since: float = 0.0
    recovery: RecoveryRecord | None = None
    restarts: int = 0
    finish: float = math.nan
    priority: int = 0
    meta: PodMeta = field(default_factory=PodMeta)
    record: PodRecord | None = None  # the current pod (pending or bound)
    peaks: list[tuple[str, float, float, bool]] = field(default_factory=list)  # (pod, ended, max usage, oom-killed)
    progress_t: list[float] = field(default_factory=list)
    progress_v: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.job_id

    def work_at(self, now: float) -> float:
        if self.phase is Phase.RUNNING:
            return min(self.spec.duration, self.work + (now - self.seg_start) * self.rate)
        return self.work


class Simulation:
    """One run of one policy over one workload. `run()` returns a `SimResult`."""

    def __init__(self, workload: Workload, policy: SimPolicy, params: SimParams | None = None, seed: int = 1,
                 history_samples: int = 360, on_progress: Callable[[int], None] | None = None) -> None:
        self.workload = workload
        self.policy = policy
        self.params = params or SimParams()
        self.seed = seed
        self.cluster = Cluster(workload.nodes)
        self.now = 0.0
        self.jobs = [JobRun(spec, i) for i, spec in enumerate(workload.jobs)]
        self.by_name = {job.name: job for job in self.jobs}
        self._heap: list[tuple[float, int, int, int, int]] = []
        self._seq = 0
        self._schedule_queued = False
        self._changed = True
        self._on_progress = on_progress
        self.done = 0
        self.running: dict[int, JobRun] = {}  # training jobs by index (insertion-ordered: deterministic)
        self.pending: dict[int, JobRun] = {}

        n_jobs, n_nodes = len(self.jobs), len(self.cluster.nodes)
        specs = workload.jobs
        self.peak = np.array([s.peak_bytes for s in specs], dtype=np.float64)
        self.noise = np.array([s.noise for s in specs], dtype=np.float64)
        self.ramp = np.array([s.ramp_seconds for s in specs], dtype=np.float64)
        self.request = np.array([s.request_bytes for s in specs], dtype=np.float64)
        self.z = np.zeros(n_jobs)
        self.usage = np.zeros(n_jobs)
        self.max_usage = np.zeros(n_jobs)
        self.job_node = np.full(n_jobs, -1, dtype=np.int64)
        self.bound = np.zeros(n_jobs, dtype=np.bool_)
        self.training = np.zeros(n_jobs, dtype=np.bool_)
        self.run_start = np.zeros(n_jobs)
        self.node_usage = np.zeros(n_nodes)
        self._noise_streams = [np.random.default_rng([seed, 2, i]) for i in range(n_jobs)]
        self._noise_blocks = np.zeros((n_jobs, _NOISE_BLOCK))
        self._noise_pos = np.full(n_jobs, _NOISE_BLOCK, dtype=np.int64)
        self._fail_rng = np.random.default_rng([seed, 1])
        self.rng = np.random.default_rng([seed, 3])  # scheduler tie-breaks and policy choices

        # Node history as Prometheus would hold it (one sample per tick; a ring buffer).
        self.history_samples = history_samples
        self.mem_history = np.full((n_nodes, history_samples), np.nan)
        self.ready_history = np.full((n_nodes, history_samples), np.nan)
        self.oom_history = np.full((n_nodes, history_samples), np.nan)
        self.oom_counter = np.zeros(n_nodes)
        self._history_pos = 0
        self._history_len = 0
        self.node_up_at = np.zeros(n_nodes)

        self.recoveries: list[RecoveryRecord] = []
        self.oom_kills = 0
        self.node_failures = 0
        self.job_seconds = 0.0
        self.standby_byte_seconds = 0.0
        self.lost_work = 0.0
        self.checkpoint_seconds = 0.0
        self.migrations = 0
        self.standby_takeovers = 0
        self.calls: dict[str, int] = {}
        self.pending_slots: dict[str, str] = {}  # standby pod uid -> the node it is meant for
        self.image_sizes: dict[str, float] = {}
        for spec in workload.jobs:
            self.image_sizes[spec.image] = spec.image_bytes
            if spec.dataset_image:
                self.image_sizes[dataset_image_of(spec)] = spec.dataset_bytes
        self.policy.attach(self)

    # --- event queue ---------------------------------------------------------------------------------
    def _push(self, at: float, kind: Event, a: int = -1, b: int = -1) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, int(kind), a, b))

    def request_schedule(self) -> None:
        """Run a scheduling pass at the current instant, after the event being handled."""
        if not self._schedule_queued:
            self._schedule_queued = True
            self._push(self.now, Event.SCHEDULE)

    def mark_changed(self) -> None:
        """Something a pending pod could profit from happened (resources freed, new forecast)."""
        self._changed = True
        self.request_schedule()

    def count_call(self, name: str, times: int = 1) -> None:
        """Policies report each call into GuardGrid's core here (the tests assert on it)."""
        self.calls[name] = self.calls.get(name, 0) + times

    # --- the loop ------------------------------------------------------------------------------------
    def run(self) -> SimResult:
        for job in self.jobs:
            self._push(job.spec.submit_time, Event.SUBMIT, job.index)
        self._push(0.0, Event.TICK)
        if self.policy.cycle_seconds:
            # The first cycle once the monitoring history holds two samples (a forecast needs them).
            self._push(2 * self.params.tick_seconds, Event.CYCLE)
        handlers: dict[int, Callable[[int, int], None]] = {
            Event.SUBMIT: self._on_submit, Event.TICK: self._on_tick, Event.FINISH: self._on_finish,
            Event.REPLACEMENT: self._on_replacement, Event.LOADED: self._on_loaded,
            Event.NODE_UP: self._on_node_up, Event.CYCLE: self._on_cycle, Event.SCHEDULE: self._on_schedule,
            Event.INJECT: self._on_inject,
        }
        limit = self.params.max_sim_seconds
        while self._heap and self.done < len(self.jobs):
            at, _, kind, a, b = heapq.heappop(self._heap)
            if at > limit:
                break
            self.now = at
            handlers[kind](a, b)
            if self.params.check_invariants:
                self.check_invariants()
        return self._result()

    def _result(self) -> SimResult:
        end = self.now
        outcomes = [JobOutcome(j.name, j.spec.submit_time, j.finish, j.spec.duration, j.restarts) for j in self.jobs]
        return SimResult(workload=self.workload.name, policy=self.policy.name, seed=self.seed, end_time=end,
                         cluster_memory=float(self.cluster.capacity.sum()), recoveries=list(self.recoveries),
                         jobs=outcomes, oom_kills=self.oom_kills, node_failures=self.node_failures,
                         job_seconds=self.job_seconds, standby_byte_seconds=self.standby_byte_seconds,
                         lost_work_seconds=self.lost_work, checkpoint_seconds=self.checkpoint_seconds,
                         migrations=self.migrations, standby_takeovers=self.standby_takeovers,
                         calls=dict(self.calls))

    # --- handlers ------------------------------------------------------------------------------------
    def _on_submit(self, index: int, _: int) -> None:
        self._admit(self.jobs[index])

    def _on_replacement(self, index: int, incarnation: int) -> None:
        job = self.jobs[index]
        if job.phase is not Phase.DOWN or job.incarnation != incarnation:
            return
        if job.recovery is not None:
            job.recovery.pending_at = self.now
        self._admit(job)

    def _admit(self, job: JobRun) -> None:
        """The job's (next) pod is created: admission decides its shape and checkpoint interval."""
        spec = job.spec
        job.incarnation += 1
        job.meta = self.policy.pod_meta(job)
        job.priority = job.meta.priority
        job.interval = self.policy.checkpoint_interval(job)
        job.cost = transfer_seconds(spec.checkpoint_bytes, self.params.checkpoint_write_mib_per_s)
        annotations = dict(job.meta.annotations)
        if job.interval:
            annotations.setdefault(keys.CHECKPOINT_COST_SECONDS, f"{job.cost:.1f}")
        uid = f"{spec.job_id}-r{job.incarnation}"
        job.record = pod_record(uid, "", spec.request_bytes, job.meta.priority, job.meta.priority_class,
                                job.meta.labels, annotations, [spec.image], self.now)
        self.cluster.admit(job.record, self.now)
        job.pod_uid = ""
        job.phase = Phase.PENDING
        job.pending_since = self.now
        self.pending[job.index] = job
        self.mark_changed()

    def _on_schedule(self, _: int, __: int) -> None:
        self._schedule_queued = False
        if not self._changed:
            return
        self._changed = False
        order = sorted(self.pending.values(), key=lambda j: (-j.priority, j.pending_since, j.index))
        for job in order:
            placement = self.policy.place(job)
            if placement is not None:
                self._start_pod(job, placement)
        for uid in list(self.pending_slots):
            self._try_bind_slot(uid)

    def _on_loaded(self, index: int, incarnation: int) -> None:
        job = self.jobs[index]
        if job.phase is not Phase.LOADING or job.incarnation != incarnation:
            return
        job.phase = Phase.RUNNING
        self.training[index] = True
        self.run_start[index] = self.now
        job.seg_start = self.now
        self.running[index] = job
        if job.recovery is not None:
            job.recovery.resumed_at = self.now
            job.recovery.outcome = "recovered"
            job.recovery = None
        self._set_rate(job)
        self._maybe_finish(job, self._next_tick() - self.now)

    def _on_finish(self, index: int, incarnation: int) -> None:
        job = self.jobs[index]
        if job.phase is not Phase.RUNNING or job.incarnation != incarnation:
            return
        self._accrue(job)
        if job.work < job.spec.duration - 1e-6:
            return  # slowed down since the event was scheduled; the next tick reschedules it
        job.work = job.spec.duration
        self._release(job)
        job.phase = Phase.DONE
        job.finish = self.now
        self.done += 1
        if self._on_progress is not None:
            self._on_progress(1)
        self.mark_changed()

    def inject_node_failure(self, at: float, job: str) -> None:
        """Fail the node `job` runs on at time `at` (scenario tests, what-if runs); nothing if it runs nowhere."""
        self._push(at, Event.INJECT, self.by_name[job].index)

    def _on_inject(self, index: int, _: int) -> None:
        node = self.jobs[index].node
        if node >= 0 and self.cluster.up[node]:
            self._fail_node(node)

    def _on_node_up(self, node: int, _: int) -> None:
        self.cluster.set_up(node, True)
        self.mark_changed()

    def _on_cycle(self, _: int, __: int) -> None:
        self.policy.cycle()
        self.mark_changed()
        assert self.policy.cycle_seconds
        self._push(self.now + self.policy.cycle_seconds, Event.CYCLE)

    def _next_tick(self) -> float:
        dt = self.params.tick_seconds
        return (math.floor(self.now / dt) + 1) * dt

    def _on_tick(self, _: int, __: int) -> None:
        p = self.params
        dt = p.tick_seconds
        now = self.now
        for job in self.running.values():
            self._accrue(job)

        # Memory: AR(1) fluctuation around a level that ramps through the first epochs of each process.
        bound = np.flatnonzero(self.bound)
        if len(bound):
            self.z[bound] = ar1_step(self.z[bound], self._draw_noise(bound), p.memory_noise_phi)
            level = memory_level(self.peak[bound], self.ramp[bound], now - self.run_start[bound],
                                 self.training[bound], p.memory_base_fraction)
            self.usage[bound] = np.maximum(0.0, level * (1.0 + self.noise[bound] * self.z[bound]))
            self.max_usage[bound] = np.maximum(self.max_usage[bound], self.usage[bound])
        self._recompute_node_usage()

        # OOM: a node whose pods use more than it has kills pods until they fit.
        cluster = self.cluster
        for node in np.flatnonzero(self.node_usage > cluster.capacity):
            self._relieve(int(node))

        # Node failures, hazard rising with load; one draw per node per tick whatever the policy.
        draws = self._fail_rng.random(len(cluster.nodes))
        load = self.node_usage / cluster.capacity
        failing = np.flatnonzero(cluster.up & (draws < failure_probability(load, dt, p)))
        for node in failing:
            self._fail_node(int(node))

        self._record_history()
        self._record_progress()

        # Training speed for the next tick, and finishes within it.
        speed = contention_speed(self.node_usage / cluster.capacity, p)
        for job in self.running.values():
            self._set_rate(job, float(speed[job.node]))
            self._maybe_finish(job, dt)

        self.job_seconds += float(np.count_nonzero(self.bound)) * dt
        self.standby_byte_seconds += float(cluster.standby_memory.sum()) * dt
        if self._changed:
            self.request_schedule()
        self._push(now + dt, Event.TICK)

    # --- memory and work ------------------------------------------------------------------------------
    def _draw_noise(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        exhausted = rows[self._noise_pos[rows] >= _NOISE_BLOCK]
        for row in exhausted:
            self._noise_blocks[row] = self._noise_streams[row].standard_normal(_NOISE_BLOCK)
            self._noise_pos[row] = 0
        values = self._noise_blocks[rows, self._noise_pos[rows]]
        self._noise_pos[rows] += 1
        return values

    def _recompute_node_usage(self) -> None:
        bound = np.flatnonzero(self.bound)
        usage = np.bincount(self.job_node[bound], weights=self.usage[bound], minlength=len(self.cluster.nodes))
        self.node_usage = usage + self.cluster.standby_count * self.params.standby_usage_bytes

    def _accrue(self, job: JobRun) -> None:
        """Bring a training job's work up to now; account the time its checkpoints took."""
        elapsed = self.now - job.seg_start
        if elapsed > 0 and job.phase is Phase.RUNNING:
            job.work = min(job.spec.duration, job.work + elapsed * job.rate)
            if job.interval:
                self.checkpoint_seconds += elapsed * job.cost / (job.interval + job.cost)
        job.seg_start = self.now

    def _set_rate(self, job: JobRun, speed: float | None = None) -> None:
        if speed is None:
            load = self.node_usage[job.node] / self.cluster.capacity[job.node]
            speed = float(contention_speed(np.array([load]), self.params)[0])
        efficiency = job.interval / (job.interval + job.cost) if job.interval else 1.0
        job.rate = speed * efficiency

    def _maybe_finish(self, job: JobRun, within: float) -> None:
        remaining = job.spec.duration - job.work
        if job.rate > 0 and remaining <= job.rate * within:
            self._push(self.now + remaining / job.rate, Event.FINISH, job.index, job.incarnation)

    # --- pods ----------------------------------------------------------------------------------------
    def _start_pod(self, job: JobRun, placement: Placement) -> None:
        p, cluster, now = self.params, self.cluster, self.now
        node = placement.node
        self.preempt_slots(job, placement.victims)
        if job.recovery is not None:
            own = self.cluster.state.own_standby(job.name)
            job.recovery.on_slot_node = job.recovery.standby_used or cluster.nodes[node].name in own
        spec = job.spec
        meta = job.meta
        assert job.record is not None
        uid = job.record.uid
        record = dataclasses.replace(job.record, node_name=cluster.nodes[node].name, phase="Running",
                                     scheduled_at=EPOCH + now)
        job.record = record
        cluster.bind(BoundPod(uid, node, spec.request_bytes, spec.gpu_milli, meta.priority, spec.job_id, False,
                              record.images, record), now)
        self.pending.pop(job.index, None)
        job.phase = Phase.LOADING
        job.node = node
        job.pod_uid = uid
        self.bound[job.index] = True
        self.training[job.index] = False
        self.job_node[job.index] = node
        self.max_usage[job.index] = 0.0
        self.usage[job.index] = p.memory_base_fraction * self.peak[job.index]
        self._recompute_node_usage()

        start = now + p.scheduling_latency_seconds
        image_warm = cluster.has_image(node, spec.image, start)
        pull = 0.0 if image_warm else transfer_seconds(spec.image_bytes, p.image_pull_mib_per_s)
        cluster.add_image(node, spec.image, start + pull)
        if meta.dataset_from_image and spec.dataset_image:
            dataset_ref = dataset_image_of(spec)
            fetch = 0.0 if cluster.has_image(node, dataset_ref, start) else \
                transfer_seconds(spec.dataset_bytes, p.image_pull_mib_per_s)
            cluster.add_image(node, dataset_ref, start + fetch)
            dataset = fetch + transfer_seconds(spec.dataset_bytes, p.local_copy_mib_per_s)
        else:
            dataset = transfer_seconds(spec.dataset_bytes, p.remote_read_mib_per_s)
        model = p.framework_init_seconds
        if job.work > 0:
            model += transfer_seconds(spec.checkpoint_bytes, p.remote_read_mib_per_s)
        loaded_at = start + pull + dataset + model
        rec = job.recovery
        if rec is not None:
            rec.bound_at = now
            rec.image_warm = image_warm
            waited = start - rec.failed_at
            node_start = 0.0
            ready_at = rec.replacement_ready_at
            if rec.cause == "node" and not math.isnan(ready_at) and now >= ready_at:
                node_start = max(0.0, ready_at - rec.pending_at)
            rec.stages.update({"reschedule": waited - node_start, "node_start": node_start, "image_pull": pull,
                               "dataset_load": dataset, "model_load": model})
        self._push(loaded_at, Event.LOADED, job.index, job.incarnation)

    def _release(self, job: JobRun) -> None:
        """The job's pod stops holding resources (finished, failed, evicted)."""
        if job.pod_uid:
            self.cluster.unbind(job.pod_uid)
            job.peaks.append((job.pod_uid, self.now, float(self.max_usage[job.index]), False))
        self.running.pop(job.index, None)
        self.bound[job.index] = False
        self.training[job.index] = False
        self.job_node[job.index] = -1
        self.usage[job.index] = 0.0
        job.node = -1
        job.pod_uid = ""
        job.record = None
        self._recompute_node_usage()

    def _fail_job(self, job: JobRun, cause: str, oom_usage: float = 0.0) -> None:
        """The job's pod is gone (OOM kill, node failure, migration); it restarts from its last checkpoint."""
        p = self.params
        was_running = job.phase is Phase.RUNNING
        node_name = self.cluster.nodes[job.node].name
        self._accrue(job)
        work = job.work
        if cause == "migration":
            saved = work  # evicted gracefully: it checkpoints on SIGTERM
        elif job.interval:
            saved = math.floor(work / job.interval) * job.interval
        else:
            saved = 0.0  # no checkpoints: start over
        lost = work - saved
        self.lost_work += lost
        job.work = saved
        self._release(job)
        if cause == "oom":
            uid, ended, peak, _ = job.peaks[-1]
            job.peaks[-1] = (uid, ended, max(oom_usage, peak), True)
        if job.recovery is not None:
            job.recovery.outcome = "failed_again"
        record = RecoveryRecord(job=job.name, cause=cause, failed_at=self.now, node=node_name, lost_work=lost)
        self.recoveries.append(record)
        job.recovery = record
        job.phase = Phase.DOWN
        job.restarts += 1
        if cause == "node":
            delay = p.node_failure_detection_seconds
        elif cause == "oom":
            delay = p.oom_restart_seconds
        else:
            delay = p.migration_restart_seconds + (job.cost if was_running else 0.0)
        self._push(self.now + delay, Event.REPLACEMENT, job.index, job.incarnation)
        self.mark_changed()

    def _relieve(self, node: int) -> None:
        """The kubelet's eviction order under memory pressure: pods above their request first, then lower
        priority, then by how far usage exceeds the request."""
        cluster = self.cluster
        candidates = []
        for pod in cluster.pods_on(node):
            if pod.standby:
                used = self.params.standby_usage_bytes
            else:
                used = float(self.usage[self.by_name[pod.job].index])
            candidates.append((not used > pod.memory, pod.priority, -(used - pod.memory), pod.uid, pod, used))
        candidates.sort(key=lambda c: c[:4])
        for *_, pod, used in candidates:
            if self.node_usage[node] <= cluster.capacity[node]:
                break
            if pod.standby:
                self.remove_slot(pod.uid)
            else:
                self.oom_kills += 1
                self.oom_counter[node] += 1
                self._fail_job(self.by_name[pod.job], "oom", used)
            # node_usage was recomputed without the killed pod

    def _fail_node(self, node: int) -> None:
        p = self.params
        self.node_failures += 1
        ready_at = self.now + p.node_failure_detection_seconds + p.node_start_seconds
        for pod in self.cluster.pods_on(node):
            if pod.standby:
                self.remove_slot(pod.uid)
            else:
                job = self.by_name[pod.job]
                self._fail_job(job, "node")
                assert job.recovery is not None
                job.recovery.replacement_ready_at = ready_at
        self.cluster.set_up(node, False)
        self.node_usage[node] = 0.0
        self.node_up_at[node] = ready_at
        self._push(ready_at, Event.NODE_UP, node)

    # --- history -------------------------------------------------------------------------------------
    def _record_history(self) -> None:
        pos = self._history_pos
        up = self.cluster.up
        self.mem_history[:, pos] = np.where(up, self.node_usage, np.nan)  # node-exporter is down with its node
        self.ready_history[:, pos] = up.astype(np.float64)  # kube-state-metrics still reports NotReady
        self.oom_history[:, pos] = np.where(up, self.oom_counter, np.nan)
        self._history_pos = (pos + 1) % self.history_samples
        self._history_len = min(self._history_len + 1, self.history_samples)

    def history(self, matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """A history matrix in time order (oldest first), only the samples recorded so far."""
        if self._history_len < self.history_samples:
            return matrix[:, :self._history_len]
        return np.roll(matrix, -self._history_pos, axis=1)

    def _record_progress(self) -> None:
        stamp = EPOCH + self.now
        horizon = self.history_samples * self.params.tick_seconds
        for job in self.running.values():
            job.progress_t.append(stamp)
            job.progress_v.append(job.spec.progress.value(job.work / job.spec.duration))
            if job.progress_t[0] < stamp - horizon:
                cut = int(np.searchsorted(job.progress_t, stamp - horizon))
                del job.progress_t[:cut], job.progress_v[:cut]

    # --- standby slots and migration (called by GuardGrid policies) -----------------------------------
    def create_slot(self, record: PodRecord, node_name: str) -> None:
        """A standby pod was created (by GuardGrid's reconciler through the simulated API) for `node_name`.

        The default scheduler binds it there (required node affinity) if it fits by requests, now or at a
        later scheduling pass; until then it is Pending, as on a real cluster. Binding starts its image pulls.
        """
        self.cluster.admit(record, self.now)
        self.pending_slots[record.uid] = node_name
        self._try_bind_slot(record.uid)

    def _try_bind_slot(self, uid: str) -> bool:
        cluster = self.cluster
        node = cluster.index.get(self.pending_slots[uid], -1)
        record = cluster.pending[uid]
        if node < 0 or not cluster.up[node] or cluster.free_memory()[node] < record.memory_request:
            return False
        del self.pending_slots[uid]
        bound = dataclasses.replace(record, node_name=cluster.nodes[node].name, phase="Running",
                                    scheduled_at=EPOCH + self.now)
        cluster.bind(BoundPod(uid, node, float(record.memory_request), 0, record.priority, record.standby_for,
                              True, record.images, bound), self.now)
        start = self.now + self.params.scheduling_latency_seconds
        for image in record.images:
            size = self.image_sizes.get(image, 0.0)
            ready = self.now if cluster.has_image(node, image, self.now) else \
                start + transfer_seconds(size, self.params.image_pull_mib_per_s)
            cluster.add_image(node, image, ready)
        self._recompute_node_usage()
        return True

    def remove_slot(self, uid: str) -> bool:
        """A standby pod is deleted (by GuardGrid), preempted, evicted or lost with its node."""
        if uid in self.cluster.pods and self.cluster.pods[uid].standby:
            self.cluster.unbind(uid)
            self._recompute_node_usage()
            self._changed = True
            return True
        if uid in self.pending_slots:
            del self.pending_slots[uid]
            self.cluster.withdraw(uid)
            return True
        return False

    def preempt_slots(self, job: JobRun, victims: Sequence[str]) -> None:
        """The scheduler's preemption evicts standby slots (grace period 0) to make room for `job`'s pod."""
        for victim in victims:
            pod = self.cluster.pods.get(victim)
            if pod is None or not pod.standby:
                raise InvariantError(f"preemption victim {victim} is not a standby slot")
            if pod.job == job.name:
                self.standby_takeovers += 1
                if job.recovery is not None:
                    job.recovery.standby_used = True
                    job.recovery.on_slot_node = True
            self.remove_slot(victim)

    def job_of_pod(self, uid: str) -> str | None:
        pod = self.cluster.pods.get(uid)
        return pod.job if pod is not None and not pod.standby else None

    def evict_for_migration(self, job_name: str) -> bool:
        job = self.by_name.get(job_name)
        if job is None or job.phase is not Phase.RUNNING:
            return False
        self.migrations += 1
        self._fail_job(job, "migration")
        return True

    # --- checks --------------------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Memory conservation and consistent bookkeeping (tests call this after every event)."""
        usage_by_pod: dict[str, float] = {}
        for job in self.jobs:
            bound = job.phase in (Phase.LOADING, Phase.RUNNING)
            if bound != bool(self.bound[job.index]) or bound != bool(job.pod_uid):
                raise InvariantError(f"job {job.name}: phase {job.phase.name} disagrees with its pod binding")
            if bound:
                usage_by_pod[job.pod_uid] = float(self.usage[job.index])
            if (job.phase is Phase.PENDING) != (job.index in self.pending):
                raise InvariantError(f"job {job.name}: pending queue disagrees with phase {job.phase.name}")
            if job.phase is Phase.PENDING and (job.record is None or job.record.uid not in self.cluster.pending):
                raise InvariantError(f"job {job.name}: pending without a pending pod")
            if (job.phase is Phase.RUNNING) != (job.index in self.running):
                raise InvariantError(f"job {job.name}: running set disagrees with phase {job.phase.name}")
            if job.work < -1e-9 or job.work > job.spec.duration + 1e-6:
                raise InvariantError(f"job {job.name}: work {job.work} outside [0, {job.spec.duration}]")
        for pod in self.cluster.standby_slots():
            usage_by_pod[pod.uid] = self.params.standby_usage_bytes
        self.cluster.check(usage_by_pod, self.node_usage)

    # --- views for policies ---------------------------------------------------------------------------
    def pods_of_running_jobs(self) -> list[Any]:
        return [p.record for p in self.cluster.pods.values() if not p.standby]


def dataset_image_of(spec: JobSpec) -> str:
    """The image GuardGrid's webhook stages the dataset from (guardgrid.io/dataset-image)."""
    return f"registry.example.com/datasets/{spec.job_id}:v1"
