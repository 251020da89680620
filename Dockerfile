# syntax=docker/dockerfile:1
# One image for all three GuardGrid services (ghcr.io/guardgrid/guardgrid:0.1.0); the Deployment's `command`
# picks the service: the extender (default CMD below), the webhook, or `python -m predictor`.
#
# Built for a read-only root filesystem and a numeric non-root user: dependencies live in a venv built in a
# separate stage (no compilers or pip caches in the final image); all bytecode is compiled at build time
# (unchecked-hash .pyc: the image is immutable, so Python never re-checks or rewrites it); the only writable
# paths at run time are the emptyDir volumes the manifests mount (/tmp, /tmp/metrics).
# Pin the base image by digest in your own build pipeline.

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-compile -r /tmp/requirements.txt \
 && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv
# The extender's compiled filter and pod reader (guardgrid/_kernel.c, _pod_reader.c): built here, where a C
# compiler may be, and copied into the final image as one .so; without it the extender still runs, at the
# Python decision's speed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY guardgrid/_kernel.c guardgrid/_pod_reader.c guardgrid/_kernel.h /build/guardgrid/
COPY scripts/build_kernel.py /build/scripts/build_kernel.py
RUN cd /build && /opt/venv/bin/python scripts/build_kernel.py

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
# Sources stay owned by root and read-only for the service user: a compromised worker cannot rewrite its code.
COPY guardgrid/ /app/guardgrid/
COPY --from=builder /build/guardgrid/ /app/guardgrid/
COPY extender/ /app/extender/
COPY webhook/ /app/webhook/
COPY predictor/ /app/predictor/
# The seeded evaluation (`python -m evaluation.demo`); its trace in data/ stays out of the image.
COPY evaluation/ /app/evaluation/
RUN python -m compileall -q --invalidation-mode unchecked-hash /app
USER 65532:65532
# extender (plain HTTP, loopback from kube-scheduler), webhook (TLS), predictor (/v1/snapshot, /metrics)
EXPOSE 8888 8443 9100
CMD ["gunicorn", "-c", "extender/gunicorn_conf.py", "extender.app:create_app()"]
