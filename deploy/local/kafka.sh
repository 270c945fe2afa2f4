#!/usr/bin/env bash
# Single-node Kafka 4.2 (KRaft, combined broker+controller, static quorum) on 127.0.0.1 for
# local development. No Docker: the broker runs from Maven Central jars cached outside git.
#
#   deploy/local/kafka.sh fetch        download the jars once (mvn; ~/.cache/backroom/kafka-<ver>/lib)
#   deploy/local/kafka.sh up|start     fetch if needed, format storage once, start, wait until ready
#   deploy/local/kafka.sh down         SIGTERM, wait up to 30 s, then SIGKILL
#   deploy/local/kafka.sh status       one line: running/stopped, pid, port (exit 0 running, 3 stopped)
#   deploy/local/kafka.sh kill         SIGKILL the broker (fault tests)
#   deploy/local/kafka.sh reset        down, then delete the data dir (next up formats afresh)
#
# Every client authenticates (SASL/SCRAM-SHA-256) and is authorized by ACLs (ADR 0007): the
# storage is formatted with the credentials of admin, the six services and subscriber
# (<run dir>/dev-kafka-passwords/<principal>, generated once), and formatted afresh when they
# change. `backroom topics` then creates the topics and the ACLs.
#
# Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_DATA_DIR
# (<run dir>/kafka/data), BACKROOM_RUN_DIR (<repo>/.run), BACKROOM_CACHE (~/.cache/backroom),
# KAFKA_START_TIMEOUT (120), KAFKA_STOP_TIMEOUT (30), JAVA_HOME.
# State (config, pid, broker.out, data) lives in <run dir>/kafka.
set -euo pipefail

KF_NAME=kafka
# shellcheck source=kafka/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/kafka/lib.sh"

PORT=${KAFKA_PORT:-9092}
CPORT=${KAFKA_CONTROLLER_PORT:-9093}
WORK=$KAFKA_RUN_ROOT/kafka
DATA=${KAFKA_DATA_DIR:-$WORK/data}
case $DATA in /*) ;; *) DATA=$PWD/$DATA ;; esac
HEAP="-Xms512m -Xmx1g"

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

report_up() { # PID PORT [ELAPSED]
  if [[ -n ${3:-} ]]; then
    kf_say "up on 127.0.0.1:$2 (started in ${3}s)"
  else
    kf_say "already up on 127.0.0.1:$2 (pid $1)"
  fi
}

cmd_up() {
  local pid port t0 rc=0
  kf_require_java
  kf_fetch
  mkdir -p "$WORK"
  if pid=$(kf_running_pid "$WORK"); then
    port=$(kf_config_port "$WORK")
    [[ $port == "$PORT" ]] || kf_warn "note: the running broker uses port $port, not $PORT; run down first to change ports"
    if kf_is_started "$WORK" && kf_port_open "$port"; then
      report_up "$pid" "$port"
      return 0
    fi
    # Ours but not ready yet (another `up` is still waiting, or it is wedged): wait for it.
    kf_say "broker (pid $pid) is starting; waiting"
    kf_wait_started "$(kf_deadline "$KAFKA_START_TIMEOUT")" "$WORK" || rc=$?
    ((rc == 0)) || kf_die "broker (pid $pid) did not become ready; see $WORK/broker.out (try: $0 down)"
    report_up "$pid" "$port"
    return 0
  fi
  kf_check_ports_free "$PORT" "$CPORT"
  kf_render_config "$WORK/server.properties" 1 "$PORT" "$CPORT" "1@127.0.0.1:$CPORT" "$DATA" 1 1 33554432
  kf_reformat_if_stale "$DATA"
  if [[ ! -f $DATA/meta.properties ]]; then
    kf_format "$WORK" "$DATA" "$(kf_new_cluster_id)"
  fi
  t0=$(kf_now)
  kf_start_node "$WORK" "$HEAP"
  kf_wait_started "$(kf_deadline "$KAFKA_START_TIMEOUT")" "$WORK" || rc=$?
  case $rc in
    0) report_up "$(<"$WORK/broker.pid")" "$PORT" "$(kf_elapsed "$t0")" ;;
    1) kf_die "broker exited during startup (log: $WORK/broker.out)" ;;
    *) kf_stop_nodes TERM "$WORK"
       kf_die "broker not ready after ${KAFKA_START_TIMEOUT}s; stopped it (log: $WORK/broker.out)" ;;
  esac
}

cmd_down() {
  local t0
  t0=$(kf_now)
  kf_stop_nodes TERM "$WORK"
  if ((${#KF_STOPPED_PIDS[@]})); then
    kf_say "stopped (pid ${KF_STOPPED_PIDS[0]}) in $(kf_elapsed "$t0")s"
  else
    kf_say "not running"
  fi
}

cmd_kill() {
  kf_stop_nodes KILL "$WORK"
  if ((${#KF_STOPPED_PIDS[@]})); then
    kf_say "killed (SIGKILL, pid ${KF_STOPPED_PIDS[0]})"
  else
    kf_say "not running"
  fi
}

cmd_status() {
  local pid port
  if pid=$(kf_running_pid "$WORK"); then
    port=$(kf_config_port "$WORK")
    if kf_is_started "$WORK"; then
      printf 'kafka: running pid %s port %s\n' "$pid" "$port"
    else
      printf 'kafka: starting pid %s port %s\n' "$pid" "$port"
    fi
    return 0
  fi
  printf 'kafka: stopped port %s\n' "$PORT"
  return 3
}

cmd_reset() {
  # Refuse to wipe a directory that does not look like a Kafka data dir we own.
  if [[ -e $DATA && ! -f $DATA/meta.properties && $DATA != "$WORK"/* ]]; then
    kf_die "refusing to remove $DATA: it has no meta.properties and is outside $WORK"
  fi
  cmd_down
  if [[ -e $DATA ]]; then
    rm -rf -- "$DATA"
    kf_say "removed $DATA"
  else
    kf_say "no data at $DATA"
  fi
}

case ${1:-} in
  fetch) kf_fetch; kf_fetched && kf_say "jars ready in $KAFKA_LIB" ;;
  up | start) kf_lock "$WORK"; cmd_up ;;
  down | stop) kf_lock "$WORK"; cmd_down ;;
  status) cmd_status ;;
  kill) kf_lock "$WORK"; cmd_kill ;;
  reset) kf_lock "$WORK"; cmd_reset ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
