# syntax=docker/dockerfile:1.7
# pullsecret-injector: the webhook image.
#
#   docker build -t pullsecret-injector:0.1.0 .
#
# Two stages on the same pinned base (tag for the Python ABI, digest for the bytes):
#   build:   builds the project wheel and a wheel for every dependency (manylinux wheels
#            from PyPI; nothing is compiled, so no compiler is installed anywhere)
#   runtime: a venv holding only those wheels, installed offline (--no-index), without pip
#            or setuptools in it, run as a numeric non-root user, fine with a read-only
#            root filesystem (nothing is written at run time; pyc files are compiled at
#            install time and PYTHONDONTWRITEBYTECODE stops any attempt to write more).
# tests/chart/test_dockerfile.py lints this file with hadolint and replays both stages'
# RUN commands into a temporary directory, then runs the installed entry point.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook/ webhook/
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="pullsecret-injector" \
      org.opencontainers.image.description="Mutating admission webhook injecting the in-scope registry imagePullSecrets each Pod's images need" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# PYTHONMALLOC=malloc: objects freed after a large request go back to the kernel
# (webhook/serve/memory.py; with pymalloc, RSS kept 20-30 MiB per burst of them).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONMALLOC=malloc \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    PATH=/opt/venv/bin:$PATH
# The wheels are bind-mounted from the build stage, so they never become a layer here.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-index \
       --find-links /wheels "pullsecret-injector==${VERSION}"
WORKDIR /tmp
# 65532: the conventional "nonroot" uid/gid (distroless); numeric so that Kubernetes can
# verify runAsNonRoot without an /etc/passwd entry.
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["pullsecret-injector", "serve"]
