#!/usr/bin/env bash
# The infrastructure under the services: Kafka, PostgreSQL, the SMTP sink and stripe-mock (the
# Stripe adapter's tests; the services use the sandbox PSP unless told otherwise).
#
#   infra.sh up [FILE]            start what is not running; lists what it started in FILE
#   infra.sh stop-started [FILE]  stop only what that `up` started (make test and make run)
#   infra.sh down                 stop all four, whoever started them
#   infra.sh status
#
# Env: INFRA_SKIP (space-separated components `up` leaves alone; make run skips stripe-mock).
set -euo pipefail
SAY_PREFIX=infra
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COMPONENTS=(kafka postgres smtp stripe-mock)
STARTED=${2:-$RUN_DIR/infra.started}

is_up() { bash "$LOCAL_DIR/$1.sh" status >/dev/null 2>&1; }

case "${1:-}" in
up)
    mkdir -p "$RUN_DIR" "$(dirname "$STARTED")"
    : >"$STARTED"
    pids=()
    for c in "${COMPONENTS[@]}"; do
        if [[ " ${INFRA_SKIP:-} " == *" $c "* ]]; then
            continue
        elif is_up "$c"; then
            say "$c already running"
        else
            echo "$c" >>"$STARTED"
            bash "$LOCAL_DIR/$c.sh" up &
            pids+=($!)
        fi
    done
    rc=0
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    [[ $rc -eq 0 ]] || die "some infrastructure failed to start (see above)"
    ;;
down)
    for c in stripe-mock smtp kafka postgres; do bash "$LOCAL_DIR/$c.sh" down || true; done
    ;;
stop-started)
    if [[ -f "$STARTED" ]]; then
        while read -r c; do [[ -n "$c" ]] && { bash "$LOCAL_DIR/$c.sh" down || true; }; done <"$STARTED"
        rm -f "$STARTED"
    fi
    ;;
status)
    for c in "${COMPONENTS[@]}"; do bash "$LOCAL_DIR/$c.sh" status || true; done
    ;;
*) usage up down stop-started status ;;
esac
