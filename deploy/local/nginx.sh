#!/usr/bin/env bash
# The gateway: a private nginx instance (prefix $RUN_DIR/nginx) in front of the six services.
#
#   nginx.sh up       install nginx if needed, render the config, nginx -t, start (or reload
#                     when it runs with an outdated config)
#   nginx.sh down     graceful quit (nginx -s quit), SIGTERM/SIGKILL of the recorded master pid
#                     as a fallback
#   nginx.sh status   exit 0 when running, 3 when stopped
#   nginx.sh reload   re-render, nginx -t, reload (starts it when it is not running)
#
# Env: GATEWAY_PORT (8000), CATALOG_PORT (8101), INVENTORY_PORT (8102), PRICING_PORT (8103), ORDERS_PORT (8104),
# PAYMENTS_PORT (8105), NOTIFICATIONS_PORT (8106), BACKROOM_RUN_DIR (<repo>/.run).
#
# Gateway limits (README.md, "Gateway limits"), sized to capacity: today's bench sustains
# ~20-30 checkouts/s on 2 cores (the target is 100/s). "Client" = one bearer credential,
# "address" = one client address (the connection's, or X-Forwarded-For behind a trusted proxy).
#   GATEWAY_CHECKOUT_CLIENT_RATE (2 r/s), GATEWAY_CHECKOUT_CLIENT_BURST (10): POST /orders (and
#       POST /carts/{id}/checkout, in the same zones) and POST /pricing/quotes per credential
#       (each writes rows): one customer cannot flood them.
#   GATEWAY_CHECKOUT_ADDRESS_RATE (30 r/s), GATEWAY_CHECKOUT_ADDRESS_BURST (60): the same per
#       address: thirty customers of one office buying at once pass, one address cannot take
#       more than the whole system sustains today.
#   GATEWAY_CLIENT_RATE (50 r/s), GATEWAY_CLIENT_BURST (100): every other route per credential.
#   GATEWAY_ADDRESS_RATE (500 r/s), GATEWAY_ADDRESS_BURST (1000): every other route per address.
#   GATEWAY_CHECKOUT_BODY_KB (64), GATEWAY_BODY_KB (256): request body limits (413 beyond).
#   GATEWAY_TRUSTED_PROXIES (""): addresses/CIDRs (comma or space separated) whose
#       X-Forwarded-For names the client; none by default (the connection address counts).
#   GATEWAY_CORS_ORIGINS (""): origins (scheme://host[:port], comma or space separated) that get
#       CORS headers and preflight answers; none by default. Never `*`.
# The bench and the fault harness raise the rates (bench/bench.py, bench/stack.py).
#
# Issue 14: /openapi.json, /docs, /asyncapi.json, /asyncapi and /schemas/events/<Type>.json are
# files `backroom apidocs` writes (outside the private run dir, see APIDOCS_DIR) before each
# render (ADR 0012).
set -euo pipefail
SAY_PREFIX=nginx
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NGINX_DIR=$RUN_DIR/nginx
NGINX_CONF=$NGINX_DIR/nginx.conf
NGINX_PID=$NGINX_DIR/nginx.pid
NGINX_ERR=$NGINX_DIR/logs/error.log
TEMPLATE=$LOCAL_DIR/nginx/nginx.conf.tmpl
HOST=127.0.0.1
# nginx's workers (nobody, when started as root) must read these files, and the run dir may be
# private (mode 700: it holds the dev secrets), so they live outside it, one dir per run dir.
APIDOCS_DIR=${TMPDIR:-/var/tmp}/backroom-apidocs-$(short_hash "$RUN_DIR")/apidocs
PY=${PYTHON:-$REPO_ROOT/.venv/bin/python}

GATEWAY_PORT=${GATEWAY_PORT:-8000}
GATEWAY_CHECKOUT_CLIENT_RATE=${GATEWAY_CHECKOUT_CLIENT_RATE:-2}
GATEWAY_CHECKOUT_CLIENT_BURST=${GATEWAY_CHECKOUT_CLIENT_BURST:-10}
GATEWAY_CHECKOUT_ADDRESS_RATE=${GATEWAY_CHECKOUT_ADDRESS_RATE:-30}
GATEWAY_CHECKOUT_ADDRESS_BURST=${GATEWAY_CHECKOUT_ADDRESS_BURST:-60}
GATEWAY_CLIENT_RATE=${GATEWAY_CLIENT_RATE:-50}
GATEWAY_CLIENT_BURST=${GATEWAY_CLIENT_BURST:-100}
GATEWAY_ADDRESS_RATE=${GATEWAY_ADDRESS_RATE:-500}
GATEWAY_ADDRESS_BURST=${GATEWAY_ADDRESS_BURST:-1000}
GATEWAY_CHECKOUT_BODY_KB=${GATEWAY_CHECKOUT_BODY_KB:-64}
GATEWAY_BODY_KB=${GATEWAY_BODY_KB:-256}
GATEWAY_TRUSTED_PROXIES=${GATEWAY_TRUSTED_PROXIES:-}
GATEWAY_CORS_ORIGINS=${GATEWAY_CORS_ORIGINS:-}
CATALOG_PORT=${CATALOG_PORT:-8101}
INVENTORY_PORT=${INVENTORY_PORT:-8102}
PRICING_PORT=${PRICING_PORT:-8103}
ORDERS_PORT=${ORDERS_PORT:-8104}
PAYMENTS_PORT=${PAYMENTS_PORT:-8105}
NOTIFICATIONS_PORT=${NOTIFICATIONS_PORT:-8106}
# A proxied connection takes two descriptors; stay within the hard limit (see the template).
WORKER_NOFILE=$(ulimit -Hn)
[[ "$WORKER_NOFILE" =~ ^[0-9]+$ ]] && (( WORKER_NOFILE <= 65536 )) || WORKER_NOFILE=65536
# shellcheck disable=SC2034  # read through ${!name} in render
WORKER_CONNECTIONS=$(( WORKER_NOFILE / 2 - 64 > 8192 ? 8192 : WORKER_NOFILE / 2 - 64 ))
NUMERIC_VARS=(WORKER_NOFILE WORKER_CONNECTIONS GATEWAY_PORT
    GATEWAY_CHECKOUT_CLIENT_RATE GATEWAY_CHECKOUT_CLIENT_BURST GATEWAY_CHECKOUT_ADDRESS_RATE
    GATEWAY_CHECKOUT_ADDRESS_BURST GATEWAY_CLIENT_RATE GATEWAY_CLIENT_BURST GATEWAY_ADDRESS_RATE
    GATEWAY_ADDRESS_BURST GATEWAY_CHECKOUT_BODY_KB GATEWAY_BODY_KB
    CATALOG_PORT INVENTORY_PORT PRICING_PORT ORDERS_PORT PAYMENTS_PORT NOTIFICATIONS_PORT)

# Every nginx invocation names the private prefix, config and error log (-e: otherwise nginx
# first opens the compiled-in /var/log/nginx/error.log).
ngx() { unlocked nginx -p "$NGINX_DIR/" -c "$NGINX_CONF" -e "$NGINX_ERR" "$@"; }

running() { pid_alive "$NGINX_PID" "$NGINX_CONF"; }

# The port in the config in place (which a running nginx uses), else GATEWAY_PORT.
conf_port() {
    local p=""
    if [[ -f "$NGINX_CONF" ]]; then
        p=$(grep -oE "listen $HOST:[0-9]+" "$NGINX_CONF" | head -n1 | cut -d: -f2 || true)
    fi
    printf '%s' "${p:-$GATEWAY_PORT}"
}

# real_ip_block: set_real_ip_from per trusted proxy (GATEWAY_TRUSTED_PROXIES), or a comment.
real_ip_block() {
    local item n=0 items=()
    IFS=', ' read -ra items <<<"$GATEWAY_TRUSTED_PROXIES"
    for item in "${items[@]}"; do
        [[ "$item" =~ ^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$ ]] \
            || die "GATEWAY_TRUSTED_PROXIES: '$item' is not an address or CIDR"
        printf '    set_real_ip_from %s;\n' "$item"
        n=$((n + 1))
    done
    if ((n)); then
        printf '    real_ip_header X-Forwarded-For;\n    real_ip_recursive on;\n'
    else
        printf '    # No trusted proxies (GATEWAY_TRUSTED_PROXIES): the connection address is the client.\n'
    fi
}

# cors_block: one map entry per allowed origin (GATEWAY_CORS_ORIGINS).
cors_block() {
    local item items=()
    IFS=', ' read -ra items <<<"$GATEWAY_CORS_ORIGINS"
    for item in "${items[@]}"; do
        [[ "$item" =~ ^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$ ]] \
            || die "GATEWAY_CORS_ORIGINS: '$item' is not an origin (scheme://host[:port], no '*')"
        # shellcheck disable=SC2016  # $http_origin is nginx's variable, written as is
        printf '        "%s" $http_origin;\n' "$item"
    done
}

# render OUT: the template with every double-brace placeholder replaced.
render() {
    local out=$1 text name block
    for name in "${NUMERIC_VARS[@]}"; do
        [[ "${!name}" =~ ^[0-9]+$ ]] || die "$name must be a number, got '${!name}'"
    done
    [[ "$NGINX_DIR" != *'"'* ]] || die "RUN_DIR must not contain a double quote"
    text=$(<"$TEMPLATE")
    for name in NGINX_DIR APIDOCS_DIR "${NUMERIC_VARS[@]}"; do
        text=${text//"{{$name}}"/"${!name}"}
    done
    block=$(real_ip_block) || exit 1
    text=${text//"{{REAL_IP}}"/"$block"}
    block=$(cors_block) || exit 1
    text=${text//"{{CORS_ORIGINS}}"/"$block"}
    if [[ "$text" == *"{{"* ]]; then
        die "unknown placeholder in $TEMPLATE: $(grep -o '{{[^}]*}}' <<<"$text" | sort -u | tr '\n' ' ')"
    fi
    printf '%s\n' "$text" >"$out"
}

# apidocs: (re)generate the documents the gateway serves from the code of this checkout; written
# aside and moved into place, so a running nginx never serves half a directory.
apidocs() {
    local fresh=$APIDOCS_DIR.new
    mkdir -p "$(dirname "$APIDOCS_DIR")"
    chmod 755 "$(dirname "$APIDOCS_DIR")"
    rm -rf "$fresh"
    (cd "$REPO_ROOT" && "$PY" -m libs.kit.cli apidocs --out "$fresh" >/dev/null) \
        || die "backroom apidocs failed (the gateway's /openapi.json and /asyncapi.json)"
    rm -rf "$APIDOCS_DIR.old"
    if [[ -d "$APIDOCS_DIR" ]]; then mv "$APIDOCS_DIR" "$APIDOCS_DIR.old"; fi
    mv "$fresh" "$APIDOCS_DIR"
    rm -rf "$APIDOCS_DIR.old"
}

# prepare: render into a candidate file and test it; sets CHANGED=1 when it differs from the
# config in place, and installs it.
prepare() {
    mkdir -p "$NGINX_DIR/logs" "$NGINX_DIR/tmp"
    apidocs
    local candidate=$NGINX_CONF.new out
    render "$candidate"
    if ! out=$(unlocked nginx -p "$NGINX_DIR/" -c "$candidate" -e "$NGINX_ERR" -t 2>&1); then
        printf '%s\n' "$out" >&2
        rm -f "$candidate"
        die "config test failed (candidate kept out of place)"
    fi
    if [[ -f "$NGINX_CONF" ]] && cmp -s "$candidate" "$NGINX_CONF"; then
        CHANGED=0
        rm -f "$candidate"
    else
        CHANGED=1
        mv -f "$candidate" "$NGINX_CONF"
    fi
}

start() {
    if port_open "$HOST" "$GATEWAY_PORT"; then
        die "port $HOST:$GATEWAY_PORT is taken by another process (set GATEWAY_PORT)"
    fi
    rm -f "$NGINX_PID"
    local t0 i
    t0=$(now)
    ngx || die "nginx failed to start (log: $NGINX_ERR)"
    # The daemonised master writes the pid file just after the command returns.
    for ((i = 0; i < 100; i++)); do
        [[ -s "$NGINX_PID" ]] && break
        sleep 0.02
    done
    running || die "nginx did not stay up (log: $NGINX_ERR)"
    wait_port "$HOST" "$GATEWAY_PORT" 10 "$(pid_read "$NGINX_PID")" \
        || die "nginx is not accepting connections on $HOST:$GATEWAY_PORT (log: $NGINX_ERR)"
    say "up on $HOST:$GATEWAY_PORT (started in $(elapsed "$t0")s, pid $(pid_read "$NGINX_PID"), logs $NGINX_DIR/logs)"
}

workers() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' | sort || true; }

# `nginx -s reload` only sends SIGHUP: wait until the master has started a new generation of
# workers and the old one is gone, so that requests sent after this returns see the new config.
reload_running() {
    local master old i
    master=$(pid_read "$NGINX_PID")
    old=$(workers "$master")
    ngx -s reload
    for ((i = 0; i < 200; i++)); do
        sleep 0.05
        [[ -n "$(comm -13 <(printf '%s\n' "$old") <(workers "$master"))" ]] || continue
        [[ -z "$(comm -12 <(printf '%s\n' "$old") <(workers "$master"))" ]] && break
    done
    if [[ -n "$(comm -12 <(printf '%s\n' "$old") <(workers "$master"))" ]]; then
        warn "old workers still finishing requests after 10s (new config is live for new connections)"
    fi
    say "reloaded (pid $master, config $NGINX_CONF, listening on $HOST:$(conf_port))"
}

cmd_up() {
    lock nginx
    ensure_apt_pkg nginx nginx
    prepare
    if running; then
        if [[ "$CHANGED" == 1 ]]; then
            reload_running
        else
            say "already running on $HOST:$(conf_port) (pid $(pid_read "$NGINX_PID"))"
        fi
        return 0
    fi
    start
}

cmd_reload() {
    lock nginx
    ensure_apt_pkg nginx nginx
    prepare
    if running; then
        reload_running
    else
        say "not running; starting"
        start
    fi
}

cmd_down() {
    lock nginx
    if ! running; then
        rm -f "$NGINX_PID"
        say "not running"
        return 0
    fi
    local pid i
    pid=$(pid_read "$NGINX_PID")
    # Graceful: finishes in-flight requests, then the master exits and removes its pid file.
    local why="nginx -s quit failed"
    if ngx -s quit 2>/dev/null; then
        why="graceful quit took over 10s"
        for ((i = 0; i < 200; i++)); do
            proc_running "$pid" || break
            sleep 0.05
        done
    fi
    # Fallback: signal the recorded master pid (SIGTERM = fast shutdown, then SIGKILL).
    if proc_running "$pid"; then
        warn "$why; terminating pid $pid"
        printf '%s\n' "$pid" >"$NGINX_PID"
        pid_stop "$NGINX_PID" "$NGINX_CONF" 5
    fi
    rm -f "$NGINX_PID"
    say "stopped (pid $pid)"
}

cmd_status() {
    if running; then
        say "running on $HOST:$(conf_port) (pid $(pid_read "$NGINX_PID"), config $NGINX_CONF)"
        return 0
    fi
    say "stopped"
    return 3
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    reload) cmd_reload ;;
    *) usage up down status reload ;;
esac
