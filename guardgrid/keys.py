"""Every label, annotation and object name GuardGrid reads or writes, in one place.

Why one module: the extender, webhook and predictor must agree on these strings exactly; a typo in one
service would silently break the standby mechanism (a slot nobody recognises as "own").
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "guardgrid.io/"

# Labels and annotations (users write the annotations; GuardGrid writes the labels).
JOB: Final = PREFIX + "job"
INJECT: Final = PREFIX + "inject"
MANAGED: Final = PREFIX + "managed"
STANDBY_FOR: Final = PREFIX + "standby-for"
MIGRATABLE: Final = PREFIX + "migratable"
DEPS_IMAGE: Final = PREFIX + "deps-image"
DEPS_IMAGE_PATH: Final = PREFIX + "deps-image-path"
DATASET_IMAGE: Final = PREFIX + "dataset-image"
DATASET_IMAGE_PATH: Final = PREFIX + "dataset-image-path"
CHECKPOINT_IMAGE: Final = PREFIX + "checkpoint-image"
CHECKPOINT_IMAGE_PATH: Final = PREFIX + "checkpoint-image-path"
CHECKPOINT_COST_SECONDS: Final = PREFIX + "checkpoint-cost-seconds"
# Written by the predictor on standby pods (never by users, so not in KNOWN_KEYS; the webhook never sees
# standby pods): the node a slot was planned for, while it is still pending.
STANDBY_NODE: Final = PREFIX + "standby-node"

KNOWN_KEYS: Final = frozenset(
    {
        JOB,
        INJECT,
        MANAGED,
        STANDBY_FOR,
        MIGRATABLE,
        DEPS_IMAGE,
        DEPS_IMAGE_PATH,
        DATASET_IMAGE,
        DATASET_IMAGE_PATH,
        CHECKPOINT_IMAGE,
        CHECKPOINT_IMAGE_PATH,
        CHECKPOINT_COST_SECONDS,
    }
)

# Namespace opt-in: the webhook's namespaceSelector matches this label and value.
NAMESPACE_OPT_IN_VALUE: Final = "enabled"

# Priority classes (manifests/base/priorityclasses.yaml defines them with these values).
PRIORITY_CLASS_TRAINING: Final = "guardgrid-training"
PRIORITY_CLASS_STANDBY: Final = "guardgrid-standby"
PRIORITY_TRAINING: Final = 1000
PRIORITY_STANDBY: Final = -5

SCHEDULER_NAME: Final = "guardgrid-scheduler"

# Environment variables GuardGrid sets in training containers.
ENV_DATASET_DIR: Final = "GUARDGRID_DATASET_DIR"
ENV_CHECKPOINT_DIR: Final = "GUARDGRID_CHECKPOINT_DIR"
ENV_CHECKPOINT_INTERVAL: Final = "GUARDGRID_CHECKPOINT_INTERVAL_SECONDS"
