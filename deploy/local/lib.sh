# shellcheck shell=bash
# Shared helpers for the deploy/local/*.sh scripts. Source it, don't run it:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# It sets no shell options of its own; callers use `set -euo pipefail`.

[[ -n "${_BACKROOM_LIB_SH:-}" ]] && return 0
_BACKROOM_LIB_SH=1

LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd "$LOCAL_DIR/../.." && pwd -P)
RUN_DIR=${BACKROOM_RUN_DIR:-$REPO_ROOT/.run}
export DEBIAN_FRONTEND=noninteractive
# Local services run in development mode: they accept HS256 tokens signed with this checkout's
# generated secret ($REPO_ROOT/.run/dev-jwt-secret, made on first use; `backroom token` mints
# with it), never a secret written in the repository. Elsewhere they need an identity provider.
export BACKROOM_ENV=${BACKROOM_ENV:-dev}

# say MSG... / warn MSG... / die MSG...   (prefixed with the calling script's component name)
SAY_PREFIX=${SAY_PREFIX:-$(basename "$0" .sh)}
say()  { printf '%s: %s\n' "$SAY_PREFIX" "$*"; }
warn() { printf '%s: WARNING: %s\n' "$SAY_PREFIX" "$*" >&2; }
die()  { printf '%s: ERROR: %s\n' "$SAY_PREFIX" "$*" >&2; exit 1; }

# now: seconds since the epoch with microseconds; elapsed START: "X.X" seconds since START.
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# short_hash STRING: 10 hex chars, stable for the same string.
short_hash() { printf '%s' "$1" | sha256sum | cut -c1-10; }

# port_open HOST PORT: true if something accepts TCP connections there.
# shellcheck disable=SC2016  # $1/$2 expand in the inner bash
port_open() { timeout 1 bash -c ': >"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null; }

# wait_port HOST PORT TIMEOUT_S [PID]: wait until HOST:PORT accepts connections.
# If PID is given and that process dies meanwhile, give up at once.
wait_port() {
    local host=$1 port=$2 timeout_s=$3 pid=${4:-} deadline
    deadline=$(awk -v n="$(now)" -v t="$timeout_s" 'BEGIN { printf "%.6f", n + t }')
    until port_open "$host" "$port"; do
        if [[ -n "$pid" ]] && ! proc_running "$pid"; then
            return 1
        fi
        if awk -v n="$(now)" -v d="$deadline" 'BEGIN { exit !(n > d) }'; then
            return 1
        fi
        sleep 0.05
    done
}

# have_bin BINARY: a command name on PATH, or an executable absolute path.
have_bin() {
    if [[ "$1" == /* ]]; then [[ -x "$1" ]]; else command -v "$1" >/dev/null 2>&1; fi
}

# ensure_apt_pkg BINARY PACKAGE...: apt-get install the packages when BINARY is missing.
ensure_apt_pkg() {
    local bin=$1; shift
    if have_bin "$bin"; then return 0; fi
    say "$bin not found; installing $* from apt"
    [[ $(id -u) -eq 0 ]] || die "need root to apt-get install $*"
    # Lock::Timeout: wait for a concurrent apt/dpkg (e.g. another script's install) instead of
    # failing on the dpkg lock.
    local opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
    apt-get "${opts[@]}" update -qq
    apt-get "${opts[@]}" install -y -qq --no-install-recommends "$@"
    have_bin "$bin" || die "installed $* but $bin is still missing"
}

# proc_running PID: true if PID exists and is not a zombie (PID 1 here may not reap orphans,
# and `kill -0` succeeds on a zombie).
proc_running() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# pid_read PIDFILE: print the pid recorded there (nothing if the file is missing or junk).
pid_read() {
    local pid=""
    if [[ -f "$1" ]]; then read -r pid <"$1" || true; fi
    [[ "$pid" =~ ^[0-9]+$ ]] && printf '%s' "$pid"
    return 0
}

# pid_alive PIDFILE [CMDLINE_SUBSTRING]: true if the recorded process runs (and, when given,
# its command line contains the substring, which guards against a recycled pid).
pid_alive() {
    local pid want=${2:-}
    pid=$(pid_read "$1")
    [[ -n "$pid" ]] && proc_running "$pid" || return 1
    [[ -z "$want" ]] && return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$want"
}

# pid_start PIDFILE LOGFILE CMD...: run CMD detached (own session, immune to the caller's
# hang-up), output appended to LOGFILE, its pid recorded in PIDFILE. Prints the pid.
pid_start() {
    local pidfile=$1 logfile=$2; shift 2
    mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
    # Not through `unlocked`: `$!` must be the daemon itself (setsid and nohup exec, so it is),
    # not a subshell running a function.
    if [[ -n "${_BACKROOM_LOCK_FD:-}" ]]; then
        setsid nohup "$@" >>"$logfile" 2>&1 </dev/null {_BACKROOM_LOCK_FD}>&- &
    else
        setsid nohup "$@" >>"$logfile" 2>&1 </dev/null &
    fi
    local pid=$!
    printf '%s\n' "$pid" >"$pidfile"
    printf '%s' "$pid"
}

# pid_stop PIDFILE [CMDLINE_SUBSTRING] [TIMEOUT_S=10]: SIGTERM the recorded process, wait,
# SIGKILL it if it is still there after the timeout; remove the pid file. Only ever signals
# the pid in PIDFILE, and only if pid_alive agrees it is ours.
pid_stop() {
    local pidfile=$1 want=${2:-} timeout_s=${3:-10} pid i
    pid=$(pid_read "$pidfile")
    if [[ -z "$pid" ]] || ! pid_alive "$pidfile" "$want"; then
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout_s * 20; i++)); do
        proc_running "$pid" || break
        sleep 0.05
    done
    if proc_running "$pid"; then
        warn "pid $pid ignored SIGTERM for ${timeout_s}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# pid_down PIDFILE CMDLINE_SUBSTRING TIMEOUT_S: a daemon's `down`: stop the recorded process
# (pid_stop) and say what happened ("not running" / "stopped (pid N)").
pid_down() {
    local pid
    if ! pid_alive "$1" "$2"; then
        rm -f "$1"
        say "not running"
        return 0
    fi
    pid=$(pid_read "$1")
    pid_stop "$1" "$2" "$3"
    say "stopped (pid $pid)"
}

# lock NAME: hold an exclusive lock on $RUN_DIR/NAME.lock until the calling script exits, so
# two concurrent `up`s of the same component don't race (waits up to 120 s).
# Daemons must not inherit the lock's fd (they would hold the lock forever): start them
# through `unlocked` (pid_start closes it itself).
lock() {
    [[ -n "${_BACKROOM_LOCK_FD:-}" ]] && return 0
    mkdir -p "$RUN_DIR"
    exec {_BACKROOM_LOCK_FD}>"$RUN_DIR/$1.lock"
    flock -w 120 "$_BACKROOM_LOCK_FD" || die "timed out waiting for $RUN_DIR/$1.lock"
}

# unlocked CMD...: run CMD without the lock fd (see lock).
unlocked() {
    if [[ -n "${_BACKROOM_LOCK_FD:-}" ]]; then
        "$@" {_BACKROOM_LOCK_FD}>&-
    else
        "$@"
    fi
}

# usage CMD...: the standard "usage" failure.
usage() { die "usage: $(basename "$0") $(IFS='|'; echo "$*")"; }
