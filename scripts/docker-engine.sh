#!/usr/bin/env bash
# Install, start, stop and query the project's own Docker engine.
#
#   scripts/docker-engine.sh start    install if missing, start if none answers, build test image
#   scripts/docker-engine.sh stop     stop the dockerd this script started (by its recorded pid)
#   scripts/docker-engine.sh status   exit 0 when an engine answers
#
# Safe to call repeatedly and from parallel workers: the whole of `start` runs
# under one lock, and an engine that already answers is reused, never doubled.
set -euo pipefail

SOCK=${SYSINNER_DOCKER_SOCK:-/var/run/docker.sock}
STATE_DIR=${SYSINNER_ENGINE_STATE:-/var/lib/sysinner-exporter-engine}
LOG=$STATE_DIR/dockerd.log
OUR_PID=$STATE_DIR/dockerd.pid
LOCK=$STATE_DIR/lock
WAIT_SECONDS=${SYSINNER_ENGINE_WAIT:-60}
TEST_IMAGE=local/busybox:latest

log() { printf 'docker-engine: %s\n' "$*" >&2; }

engine_answers() {
    # The API's own ping, not just the socket's existence: a stale socket file
    # outlives a killed daemon.
    [ -S "$SOCK" ] && docker -H "unix://$SOCK" version --format '{{.Server.APIVersion}}' >/dev/null 2>&1
}

install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    [ -x /bin/busybox ] || missing+=(busybox-static)
    command -v docker >/dev/null 2>&1 || missing+=(docker.io)
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    # policy-rc.d exit 101 stops the package's init script from starting a
    # second daemon behind our back; restore whatever was there before.
    local had_policy=0
    [ -e /usr/sbin/policy-rc.d ] && had_policy=1
    if [ $had_policy -eq 0 ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
    [ $had_policy -eq 0 ] && rm -f /usr/sbin/policy-rc.d
    return 0
}

pid_is() {
    # pid_is PID NAME: the pid is alive, not a zombie, and runs NAME.
    local pid=$1 name=$2 state comm
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ "$state" != "Z" ] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [ "$comm" = "$name" ]
}

clear_stale_pidfiles() {
    # After a kill -9 these make the next start refuse ("pid file found") or
    # wait 15 s for a containerd that is gone.
    local f name
    for f in /var/run/docker.pid:dockerd /var/run/docker/containerd/containerd.pid:containerd; do
        name=${f##*:}; f=${f%:*}
        if [ -f "$f" ] && ! pid_is "$(cat "$f" 2>/dev/null)" "$name"; then
            log "removing stale $f"
            rm -f "$f"
        fi
    done
}

start_daemon() {
    clear_stale_pidfiles
    mkdir -p "$STATE_DIR"
    log "starting dockerd (log: $LOG)"
    (
        # dockerd would otherwise hold our lock and any caller's pipe open for
        # its whole life: a second caller blocks, a `| tee` never sees EOF.
        for fd in /proc/$BASHPID/fd/*; do
            n=${fd##*/}
            [ "$n" -gt 2 ] 2>/dev/null && eval "exec $n>&-" || true
        done
        # --ip-forward=false: containers still reach each other and the host
        # over the bridge, but nothing is routed off this machine.
        exec setsid dockerd --host="unix://$SOCK" --ip-forward=false \
            </dev/null >>"$LOG" 2>&1
    ) &
    echo $! >"$OUR_PID"
    local deadline=$((SECONDS + WAIT_SECONDS))
    until engine_answers; do
        if ! pid_is "$(cat "$OUR_PID")" dockerd; then
            log "dockerd exited during start; last log lines:"
            tail -n 20 "$LOG" >&2
            return 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            log "engine did not answer within ${WAIT_SECONDS}s; last log lines:"
            tail -n 20 "$LOG" >&2
            return 1
        fi
        sleep 0.2
    done
    log "engine answers on unix://$SOCK"
}

build_test_image() (
    docker -H "unix://$SOCK" image inspect "$TEST_IMAGE" >/dev/null 2>&1 && exit 0
    log "building $TEST_IMAGE offline from busybox-static"
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list-full); do
        [ "$applet" = bin/busybox ] && continue
        mkdir -p "$root/$(dirname "$applet")"
        ln -sf /bin/busybox "$root/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    chmod 1777 "$root/tmp"
    tar -C "$root" -c . | docker -H "unix://$SOCK" import -c 'CMD ["/bin/sh"]' - "$TEST_IMAGE" >/dev/null
)

cmd_start() {
    mkdir -p "$STATE_DIR"
    install_packages
    exec 9>"$LOCK"
    flock -w 120 9 || { log "could not take $LOCK"; return 1; }
    if engine_answers; then
        log "an engine already answers on unix://$SOCK; reusing it"
    else
        start_daemon
    fi
    build_test_image
    exec 9>&-
}

cmd_stop() {
    local pid
    pid=$(cat "$OUR_PID" 2>/dev/null || true)
    if ! pid_is "$pid" dockerd; then
        log "no dockerd started by this script is running"
        rm -f "$OUR_PID"
        return 0
    fi
    log "stopping dockerd $pid"
    kill -TERM "$pid"
    local deadline=$((SECONDS + 30))
    while pid_is "$pid" dockerd && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if pid_is "$pid" dockerd; then
        log "dockerd $pid did not stop in 30 s; killing it"
        kill -KILL "$pid"
    fi
    rm -f "$OUR_PID"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status)
        if engine_answers; then echo "engine answers on unix://$SOCK"; else echo "no engine answers on unix://$SOCK"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
