"""Shared test helpers: paths of the captured fixtures (copied byte for byte from a real v1.36 control plane)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flask
import pytest
from flask.testing import FlaskClient

from guardgrid.records import node_from_dict, pod_from_dict
from guardgrid.state import ClusterState

# The recording API-server stub's fixtures (apiserver, api_client) for the real adapter's tests.
pytest_plugins = ["apiserver_stub"]



class ServerLikeClient(FlaskClient):
    """A Flask test client that reads every answer whole and closes it, as gunicorn does.

    Why: the extender runs some work after its answer is sent (when the server closes the response, see
    ExtenderService.filter_then); a server closes every response before it reads the connection's next
    request, but Flask's client leaves an unread response open, and that work would never run.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


flask.Flask.test_client_class = ServerLikeClient  # every app's test_client() in these tests

FIXTURES = Path(__file__).parent / "fixtures"
SCHEDULER = FIXTURES / "kube-scheduler"
NODE_CACHE_CLUSTER = SCHEDULER / "cluster.json"
FULL_NODES_CLUSTER = SCHEDULER / "full-nodes" / "cluster.json"


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `condition` until it holds or `timeout` passes: for effects of background threads, never a fixed
    sleep standing in for "long enough"."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.01)
    return True


def load_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def captured_state(cluster: Path = NODE_CACHE_CLUSTER) -> ClusterState:
    """The cluster of a captured scheduler run as a ClusterState: by default the node-cache run's (6 nodes,
    7 pods); FULL_NODES_CLUSTER for the full-NodeList run's."""
    items = load_json(cluster)["items"]
    state = ClusterState()
    state.replace_nodes([node_from_dict(i) for i in items if i["kind"] == "Node"])
    state.replace_pods([pod_from_dict(i) for i in items if i["kind"] == "Pod"])
    return state


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
