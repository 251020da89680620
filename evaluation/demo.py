"""`make demo` (`python -m evaluation.demo`): GuardGrid's services on loopback, a burst of real requests, then
the evaluation.

1. Starts the predictor (`python -m predictor`), the extender (gunicorn, plain HTTP) and the webhook (gunicorn,
   TLS with a CA made by `python -m webhook.certs`) as separate processes on free loopback ports, against the
   embedded cluster evaluation/demo_data/cluster.json (the cluster captured from a real v1.36 control plane,
   served by the in-memory KubeAPI through GUARDGRID_CLUSTER_FILE). Without Prometheus the predictor runs on
   its synthetic history, and says so.
2. Replays what kube-apiserver and kube-scheduler sent in the captured run: the AdmissionReviews of two
   training pods to /mutate?timeout=5s (the patch applied with jsonpatch), then filter and prioritize for the
   bert pod, and for the resnet50 pod that fits nowhere: preempt with its standby slot as the victim, then
   filter on the nominated node. Prints each decision.
3. Stops the services and runs the evaluation (evaluation.run), printing where the table, CSV and plot are.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonpatch
import requests

from evaluation.services import REPO, Service, ServiceError, free_port, python, wait_until

__all__ = ["main"]

DATA = Path(__file__).resolve().parent / "demo_data"
CLUSTER = DATA / "cluster.json"
ADMISSIONS = ("pod-create-by-job-controller.json", "pod-create-training-with-priority.json")
GIB = 2**30


def _say(text: str = "") -> None:
    print(text, flush=True)


def _heading(text: str) -> None:
    _say()
    _say(f"== {text} " + "=" * max(0, 100 - len(text)))


class Demo:
    """The three services and the requests driven through them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.session = requests.Session()
        certs = workdir / "certs"
        subprocess.run(python("-m", "webhook.certs", "--out-dir", str(certs), "--extra-san", "127.0.0.1"),
                       cwd=REPO, check=True, capture_output=True)
        self.ca = str(certs / "ca.crt")
        predictor_port, extender_port, webhook_port = free_port(), free_port(), free_port()
        self.predictor_url = f"http://127.0.0.1:{predictor_port}"
        self.extender_url = f"http://127.0.0.1:{extender_port}"
        self.webhook_url = f"https://127.0.0.1:{webhook_port}"
        for name in ("extender-metrics", "webhook-metrics"):
            (workdir / name).mkdir()
        common = {"GUARDGRID_CLUSTER_FILE": str(CLUSTER), "GUARDGRID_PREDICTOR_URL": self.predictor_url,
                  "GUARDGRID_PROMETHEUS_URL": "", "GUARDGRID_LOG_LEVEL": "WARNING",
                  "GUARDGRID_WORKER_TMP_DIR": str(workdir), "GUARDGRID_SNAPSHOT_REFRESH_SECONDS": "0.5"}
        self.services = [
            Service("predictor", python("-m", "predictor"),
                    {**common, "GUARDGRID_LISTEN": f"127.0.0.1:{predictor_port}", "GUARDGRID_CYCLE_SECONDS": "2",
                     "GUARDGRID_POD_NAME": "guardgrid-demo"},
                    workdir / "predictor.log", f"{self.predictor_url}/v1/snapshot"),
            Service("extender",
                    python("-m", "gunicorn", "-c", "extender/gunicorn_conf.py", "extender.app:create_app()"),
                    {**common, "GUARDGRID_EXTENDER_BIND": f"127.0.0.1:{extender_port}",
                     "GUARDGRID_EXTENDER_WORKERS": "1", "PROMETHEUS_MULTIPROC_DIR": str(workdir / "extender-metrics")},
                    workdir / "extender.log", f"{self.extender_url}/readyz"),
            Service("webhook", python("-m", "gunicorn", "-c", "webhook/gunicorn_conf.py", "-b",
                                      f"127.0.0.1:{webhook_port}", "webhook.app:create_app()"),
                    {**common, "GUARDGRID_TLS_CERT_FILE": str(certs / "tls.crt"),
                     "GUARDGRID_TLS_KEY_FILE": str(certs / "tls.key"), "GUNICORN_CMD_ARGS": "--workers 1",
                     "PROMETHEUS_MULTIPROC_DIR": str(workdir / "webhook-metrics")},
                    workdir / "webhook.log", f"{self.webhook_url}/healthz", verify=self.ca),
        ]

    # --- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        for service in self.services:
            service.start()
        for service in self.services:
            service.wait_ready()
            base = "/".join(service.ready_url.split("/")[:3])
            _say(f"  {service.name:<9} ready at {base}  (log: {service.log_path.name})")
        if not wait_until(self._extender_has_snapshot, 15.0, 0.2):
            _say("  (the extender has no predictor snapshot yet: it decides on requests alone)")

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()

    def _extender_has_snapshot(self) -> bool:
        try:
            body = self.session.get(f"{self.extender_url}/metrics", timeout=2).text
        except requests.RequestException:
            return False
        for line in body.splitlines():
            if line.startswith("guardgrid_extender_snapshot_age_seconds"):
                return "inf" not in line.lower()
        return False

    # --- the predictor -----------------------------------------------------------------------------------
    def show_snapshot(self) -> None:
        snapshot = self.session.get(f"{self.predictor_url}/v1/snapshot", timeout=5).json()
        source = snapshot.get("source", "?")
        _say(f"  mode {snapshot['mode']}, cluster memory load {snapshot['cluster_memory_load']:.2f} "
             f"(history source: {source}; without Prometheus the predictor synthesises one from requests)")
        for name, node in sorted(snapshot["nodes"].items()):
            mean, spread = node["forecast_mean_bytes"] / GIB, node["forecast_std_bytes"] / GIB
            _say(f"  {name}: forecast {mean:6.1f}Gi +- {spread:4.1f}Gi"
                 f" of {node['allocatable_bytes'] / GIB:.0f}Gi, OOM risk {node['oom_risk']:.3f}, "
                 f"fault rate {node['fault_rate_per_hour']:.3f}/h")
        for slot in snapshot.get("standby", []):
            _say(f"  standby slot for {slot['job']} on {slot['node']}: "
                 f"{slot['memory_bytes'] / GIB:.0f}Gi ({slot['state']})")
        for job, advice in sorted(snapshot.get("jobs", {}).items()):
            _say(f"  checkpoint advice for {job}: every {advice['checkpoint_interval_seconds']:.0f}s "
                 f"(MTBF {advice['mtbf_seconds'] / 3600:.0f}h, cost {advice['checkpoint_cost_seconds']:.0f}s)")

    # --- the webhook -------------------------------------------------------------------------------------
    def admit(self, fixture: str) -> dict[str, Any]:
        """POST the captured AdmissionReview as kube-apiserver does; return the pod with the patch applied."""
        review = json.loads((DATA / fixture).read_bytes())
        pod = review["request"]["object"]
        who = pod["metadata"].get("generateName") or pod["metadata"].get("name")
        response = self.session.post(f"{self.webhook_url}/mutate?timeout=5s", data=json.dumps(review),
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "kube-apiserver-admission"},
                                     verify=self.ca, timeout=5)
        answer = response.json()["response"]
        ops = json.loads(base64.b64decode(answer["patch"])) if answer.get("patch") else []
        mutated = jsonpatch.apply_patch(pod, ops) if ops else copy.deepcopy(pod)
        _say(f"  {who}*  HTTP {response.status_code}, allowed={answer['allowed']}, {len(ops)} JSONPatch operations")
        spec = mutated["spec"]
        _say(f"    schedulerName={spec.get('schedulerName')}, priorityClassName={spec.get('priorityClassName')}, "
             f"priority={spec.get('priority')}")
        labels = {k: v for k, v in mutated["metadata"].get("labels", {}).items() if k.startswith("guardgrid.io/")}
        _say(f"    labels {labels}")
        for init in spec.get("initContainers", []):
            if init["name"].startswith("guardgrid-"):
                _say(f"    init container {init['name']}: {init['image']}")
        envs = sorted({e["name"] for c in spec["containers"] for e in c.get("env", []) if e["name"].startswith(
            ("GUARDGRID_", "PYTHONPATH"))})
        _say(f"    env in app containers: {', '.join(envs) or '(none)'}")
        for warning in answer.get("warnings", []):
            _say(f"    warning: {warning}")
        return mutated

    # --- the extender ------------------------------------------------------------------------------------
    def _extender(self, verb: str, body: dict[str, Any]) -> Any:
        response = self.session.post(f"{self.extender_url}/{verb}", data=json.dumps(body),
                                     headers={"Content-Type": "application/json"}, timeout=5)
        if response.status_code != 200:
            raise ServiceError(f"extender {verb}: HTTP {response.status_code}: {response.text}")
        return response.json()

    def schedule(self, pod: dict[str, Any], node_names: Sequence[str]) -> None:
        """filter, then prioritize over the survivors, as kube-scheduler calls a nodeCacheCapable extender."""
        result = self._extender("filter", {"Pod": pod, "Nodes": None, "NodeNames": list(node_names)})
        passed = result.get("NodeNames") or []
        _say(f"  filter over {len(node_names)} nodes: {len(passed)} passed: {', '.join(passed) or '-'}")
        for node, message in sorted((result.get("FailedNodes") or {}).items()):
            _say(f"    {node} rejected: {message}")
        if len(passed) > 1:
            scores = self._extender("prioritize", {"Pod": pod, "Nodes": None, "NodeNames": passed})
            ranked = sorted(scores, key=lambda s: (-s["Score"], s["Host"]))
            _say("  prioritize: " + ", ".join(f"{s['Host']}={s['Score']}" for s in ranked) +
                 f"  (0-10; kube-scheduler adds score x weight x 10 to its own plugins)")

    def preempt(self, pod: dict[str, Any], victims: dict[str, Any]) -> None:
        result = self._extender("preempt", {"Pod": pod, "NodeNameToVictims": None, "NodeNameToMetaVictims": victims})
        kept = result.get("NodeNameToMetaVictims") or {}
        for node, entry in victims.items():
            uids = [p["UID"] for p in entry["Pods"]]
            verdict = "kept" if node in kept else "dropped"
            _say(f"  preempt candidate {node}, victims {uids}: {verdict} "
                 f"({'only GuardGrid standby slots, this job' + chr(39) + 's own' if node in kept else 'not safe'})")
        for node in kept:
            result = self._extender("filter", {"Pod": pod, "Nodes": None, "NodeNames": [node]})
            ok = node in (result.get("NodeNames") or [])
            _say(f"  filter on the nominated node {node}: {'passed' if ok else 'rejected'}"
                 f"{'' if ok else ': ' + str((result.get('FailedNodes') or {}).get(node))}")


def _as_stored(mutated: dict[str, Any], captured: dict[str, Any]) -> dict[str, Any]:
    """The pod as kube-apiserver stores it after admission: name and uid assigned (taken from the capture)."""
    pod = copy.deepcopy(mutated)
    pod["metadata"]["name"] = captured["metadata"]["name"]
    pod["metadata"]["uid"] = captured["metadata"]["uid"]
    pod["metadata"]["creationTimestamp"] = captured["metadata"].get("creationTimestamp")
    pod.pop("kind", None)
    pod.pop("apiVersion", None)  # the scheduler sends pods without them
    pod["status"] = {"phase": "Pending"}
    return pod


def run_services(workdir: Path) -> Demo:
    """The services part; returns the (stopped) Demo so callers can check nothing is left running."""
    demo = Demo(workdir)
    _heading("1. GuardGrid services on loopback (embedded cluster: 6 nodes, 7 pods captured from Kubernetes v1.36)")
    try:
        demo.start()
        _heading("2. Predictor snapshot (GET /v1/snapshot)")
        demo.show_snapshot()
        _heading("3. Admission (kube-apiserver -> POST /mutate?timeout=5s, AdmissionReview v1)")
        bert = demo.admit(ADMISSIONS[0])
        resnet = demo.admit(ADMISSIONS[1])
        filter_args = json.loads((DATA / "filter-args.json").read_bytes())
        preempt_args = json.loads((DATA / "preempt-args.json").read_bytes())
        _heading("4. Scheduling bert-finetune (kube-scheduler -> POST /filter, /prioritize)")
        demo.schedule(_as_stored(bert, filter_args["Pod"]), filter_args["NodeNames"])
        _heading("5. Scheduling resnet50-train, 96Gi: fits nowhere, so preemption (POST /preempt)")
        resnet_pod = _as_stored(resnet, preempt_args["Pod"])
        demo.preempt(resnet_pod, preempt_args["NodeNameToMetaVictims"])
        _say("  (on the real v1.36 scheduler this evicted the standby slot and bound the pod to worker-3 "
             "within a second)")
    finally:
        demo.stop()
        _say("\n  services stopped")
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out"), help="evaluation output directory (default out/)")
    parser.add_argument("--skip-services", action="store_true", help="only run the evaluation")
    parser.add_argument("--skip-evaluation", action="store_true", help="only run the services part")
    parser.add_argument("--workers", type=int, default=2, help="evaluation worker processes (default 2)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if not args.skip_services:
        with tempfile.TemporaryDirectory(prefix="guardgrid-demo-") as workdir:
            try:
                run_services(Path(workdir))
            except (ServiceError, requests.RequestException, subprocess.CalledProcessError) as exc:
                print(f"\ndemo: the services part failed: {exc}", file=sys.stderr)
                return 1
    if not args.skip_evaluation:
        from evaluation import run

        _heading("6. Evaluation: four policies on the built-in workload and the Alibaba openb cluster shape")
        code = run.main(["--out", str(args.out), "--workers", str(args.workers)])
        if code:
            return code
        _say("\nWhat the columns mean, every assumption and how to replay your own trace: docs/evaluation.md")
    _say(f"\ndemo finished in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
