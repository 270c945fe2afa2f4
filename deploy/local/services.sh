#!/usr/bin/env bash
# The six Backroom services as background processes (one `backroom serve <svc>` each).
#
#   services.sh up [svc...]       start (all by default) and wait for /health/ready
#   services.sh down [svc...]     SIGTERM (graceful: consumers leave their group, relay stops)
#   services.sh status            one line per service
#   services.sh kill SVC          SIGKILL (fault tests), `up SVC` restarts it
#   services.sh pause|resume SVC  SIGSTOP / SIGCONT (fault tests: a consumer that stops heartbeating)
#
# Env: BACKROOM_PORT_BASE (8100; catalog +1, inventory +2, pricing +3, orders +4, payments +5,
# notifications +6), BACKROOM_RUN_DIR, and any BACKROOM_* setting, passed through to every service.
set -euo pipefail
SAY_PREFIX=services
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL=(catalog inventory pricing orders payments notifications)
BASE=${BACKROOM_PORT_BASE:-8100}
PY=${PYTHON:-$REPO_ROOT/.venv/bin/python}
DIR=$RUN_DIR/services

port_of() {
    local i
    for i in "${!ALL[@]}"; do [[ ${ALL[$i]} == "$1" ]] && { echo $((BASE + i + 1)); return; }; done
    die "unknown service $1"
}
pidfile() { echo "$DIR/$1.pid"; }

start_one() {
    local svc=$1 port pid
    port=$(port_of "$svc")
    if pid_alive "$(pidfile "$svc")" "serve $svc"; then
        say "$svc already running (pid $(pid_read "$(pidfile "$svc")"), port $port)"
        return 0
    fi
    # A process SIGKILLed a moment ago (the fault harness restarts at once) can hold its port
    # until the kernel has torn it down: give the port a few seconds before calling it taken.
    local i
    for ((i = 0; i < 100; i++)); do
        port_open 127.0.0.1 "$port" || break
        sleep 0.05
    done
    port_open 127.0.0.1 "$port" && die "port $port (for $svc) is taken by another process"
    pid=$(cd "$REPO_ROOT" && BACKROOM_HTTP_PORT=$port \
        BACKROOM_PRICING_URL=${BACKROOM_PRICING_URL:-http://127.0.0.1:$(port_of pricing)} \
        BACKROOM_CATALOG_URL=${BACKROOM_CATALOG_URL:-http://127.0.0.1:$(port_of catalog)} \
        BACKROOM_INVENTORY_URL=${BACKROOM_INVENTORY_URL:-http://127.0.0.1:$(port_of inventory)} \
        BACKROOM_PAYMENTS_URL=${BACKROOM_PAYMENTS_URL:-http://127.0.0.1:$(port_of payments)} \
        BACKROOM_NOTIFICATIONS_URL=${BACKROOM_NOTIFICATIONS_URL:-http://127.0.0.1:$(port_of notifications)} \
        pid_start "$(pidfile "$svc")" "$DIR/$svc.log" "$PY" -m libs.kit.cli serve "$svc")
    echo "$pid"
}

wait_ready() {
    local svc=$1 port deadline
    port=$(port_of "$svc")
    deadline=$((SECONDS + ${BACKROOM_READY_TIMEOUT:-90}))
    until curl -fs -o /dev/null "http://127.0.0.1:$port/health/ready"; do
        pid_alive "$(pidfile "$svc")" || { tail -n 40 "$DIR/$svc.log" >&2; die "$svc exited; log: $DIR/$svc.log"; }
        ((SECONDS < deadline)) || { tail -n 40 "$DIR/$svc.log" >&2; die "$svc not ready; log: $DIR/$svc.log"; }
        sleep 0.2
    done
}

cmd=${1:-}; shift || true
targets=("$@"); [[ ${#targets[@]} -gt 0 ]] || targets=("${ALL[@]}")
mkdir -p "$DIR"
case "$cmd" in
up | start)
    started=$(now)
    for svc in "${targets[@]}"; do start_one "$svc" >/dev/null; done
    for svc in "${targets[@]}"; do wait_ready "$svc"; done
    say "up: ${targets[*]} (ready in $(elapsed "$started")s; logs in $DIR)"
    ;;
down | stop)
    for svc in "${targets[@]}"; do pid_stop "$(pidfile "$svc")" "serve $svc" 20; done
    say "down: ${targets[*]}"
    ;;
status)
    for svc in "${targets[@]}"; do
        if pid_alive "$(pidfile "$svc")" "serve $svc"; then
            say "$svc running (pid $(pid_read "$(pidfile "$svc")"), http://127.0.0.1:$(port_of "$svc"))"
        else
            say "$svc stopped"
        fi
    done
    ;;
kill | pause | resume)
    sig=KILL; [[ $cmd == pause ]] && sig=STOP; [[ $cmd == resume ]] && sig=CONT
    for svc in "${targets[@]}"; do
        pid=$(pid_read "$(pidfile "$svc")")
        [[ -n "$pid" ]] && kill "-$sig" "$pid" 2>/dev/null && say "$svc: SIG$sig sent to $pid"
    done
    ;;
*) usage up down status kill pause resume ;;
esac
