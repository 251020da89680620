"""The three warm-recovery stages: dependencies, dataset, checkpoint.

Why staging through init containers: recovery is slow because a replacement pod must pull and unpack its
dependencies, load its dataset and restore its model. When these live in images, a node that already holds
the image (a standby slot pulled it) starts the init container at once (`imagePullPolicy: IfNotPresent`),
and a plain local copy into an emptyDir replaces downloads at start-up.

Each stage is one annotation pair (`<stage>-image`, optional `<stage>-image-path`), one emptyDir volume
`guardgrid-<stage>`, one init container `guardgrid-stage-<stage>` and one mount plus one env variable in
every app container. The copy command needs a POSIX `sh` and `cp` in the data image (any image built
`FROM busybox`, alpine or a distro base has them; `FROM scratch` does not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from guardgrid import keys
from guardgrid.config import Settings

__all__ = ["Stage", "STAGES", "STAGE_MOUNT", "INIT_PREFIX", "VOLUME_PREFIX", "COPY_COMMAND", "init_container",
           "mount_path", "IDENTITY_FIELDS"]

INIT_PREFIX: Final = "guardgrid-stage-"
VOLUME_PREFIX: Final = "guardgrid-"
STAGE_MOUNT: Final = "/stage"  # where the init container sees the shared volume
SOURCE_ENV: Final = "GUARDGRID_STAGE_SOURCE"

# `cp -RP` (recursive, symlinks copied as links) rather than `cp -a`: `-a` also tries to preserve owners,
# which fails or warns when the pod runs as non-root. The source is passed as env, never spliced into the
# script, so no annotation value is ever interpreted by the shell.
COPY_COMMAND: Final = (
    f'test -d "${SOURCE_ENV}" || {{ echo "guardgrid: ${SOURCE_ENV} is not a directory in this image" >&2; '
    f'exit 1; }}; cp -RP "${SOURCE_ENV}"/. {STAGE_MOUNT}/'
)


@dataclass(frozen=True, slots=True)
class Stage:
    name: str  # deps | dataset | checkpoint
    image_key: str
    path_key: str
    default_path: str  # source directory inside the image when `<stage>-image-path` is absent
    env_name: str  # env variable in app containers that points at the staged directory
    read_only: bool  # app containers mount it read-only unless they are expected to write there

    @property
    def volume(self) -> str:
        return VOLUME_PREFIX + self.name

    @property
    def init_name(self) -> str:
        return INIT_PREFIX + self.name


# Checkpoint is mounted read-write: a job resumes from the staged checkpoint and frameworks commonly save the
# next one into the same directory. The emptyDir dies with the pod, so durable checkpoints must still be
# shipped elsewhere by the job; dependencies and dataset are inputs and stay read-only.
STAGES: Final = (
    Stage("deps", keys.DEPS_IMAGE, keys.DEPS_IMAGE_PATH, "/deps", "PYTHONPATH", True),
    Stage("dataset", keys.DATASET_IMAGE, keys.DATASET_IMAGE_PATH, "/dataset", keys.ENV_DATASET_DIR, True),
    Stage("checkpoint", keys.CHECKPOINT_IMAGE, keys.CHECKPOINT_IMAGE_PATH, "/checkpoint", keys.ENV_CHECKPOINT_DIR,
          False),
)


def mount_path(settings: Settings, stage: Stage) -> str:
    """Where app containers find a stage: `<GUARDGRID_STAGE_ROOT>/<stage>` (default `/guardgrid/deps` etc.)."""
    return settings.stage_root.rstrip("/") + "/" + stage.name


# Identity fields copied from the first app container's securityContext (when it sets them there rather than
# at pod level): the copy then runs as the user that reads (and, for checkpoints, overwrites) the files, and a
# namespace enforcing Pod Security "restricted" (runAsNonRoot per container) admits the staging containers too.
IDENTITY_FIELDS: Final = ("runAsUser", "runAsGroup", "runAsNonRoot")


def init_container(stage: Stage, image: str, source: str, settings: Settings,
                   identity: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The staging init container: copy `<source>/.` of `image` into the stage's emptyDir.

    Hardened to pass Pod Security "restricted": no privilege escalation, no capabilities, RuntimeDefault
    seccomp, read-only root filesystem (it only writes to the volume).
    """
    security: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for key in IDENTITY_FIELDS:
        if identity and key in identity:
            security[key] = identity[key]
    return {
        "name": stage.init_name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", COPY_COMMAND],
        "env": [{"name": SOURCE_ENV, "value": source}],
        "resources": {
            "requests": {"cpu": settings.init_cpu_request, "memory": settings.init_memory_request},
            "limits": {"cpu": settings.init_cpu_limit, "memory": settings.init_memory_limit},
        },
        "volumeMounts": [{"name": stage.volume, "mountPath": STAGE_MOUNT}],
        "securityContext": security,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
