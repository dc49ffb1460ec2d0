#!/usr/bin/env bash
# Download, on the host, every wheel the image build needs, so that
# `docker build --build-arg WHEELHOUSE=...` installs with no index at all.
#
#   scripts/build-wheelhouse.sh BASE_IMAGE [DIR]     DIR defaults to .cache/wheelhouse
#
# Why on the host: containers on this project's engine have no route off the
# machine (dockerd runs with --ip-forward=false), and a build that needs no
# index is faster and repeatable. The wheels are chosen for the base image's
# Python (asked from the image) and the host's architecture, not the host's
# own Python, so the same wheelhouse serves any glibc base of that version.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${1:?usage: $0 BASE_IMAGE [DIR]}
DIR=${2:-.cache/wheelhouse}
PY=${PYTHON:-.venv/bin/python}

log() { printf 'build-wheelhouse: %s\n' "$*" >&2; }

pyver=$(docker run --rm --network=none --entrypoint python3 "$BASE" \
    -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
arch=$(uname -m)
# The runtime dependencies and the build backend, read from pyproject.toml.
mapfile -t requirements < <("$PY" - <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    doc = tomllib.load(f)
for req in doc["project"]["dependencies"] + doc["build-system"]["requires"]:
    print(req)
EOF
)

mkdir -p "$DIR"
log "wheels for CPython $pyver on $arch into $DIR: ${requirements[*]}"
# Binary wheels only, for the target's tags: manylinux (glibc 2.17 and up)
# covers Debian bookworm and the official python:*-slim images alike.
"$PY" -m pip download --quiet --disable-pip-version-check \
    --dest "$DIR" --only-binary=:all: \
    --implementation cp --python-version "$pyver" \
    --platform "manylinux2014_$arch" --platform "manylinux_2_28_$arch" \
    --platform "manylinux_2_34_$arch" \
    "${requirements[@]}"
log "$(find "$DIR" -name '*.whl' | wc -l) wheels ready"
