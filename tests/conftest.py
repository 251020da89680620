"""Shared test helpers: paths of the captured fixtures (copied byte for byte from a real v1.36 control plane)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# The recording API-server stub's fixtures (apiserver, api_client) for the real adapter's tests.
pytest_plugins = ["apiserver_stub"]

FIXTURES = Path(__file__).parent / "fixtures"
SCHEDULER = FIXTURES / "kube-scheduler"
NODE_CACHE_CLUSTER = SCHEDULER / "cluster.json"
FULL_NODES_CLUSTER = SCHEDULER / "full-nodes" / "cluster.json"


def load_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
