"""Kubernetes API access: the `KubeAPI` interface and its two implementations (see base.py)."""

from __future__ import annotations

from guardgrid.config import Settings
from guardgrid.kubeapi.base import (EvictionOutcome, EvictionResult, KubeAPI, KubeAPIError, ListResult,
                                    ResourceExpired, WatchEvent)

__all__ = ["KubeAPI", "KubeAPIError", "ResourceExpired", "ListResult", "WatchEvent", "EvictionOutcome",
           "EvictionResult", "make_kube_api"]


def make_kube_api(settings: Settings) -> KubeAPI:
    """The in-memory API for `GUARDGRID_CLUSTER_FILE`, else the real one (in-cluster or kubeconfig)."""
    if settings.cluster_file:
        from guardgrid.kubeapi.memory import InMemoryKubeAPI

        return InMemoryKubeAPI.from_file(settings.cluster_file)
    from guardgrid.kubeapi.real import RealKubeAPI

    return RealKubeAPI.from_environment(reporting_instance=settings.pod_name)
