#!/usr/bin/env bash
# Make a Debian bookworm image with python3, venv and pip, without any
# container registry: mmdebstrap builds the root filesystem from Debian's
# archive and `docker import` turns it into an image. Cached: an existing
# image is reused unless REBUILD=1.
#
#   scripts/build-base-image.sh [IMAGE]     default local/python-base:bookworm
#
# The image serves as BASE_IMAGE for the Dockerfile (`make test-image`).
set -euo pipefail

IMAGE=${1:-${BASE_IMAGE:-local/python-base:bookworm}}
SUITE=bookworm
# The host's deb822 sources (main, updates, security) double as the mirror list.
SOURCES=${SYSINNER_DEBIAN_SOURCES:-/etc/apt/sources.list.d/debian.sources}

log() { printf 'build-base-image: %s\n' "$*" >&2; }

if [ "${REBUILD:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE exists; reusing it (REBUILD=1 to make it again)"
    exit 0
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
    log "installing mmdebstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null; }
fi

mirror=$SOURCES
[ -r "$mirror" ] || mirror=http://deb.debian.org/debian

log "building $IMAGE with mmdebstrap from $mirror"
start=$SECONDS
# essential + python: no apt, no init, no shell tools beyond what Essential
# packages bring. Documentation and man pages are left out (copyrights kept).
mmdebstrap --quiet --mode=root --variant=essential --format=tar \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
    "$SUITE" - "$mirror" \
    | docker import \
        -c 'ENV LANG=C.UTF-8' \
        -c 'CMD ["python3"]' \
        -m "mmdebstrap $SUITE essential + python3 (scripts/build-base-image.sh)" \
        - "$IMAGE" >/dev/null
log "built $IMAGE in $((SECONDS - start))s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
