# syntax=docker/dockerfile:1.7
# pullsecret-injector: the webhook image.
#
#   docker build -t pullsecret-injector:0.1.0 .        (or: podman build ...)
#
# Two stages on the same pinned base (tag for the Python ABI, digest for the bytes):
#   build:   downloads every dependency as a wheel whose sha256 requirements.lock pins
#            (pip --require-hashes: a changed or unpinned file fails the build), and builds
#            the project's own wheel with the hash-locked build backend of
#            requirements-build.lock. Only manylinux wheels: nothing is compiled, so no
#            compiler is installed anywhere. `bash scripts/lock` regenerates both locks.
#   runtime: a venv holding only those wheels, installed offline (--no-index) and checked
#            against the same hashes; then pip, setuptools and wheel are removed from the
#            image (the base's own copies and ensurepip's bundled wheels too), so nothing
#            in it can install code. Runs as a numeric non-root user and works with a
#            read-only root filesystem: pyc files are compiled at install time and
#            PYTHONDONTWRITEBYTECODE stops any attempt to write more; only /tmp is written.
# tests/image/ builds this file for real and tests the image it makes (CI: .ci/run).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements.lock requirements-build.lock ./
# The dependencies first (their layer is reused while only the code changes), then the
# build backend into a throw-away venv, then the project wheel built offline with it.
RUN python -m pip download --require-hashes --only-binary=:all: --no-deps \
        --dest /wheels -r requirements.lock \
    && cp requirements.lock /wheels/ \
    && python -m venv /build \
    && /build/bin/python -m pip install --require-hashes --no-deps -r requirements-build.lock
COPY pyproject.toml README.md ./
COPY webhook/ webhook/
RUN /build/bin/python -m pip wheel --no-deps --no-build-isolation --no-index \
        --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
# Provenance (OCI image annotations): scripts/e2e passes the commit built and the build's
# time (RFC 3339, UTC); a build without them says "unknown" rather than something untrue.
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="pullsecret-injector" \
      org.opencontainers.image.description="Mutating admission webhook injecting the in-scope registry imagePullSecrets each Pod's images need" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"
# PYTHONMALLOC=malloc: objects freed after a large request go back to the kernel
# (webhook/serve/memory.py; with pymalloc, RSS kept 20-30 MiB per burst of them).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONMALLOC=malloc \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
# The wheels are bind-mounted from the build stage, so they never become a layer here.
# `python` is the base image's interpreter throughout this RUN: PATH points into the venv
# only after it (ENV below), because the venv has no pip of its own.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --no-index --find-links /wheels \
       --require-hashes --no-deps -r /wheels/requirements.lock \
    && python -m pip --python /opt/venv/bin/python install --no-index --no-deps \
       "/wheels/pullsecret_injector-${VERSION}-py3-none-any.whl" \
    && /opt/venv/bin/python -c "import webhook.cli" \
    && set -- \
    && for deb in python3-pip python3-pip-whl python3-setuptools python3-setuptools-whl \
                  python3-wheel; do \
         if dpkg -s "$deb" >/dev/null 2>&1; then set -- "$@" "$deb"; fi; \
       done \
    && if [ "$#" -gt 0 ]; then dpkg --purge --force-depends "$@"; fi \
    && python -m pip uninstall --yes --quiet pip setuptools wheel \
    && rm -rf "$(python -c 'import ensurepip, os; print(os.path.dirname(ensurepip.__file__))')/_bundled" \
       /root/.cache
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /tmp
# 65532: the conventional "nonroot" uid/gid (distroless); numeric so that Kubernetes can
# verify runAsNonRoot without an /etc/passwd entry.
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["pullsecret-injector", "serve"]
