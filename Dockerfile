# syntax=docker/dockerfile:1
#
# The Chiron operator: `python -m chiron_operator` (flags in charts/chiron-operator). The same
# image runs the vLLM emulator for clusters without GPUs: `chiron-emulator MODEL [vllm flags]`,
# also reachable as `vllm serve MODEL [vllm flags]`, the command of the vLLM Deployments the
# operator builds, so a pool whose template.image is this image runs emulated instances.
#
#   docker build -t ghcr.io/chiron-operator/chiron-operator:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/chiron
WORKDIR /src
COPY pyproject.toml README.md ./
COPY chiron_operator ./chiron_operator
RUN /opt/chiron/bin/pip install ".[operator]"
# `vllm serve MODEL ...` -> `chiron-emulator MODEL ...`: the operator's Deployments run
# `vllm serve`, and the emulator accepts vLLM's flags.
RUN printf '%s\n' \
      '#!/bin/sh' \
      '# vLLM-compatible entry point of the Chiron image: runs the emulator, not vLLM.' \
      'if [ "${1:-}" = "serve" ]; then shift; fi' \
      'exec chiron-emulator "$@"' \
      > /opt/chiron/bin/vllm \
    && chmod 0755 /opt/chiron/bin/vllm

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="chiron-operator" \
      org.opencontainers.image.description="SLO-aware hierarchical autoscaling of vLLM serving pools (Chiron)" \
      org.opencontainers.image.source="https://github.com/chiron-operator/chiron-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
# A named user for uid 65532 (getpass and friends look it up); no home, no shell.
RUN groupadd --gid 65532 chiron \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
         --shell /usr/sbin/nologin chiron
COPY --from=build /opt/chiron /opt/chiron
ENV PATH=/opt/chiron/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["python", "-m", "chiron_operator"]
