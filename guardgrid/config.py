"""All GuardGrid configuration: one frozen dataclass read from `GUARDGRID_*` environment variables.

Why one module: every service must give `GUARDGRID_CLUSTER_FILE`, `GUARDGRID_PREDICTOR_URL` and
`GUARDGRID_PROMETHEUS_URL` the same meaning, and an operator should find every knob in one table.
`python -m guardgrid.config` prints that table (the README's configuration section is generated from it
and a test keeps the two in step). A bad value fails at start-up with the variable's name, never later.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Settings", "ConfigError", "load_settings", "markdown_table"]


class ConfigError(ValueError):
    """A GUARDGRID_* variable has a value of the wrong type or range; the message names it."""


def _setting(default: Any, doc: str, service: str, minimum: float | None = None, maximum: float | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "service": service, "min": minimum, "max": maximum})


@dataclass(frozen=True)
class Settings:
    """Typed settings; the env var of field `x_y` is `GUARDGRID_X_Y`."""

    # --- shared by every service ---------------------------------------------------------------------------
    cluster_file: str = _setting(
        "", "Path to a v1 List of Nodes and Pods (YAML or JSON). When set, the in-memory KubeAPI serves it "
        "instead of a live API server (tests, benchmarks, the local demo).", "all")
    predictor_url: str = _setting(
        "", "Base URL of the predictor (e.g. `http://127.0.0.1:9100`); the extender and webhook read "
        "`<url>/v1/snapshot`. Empty: no snapshot, requests-based fallback.", "all")
    prometheus_url: str = _setting(
        "", "Base URL of Prometheus the predictor queries. Empty: the predictor derives a synthetic history "
        "from the cluster state (demo only).", "all")
    namespace: str = _setting("guardgrid-system", "Namespace GuardGrid runs in (lease, events).", "all")
    pod_name: str = _setting("", "This replica's pod name (downward API); leader-election identity.", "all")
    log_level: str = _setting("INFO", "Python log level.", "all")
    http_timeout_seconds: float = _setting(2.0, "Timeout of GuardGrid's own outbound HTTP calls "
                                           "(snapshot, Prometheus).", "all", 0.05, 60)

    # --- extender ------------------------------------------------------------------------------------------
    risk_threshold: float = _setting(0.10, "Filter rejects a node when the pod's predicted OOM risk there is "
                                     "above this probability.", "extender", 0.0, 1.0)
    filter_keep_least_risky: bool = _setting(False, "When every candidate node is above the risk threshold, "
                                             "keep the least risky one instead of leaving the pod Pending. Off "
                                             "by default: in the evaluation it turned a pod that fits nowhere "
                                             "safely into repeated OOM kills (40 in one openb run).",
                                             "extender")
    snapshot_refresh_seconds: float = _setting(5.0, "How often the background thread fetches the predictor "
                                               "snapshot.", "extender,webhook", 0.1, 3600)
    snapshot_max_age_seconds: float = _setting(120.0, "A snapshot older than this is stale: the extender "
                                               "falls back to requests-based memory load.", "extender", 1, 86400)
    inflight_window_seconds: float = _setting(60.0, "Pods bound this recently (or after the snapshot) count "
                                              "as in-flight memory on their node.", "extender", 0, 3600)
    fallback_spread: float = _setting(0.05, "Forecast spread, as a fraction of allocatable, assumed when no "
                                      "forecast is available (requests-based fallback).", "extender", 0.001, 1)
    weight_risk: float = _setting(0.5, "Prioritize weight of low OOM risk.", "extender", 0, 100)
    weight_balance: float = _setting(0.3, "Prioritize weight of low memory utilisation after placement.",
                                     "extender", 0, 100)
    weight_fault: float = _setting(0.2, "Prioritize weight of a low node fault rate.", "extender", 0, 100)
    fault_rate_reference_per_hour: float = _setting(0.05, "Node fault rate (failures/hour) that scores zero "
                                                    "on the fault term.", "extender", 1e-6, 1e6)
    max_body_bytes: int = _setting(33554432, "Largest request body the extender and webhook accept (413 "
                                   "above). 32 MiB fits a full NodeList of ~10k nodes.", "extender,webhook",
                                   1024, 2**31)
    cache_resync_seconds: float = _setting(300.0, "Watch timeout after which the node/pod cache re-watches "
                                           "(server-side timeoutSeconds).", "extender,predictor", 1, 86400)

    # --- webhook -------------------------------------------------------------------------------------------
    tls_cert_file: str = _setting("", "Serving certificate (PEM) of the webhook; reloaded on SIGHUP.", "webhook")
    tls_key_file: str = _setting("", "Private key (PEM) of the webhook.", "webhook")
    stage_root: str = _setting("/guardgrid", "Directory under which staged content is mounted in app "
                               "containers (`<root>/deps`, `<root>/dataset`, `<root>/checkpoint`).", "webhook")
    init_cpu_request: str = _setting("100m", "CPU request of each staging init container.", "webhook")
    init_memory_request: str = _setting("128Mi", "Memory request of each staging init container.", "webhook")
    init_cpu_limit: str = _setting("1", "CPU limit of each staging init container.", "webhook")
    init_memory_limit: str = _setting("512Mi", "Memory limit of each staging init container.", "webhook")
    advice_cache_seconds: float = _setting(30.0, "TTL of the webhook's cached checkpoint advice.", "webhook",
                                           0, 86400)

    # --- predictor -----------------------------------------------------------------------------------------
    listen: str = _setting("0.0.0.0:9100", "host:port the predictor serves /v1/snapshot and /metrics on.",
                           "predictor")
    cycle_seconds: float = _setting(30.0, "Predictor loop period.", "predictor", 0.1, 3600)
    horizon_seconds: float = _setting(600.0, "Forecast horizon.", "predictor", 1, 86400)
    history_seconds: float = _setting(21600.0, "History window queried from Prometheus.", "predictor", 60,
                                      30 * 86400)
    step_seconds: float = _setting(60.0, "Resolution of queried history.", "predictor", 1, 3600)
    node_label: str = _setting("node", "Label that carries the Kubernetes node name on node-level series "
                               "(`node` with kube-prometheus relabelling, or `instance`).", "predictor")
    instance_strip_port: bool = _setting(True, "Strip `:port` from the node label's value (for `instance`).",
                                         "predictor")
    progress_metric: str = _setting("guardgrid_training_progress", "Training-progress metric, one series "
                                    "per job with a `job_name` label.", "predictor")
    progress_job_label: str = _setting("job_name", "Label of the progress metric that names the GuardGrid "
                                       "job.", "predictor")
    progress_direction: str = _setting("rising", "`rising` (accuracy-like) or `falling` (loss-like).",
                                       "predictor")
    reactive_enter_load: float = _setting(0.85, "Cluster memory load above which the predictor turns "
                                          "reactive (no standby slots).", "predictor", 0, 1)
    reactive_exit_load: float = _setting(0.75, "Load below which it turns proactive again (hysteresis).",
                                         "predictor", 0, 1)
    shortfall_target: float = _setting(0.05, "Acceptable probability that protected jobs' failures over the "
                                       "horizon outnumber standby slots.", "predictor", 1e-6, 1)
    max_standby_slots: int = _setting(50, "Upper bound on standby slots cluster-wide.", "predictor", 0, 100000)
    fault_prior_rate_per_hour: float = _setting(0.01, "Prior node fault rate (failures/hour) a node with no "
                                                "history is assumed to have.", "predictor", 0, 100)
    fault_prior_hours: float = _setting(24.0, "Weight of that prior, in hours of observation.", "predictor",
                                        0.001, 1e6)
    migration_enabled: bool = _setting(False, "Run speculative migration of slow-growing jobs.", "predictor")
    migration_dry_run: bool = _setting(True, "Log and record migration decisions without evicting.",
                                       "predictor")
    migration_alpha: float = _setting(0.1, "A job whose normalised progress growth over the window is below "
                                      "this is slow-growing (SpeCon's default).", "predictor", 0, 10)
    migration_window_seconds: float = _setting(1800.0, "Sliding window for progress growth.", "predictor", 60,
                                               86400)
    migration_contended_load: float = _setting(0.85, "Node memory load (forecast/allocatable) above which a "
                                               "node is contended.", "predictor", 0, 2)
    migration_contended_risk: float = _setting(0.10, "Node OOM risk above which a node is contended.",
                                               "predictor", 0, 1)
    migration_max_per_node_per_hour: int = _setting(1, "Evictions per node per hour at most.", "predictor", 0,
                                                    1000)
    migration_max_per_hour: int = _setting(5, "Evictions cluster-wide per hour at most.", "predictor", 0, 10000)
    migration_cooldown_seconds: float = _setting(3600.0, "A migrated job is not migrated again for this long.",
                                                 "predictor", 0, 7 * 86400)
    checkpoint_cost_default_seconds: float = _setting(60.0, "Checkpoint cost C assumed when a job has no "
                                                      "`guardgrid.io/checkpoint-cost-seconds`.", "predictor",
                                                      0.001, 86400)
    checkpoint_interval_min_seconds: float = _setting(300.0, "Lower bound of the advised checkpoint interval.",
                                                      "predictor", 1, 86400)
    checkpoint_interval_max_seconds: float = _setting(14400.0, "Upper bound of the advised checkpoint "
                                                      "interval.", "predictor", 1, 7 * 86400)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_name(field_name: str) -> str:
    return "GUARDGRID_" + field_name.upper()


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    name = env_name(f.name)
    kind = f.type if isinstance(f.type, type) else {"str": str, "int": int, "float": float, "bool": bool}[f.type]
    if kind is str:
        return raw
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{name}={raw!r}: expected true or false")
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected {'an integer' if kind is int else 'a number'}") from None
    low, high = f.metadata["min"], f.metadata["max"]
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{name}={raw!r}: must be between {low} and {high}")
    return value


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read every GUARDGRID_* variable; `overrides` (field names) win, which tests and the demo use."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = environ.get(env_name(f.name))
        if raw is not None and raw != "":
            values[f.name] = _convert(f, raw)
    values.update(overrides)
    settings = Settings(**values)
    if settings.reactive_exit_load > settings.reactive_enter_load:
        raise ConfigError("GUARDGRID_REACTIVE_EXIT_LOAD must not exceed GUARDGRID_REACTIVE_ENTER_LOAD")
    if settings.checkpoint_interval_min_seconds > settings.checkpoint_interval_max_seconds:
        raise ConfigError("GUARDGRID_CHECKPOINT_INTERVAL_MIN_SECONDS must not exceed the MAX")
    if settings.progress_direction not in ("rising", "falling"):
        raise ConfigError(f"GUARDGRID_PROGRESS_DIRECTION={settings.progress_direction!r}: rising or falling")
    return settings


def markdown_table() -> str:
    """The README's configuration table."""
    rows = ["| variable | used by | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(Settings):
        default = f.default
        shown = f"`{default}`" if default != "" else "(empty)"
        rows.append(f"| `{env_name(f.name)}` | {f.metadata['service']} | {shown} | {f.metadata['doc']} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - documentation helper
    sys.stdout.write(markdown_table() + "\n")
