# syntax=docker/dockerfile:1
# Build: docker build -t spire-health-exporter .
# The runtime image is distroless: Debian 12's Python 3.11 and the exporter's venv, no shell.
# Both bases are build arguments, so the image can be built from locally made Debian 12 bases
# with the same Python 3.11 where the published ones can't be pulled (scripts/build-image).
ARG BUILD_BASE=debian:12-slim
ARG RUNTIME_BASE=gcr.io/distroless/python3-debian12:nonroot

FROM ${BUILD_BASE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python3 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir build \
    && /opt/build/bin/python -m build --wheel --outdir /dist .
# The same install path the wheel-install test exercises: a fresh venv, then the wheel.
RUN python3 -m venv /venv && /venv/bin/pip install --no-cache-dir /dist/*.whl \
    && /venv/bin/spire-health-exporter --version

FROM ${RUNTIME_BASE}
COPY --from=build /venv /venv
# Fixed non-root UID/GID (distroless "nonroot"); the chart and the systemd unit use the same.
USER 65532:65532
EXPOSE 9989
ENTRYPOINT ["/venv/bin/spire-health-exporter"]
