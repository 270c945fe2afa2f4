#!/usr/bin/env bash
# stripe-mock (Stripe's own mock of its API, validating every request against Stripe's OpenAPI)
# on 127.0.0.1, for the Stripe adapter's integration tests. No Docker: the binary is built once
# from the Go module proxy (`go install`) into the cache the Kafka jars use.
#
#   stripe-mock.sh ensure     build the pinned version into the cache if the binary is missing
#   stripe-mock.sh up|start   ensure, start it in the background (http only), wait until it answers
#   stripe-mock.sh down|stop  SIGTERM (SIGKILL after 5 s) the recorded pid
#   stripe-mock.sh status     exit 0 when running, 3 when stopped
#
# Env: STRIPE_MOCK_PORT (12111), GO (go on PATH, else /usr/local/go/bin/go), BACKROOM_CACHE
# (~/.cache/backroom; the binary: stripe-mock-<version>/go/bin/stripe-mock), BACKROOM_RUN_DIR
# (<repo>/.run; pid and log in <run dir>/stripe-mock).
set -euo pipefail
SAY_PREFIX=stripe-mock
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STRIPE_MOCK_VERSION=v0.203.0
STRIPE_MOCK_MODULE=github.com/stripe/stripe-mock
STRIPE_MOCK_PORT=${STRIPE_MOCK_PORT:-12111}
HOST=127.0.0.1
CACHE_HOME=${BACKROOM_CACHE:-$HOME/.cache/backroom}/stripe-mock-$STRIPE_MOCK_VERSION
GOPATH_DIR=$CACHE_HOME/go
BIN=$GOPATH_DIR/bin/stripe-mock
WORK=$RUN_DIR/stripe-mock
PIDFILE=$WORK/stripe-mock.pid
LOGFILE=$WORK/stripe-mock.log

if [[ -z "${GO:-}" ]]; then
    if have_bin go; then GO=go; else GO=/usr/local/go/bin/go; fi
fi

running() { pid_alive "$PIDFILE" "$BIN"; }

# answers: stripe-mock serves the API (any sk_test_ key works); a 200 on a list call means ready.
answers() {
    curl -fsS -o /dev/null --max-time 2 -u sk_test_backroom: \
        "http://$HOST:$STRIPE_MOCK_PORT/v1/customers?limit=1" 2>/dev/null
}

cmd_ensure() {
    [[ -x "$BIN" ]] && return 0
    have_bin "$GO" || die "go not found (tried '$GO'); install Go 1.21+ (https://go.dev/dl) or set GO"
    mkdir -p "$CACHE_HOME"
    # A lock keeps concurrent `up`s (two worktrees, test.sh and a manual run) from building twice.
    local lock_fd t0
    exec {lock_fd}>"$CACHE_HOME/.build.lock"
    flock -w 600 "$lock_fd" || die "timed out waiting for $CACHE_HOME/.build.lock"
    if [[ ! -x "$BIN" ]]; then
        say "building $STRIPE_MOCK_MODULE@$STRIPE_MOCK_VERSION into $GOPATH_DIR (once)"
        t0=$(now)
        # GOPATH holds the module cache and bin/; GOFLAGS=-modcacherw leaves the cache deletable.
        if ! GOPATH=$GOPATH_DIR GOFLAGS=-modcacherw GOBIN='' \
            "$GO" install "$STRIPE_MOCK_MODULE@$STRIPE_MOCK_VERSION" >"$CACHE_HOME/build.log" 2>&1; then
            cat "$CACHE_HOME/build.log" >&2
            die "go install failed (output above, also in $CACHE_HOME/build.log)"
        fi
        [[ -x "$BIN" ]] || die "go install succeeded but $BIN is missing"
        say "built in $(elapsed "$t0")s"
    fi
    exec {lock_fd}>&-
}

cmd_up() {
    lock stripe-mock
    if running; then
        say "already running on http://$HOST:$STRIPE_MOCK_PORT (pid $(pid_read "$PIDFILE"))"
        return 0
    fi
    [[ "$STRIPE_MOCK_PORT" =~ ^[0-9]+$ ]] \
        || die "STRIPE_MOCK_PORT must be a number, got '$STRIPE_MOCK_PORT'"
    if port_open "$HOST" "$STRIPE_MOCK_PORT"; then
        die "port $HOST:$STRIPE_MOCK_PORT is taken by another process (set STRIPE_MOCK_PORT)"
    fi
    cmd_ensure
    local t0 pid i
    t0=$(now)
    # -strict-version-check: a request naming another API version than the mock's spec (a
    # `stripe` SDK pinned to a newer one) fails instead of being validated against the wrong spec.
    # -https-addr "$HOST:": stripe-mock v0.203.0 also opens HTTPS on its fixed default port
    # 12112 when only -http-addr is given, so two of them (helpers' stacks, a `make test` beside
    # a `make run`) collided; an empty port lets the system pick a free one (nothing uses it).
    pid=$(pid_start "$PIDFILE" "$LOGFILE" "$BIN" -http-addr "$HOST:$STRIPE_MOCK_PORT" \
        -https-addr "$HOST:" -strict-version-check)
    for ((i = 0; i < 300; i++)); do
        answers && break
        proc_running "$pid" || break
        sleep 0.05
    done
    if ! answers; then
        tail -n 20 "$LOGFILE" >&2 || true
        pid_stop "$PIDFILE" "$BIN" 2
        die "it did not come up (log: $LOGFILE)"
    fi
    say "up on http://$HOST:$STRIPE_MOCK_PORT (started in $(elapsed "$t0")s, pid $pid, log $LOGFILE)"
}

cmd_down() {
    lock stripe-mock
    pid_down "$PIDFILE" "$BIN" 5
}

cmd_status() {
    if running; then
        say "running on http://$HOST:$STRIPE_MOCK_PORT (pid $(pid_read "$PIDFILE"))"
        return 0
    fi
    say "stopped"
    return 3
}

case "${1:-}" in
    ensure) cmd_ensure ;;
    up | start) cmd_up ;;
    down | stop) cmd_down ;;
    status) cmd_status ;;
    *) usage ensure up down status ;;
esac
