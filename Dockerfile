# sysinner-exporter: a Prometheus exporter for Docker hosts running sysinner-style apps.
#
#   make image        # builds sysinner-exporter:latest offline, base and wheels included
#   docker run -d --name sysinner-exporter -p 8733:8733 \
#       -v /var/run/docker.sock:/var/run/docker.sock:ro \
#       --group-add "$(stat -c %g /var/run/docker.sock)" \
#       sysinner-exporter:latest
#
# The exporter runs as uid 10001, not root. It reaches the engine through the
# socket's group: --group-add passes the host's gid of the socket (often the
# `docker` group, whose number differs from host to host, hence not baked in).
#
# Build arguments (`make image` passes all of them):
#   BASE_IMAGE  any glibc image with python3 (3.11+) and its venv module; the
#               default is the Debian one scripts/build-base-image.sh makes with
#               no registry at all (`make image` makes it first).
#   WHEELHOUSE  a directory in the build context holding every wheel needed
#               (scripts/build-wheelhouse.sh); when set, pip uses no index.
#   VERSION     the version label; `make image` passes pyproject's.
#   SOURCE      the source label: where this repository is published.
ARG BASE_IMAGE=local/python-base:bookworm

FROM ${BASE_IMAGE} AS build
ARG WHEELHOUSE=
# Lets `make image` prune this stage's dangling leftovers, and only them.
LABEL io.sysinner.exporter.stage=build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY . /src
# Stage 1: build the wheel (and collect its dependencies' wheels), then install
# them into /opt/venv. The runtime stage copies only that venv: the legacy
# builder has no RUN --mount, so copying the wheels across would ship them as
# a layer of their own.
RUN set -eu; \
    if [ -n "$WHEELHOUSE" ]; then set -- --no-index --find-links "/src/$WHEELHOUSE"; fi; \
    python3 -m venv /opt/build; \
    /opt/build/bin/pip wheel --quiet "$@" --wheel-dir /wheels /src; \
    python3 -m venv --without-pip /opt/venv; \
    /opt/build/bin/pip --python /opt/venv/bin/python install --quiet --no-index \
        --find-links /wheels sysinner-exporter; \
    /opt/venv/bin/sysinner-exporter --version

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/sysinner/sysinner-exporter
LABEL org.opencontainers.image.title="sysinner-exporter" \
      org.opencontainers.image.description="Prometheus exporter and remediation sidecar for Docker hosts running sysinner-style app containers" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid/gid so that host-side permissions and runAsNonRoot checks can
# name it; written by hand because minimal bases lack useradd.
# The state dir (remediation's SQLite file) belongs to that user: a named
# volume mounted there starts with this ownership.
RUN echo 'exporter:x:10001:10001:sysinner-exporter:/nonexistent:/usr/sbin/nologin' >>/etc/passwd \
    && echo 'exporter:x:10001:' >>/etc/group \
    && mkdir -p /var/lib/sysinner-exporter \
    && chown 10001:10001 /var/lib/sysinner-exporter
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8733
# The base has no curl: Python's urllib asks /healthz. The address follows
# SYSINNER_EXPORTER_WEB_LISTEN_ADDRESS (or the deprecated EXPORTER_ one; the
# first of a comma-separated list; a wildcard host means loopback); an address
# given with --web.listen-address instead is not seen here, so set the variable.
# With --web.config.file (TLS or basic auth) this plain request fails: give
# such a container a HEALTHCHECK of its own (or --no-healthcheck).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; e = os.environ.get; h, _, p = (e('SYSINNER_EXPORTER_WEB_LISTEN_ADDRESS') or e('EXPORTER_WEB_LISTEN_ADDRESS') or ':8733').split(',')[0].strip().rpartition(':'); h = h.strip('[]'); h = {'': '127.0.0.1', '0.0.0.0': '127.0.0.1', '::': '::1'}.get(h, h); h = f'[{h}]' if ':' in h else h; u.urlopen(f'http://{h}:{p}/healthz', timeout=4)"]
ENTRYPOINT ["sysinner-exporter"]
CMD ["serve"]
