#!/usr/bin/env bash
# A local SMTP sink (deploy/local/smtp_sink.py, aiosmtpd) that stores every message it gets as
# an .eml file in $RUN_DIR/smtp/maildir.
#
#   smtp.sh up       start it in the background (waits until the port accepts connections)
#   smtp.sh down     SIGTERM (SIGKILL after 5 s) the recorded pid
#   smtp.sh status   exit 0 when running, 3 when stopped
#   smtp.sh clear    delete the stored messages
#
# Env: PYTHON (the project venv's python, else python3; must have aiosmtpd), SMTP_PORT (2525),
# BACKROOM_RUN_DIR (<repo>/.run).
set -euo pipefail
SAY_PREFIX=smtp
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -z "${PYTHON:-}" && -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON=$REPO_ROOT/.venv/bin/python; fi
PYTHON=${PYTHON:-python3}
SMTP_PORT=${SMTP_PORT:-2525}
HOST=127.0.0.1
SMTP_DIR=$RUN_DIR/smtp
MAILDIR=$SMTP_DIR/maildir
PIDFILE=$SMTP_DIR/smtp.pid
LOGFILE=$SMTP_DIR/smtp.log
SINK=$LOCAL_DIR/smtp_sink.py

running() { pid_alive "$PIDFILE" smtp_sink.py; }

cmd_up() {
    lock smtp
    if running; then
        say "already running on $HOST:$SMTP_PORT (pid $(pid_read "$PIDFILE")), mail in $MAILDIR"
        return 0
    fi
    [[ "$SMTP_PORT" =~ ^[0-9]+$ ]] || die "SMTP_PORT must be a number, got '$SMTP_PORT'"
    if port_open "$HOST" "$SMTP_PORT"; then
        die "port $HOST:$SMTP_PORT is taken by another process (set SMTP_PORT)"
    fi
    "$PYTHON" -c 'import aiosmtpd' 2>/dev/null \
        || die "$PYTHON cannot import aiosmtpd (set PYTHON to the project venv's python)"
    mkdir -p "$MAILDIR"
    local t0 pid
    t0=$(now)
    pid=$(pid_start "$PIDFILE" "$LOGFILE" "$PYTHON" -u "$SINK" \
        --host "$HOST" --port "$SMTP_PORT" --maildir "$MAILDIR")
    if ! wait_port "$HOST" "$SMTP_PORT" 15 "$pid"; then
        tail -n 20 "$LOGFILE" >&2 || true
        pid_stop "$PIDFILE" smtp_sink.py 2
        die "the sink did not come up (log: $LOGFILE)"
    fi
    say "up on $HOST:$SMTP_PORT, mail in $MAILDIR (started in $(elapsed "$t0")s, pid $pid, log $LOGFILE)"
}

cmd_down() {
    lock smtp
    pid_down "$PIDFILE" smtp_sink.py 5
}

cmd_status() {
    local n=0
    [[ -d "$MAILDIR" ]] && n=$(find "$MAILDIR" -maxdepth 1 -name '*.eml' ! -name '.*' | wc -l)
    if running; then
        say "running on $HOST:$SMTP_PORT (pid $(pid_read "$PIDFILE")), $n message(s) in $MAILDIR"
        return 0
    fi
    say "stopped, $n message(s) in $MAILDIR"
    return 3
}

cmd_clear() {
    local n=0
    if [[ -d "$MAILDIR" ]]; then
        n=$(find "$MAILDIR" -maxdepth 1 -name '*.eml' ! -name '.*' | wc -l)
        find "$MAILDIR" -maxdepth 1 -type f \( -name '*.eml' -o -name '*.tmp' \) -delete
    fi
    say "cleared $n message(s) from $MAILDIR"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    clear) cmd_clear ;;
    *) usage up down status clear ;;
esac
