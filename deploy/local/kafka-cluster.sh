#!/usr/bin/env bash
# Three-node Kafka 4.2 KRaft cluster on one machine (each node broker+controller, static quorum
# 1@127.0.0.1:C1,2@127.0.0.1:C2,3@127.0.0.1:C3) for replication and fault tests. No Docker.
#
#   deploy/local/kafka-cluster.sh up       fetch if needed, format once, start all, wait for all three
#   deploy/local/kafka-cluster.sh down     SIGTERM all nodes, wait up to 30 s, then SIGKILL
#   deploy/local/kafka-cluster.sh status   one line per node (exit 0 if all three run, else 3)
#   deploy/local/kafka-cluster.sh kill N   SIGKILL node N (1..3)
#   deploy/local/kafka-cluster.sh start N  start node N again and wait until it is ready
#   deploy/local/kafka-cluster.sh reset    down, then delete all node data (next up formats afresh)
#
# Ports: KAFKA_CLUSTER_BASE_PORT (29092); node N listens on base+2*(N-1) (broker) and
# base+2*(N-1)+1 (controller): 29092/29093, 29094/29095, 29096/29097.
# Bootstrap: 127.0.0.1:29092,127.0.0.1:29094,127.0.0.1:29096. SASL/SCRAM and ACLs as kafka.sh
# (the same principals and passwords).
# State: <run dir>/kafka-cluster/node{1,2,3} and cluster.id (the shared cluster id).
# Other environment as for kafka.sh: BACKROOM_RUN_DIR, BACKROOM_CACHE, KAFKA_START_TIMEOUT,
# KAFKA_STOP_TIMEOUT, JAVA_HOME.
set -euo pipefail

KF_NAME=kafka-cluster
# shellcheck source=kafka/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/kafka/lib.sh"

BASE=${KAFKA_CLUSTER_BASE_PORT:-29092}
[[ $BASE =~ ^[0-9]+$ ]] || kf_die "KAFKA_CLUSTER_BASE_PORT must be a number"
CWORK=$KAFKA_RUN_ROOT/kafka-cluster
NODES=(1 2 3)
HEAP="-Xms256m -Xmx512m"

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

node_dir() { printf '%s/node%s' "$CWORK" "$1"; }
node_port() { echo $((BASE + 2 * ($1 - 1))); }
node_cport() { echo $((BASE + 2 * ($1 - 1) + 1)); }

voters() {
  local n out=()
  for n in "${NODES[@]}"; do out+=("$n@127.0.0.1:$(node_cport "$n")"); done
  (IFS=,; printf '%s' "${out[*]}")
}

bootstrap() {
  local n out=()
  for n in "${NODES[@]}"; do out+=("127.0.0.1:$(node_port "$n")"); done
  (IFS=,; printf '%s' "${out[*]}")
}

check_node_arg() {
  [[ ${1:-} =~ ^[123]$ ]] || kf_die "expected a node number 1, 2 or 3 (got '${1:-}')"
}

# The one cluster id shared by all nodes: cluster.id if present, else taken from any formatted
# node, else new. Nodes formatted with another id are an error (run reset).
cluster_id() {
  local n cid="" other
  if [[ -s $CWORK/cluster.id ]]; then
    cid=$(<"$CWORK/cluster.id")
  else
    for n in "${NODES[@]}"; do
      cid=$(kf_meta_cluster_id "$(node_dir "$n")/data")
      [[ -n $cid ]] && break
    done
    [[ -n $cid ]] || cid=$(kf_new_cluster_id)
    mkdir -p "$CWORK"
    printf '%s\n' "$cid" >"$CWORK/cluster.id"
  fi
  for n in "${NODES[@]}"; do
    other=$(kf_meta_cluster_id "$(node_dir "$n")/data")
    if [[ -n $other && $other != "$cid" ]]; then
      kf_die "node $n was formatted for cluster $other, not $cid; run: $0 reset"
    fi
  done
  printf '%s\n' "$cid"
}

# Render config and format (if needed) for node N, which must not be running (ports checked).
prepare_node() {
  local n=$1 cid=$2 w
  w=$(node_dir "$n")
  mkdir -p "$w"
  kf_render_config "$w/server.properties" "$n" "$(node_port "$n")" "$(node_cport "$n")" \
    "$(voters)" "$w/data" 3 2 16777216
  kf_reformat_if_stale "$w/data"
  kf_format "$w" "$w/data" "$cid"
}

# Start the given nodes (not running, prepared) and wait for them; on failure stop them again.
start_and_wait() {
  local t0 n rc=0
  local -a dirs=()
  t0=$(kf_now)
  for n in "$@"; do
    kf_start_node "$(node_dir "$n")" "$HEAP"
    dirs+=("$(node_dir "$n")")
  done
  kf_wait_started "$(kf_deadline "$KAFKA_START_TIMEOUT")" "${dirs[@]}" || rc=$?
  if ((rc != 0)); then
    kf_stop_nodes TERM "${dirs[@]}"
    kf_die "start failed; stopped the node(s) started now (logs: ${dirs[*]/%//broker.out})"
  fi
  STARTED_IN=$(kf_elapsed "$t0")
}

cmd_up() {
  local n cid pid rc=0
  local -a to_start=() running=()
  kf_require_java
  kf_fetch
  mkdir -p "$CWORK"
  cid=$(cluster_id)
  for n in "${NODES[@]}"; do
    if pid=$(kf_running_pid "$(node_dir "$n")"); then
      running+=("$(node_dir "$n")")
    else
      kf_check_ports_free "$(node_port "$n")" "$(node_cport "$n")"
      to_start+=("$n")
    fi
  done
  for n in "${to_start[@]}"; do prepare_node "$n" "$cid"; done
  if ((${#to_start[@]} == 0)); then
    # All ours already; make sure they finished starting.
    kf_wait_started "$(kf_deadline "$KAFKA_START_TIMEOUT")" "${running[@]}" || rc=$?
    ((rc == 0)) || kf_die "cluster not ready; see broker.out under $CWORK (try: $0 down)"
    kf_say "already up on $(bootstrap)"
    return 0
  fi
  start_and_wait "${to_start[@]}"
  if ((${#running[@]})); then
    kf_wait_started "$(kf_deadline "$KAFKA_START_TIMEOUT")" "${running[@]}" || rc=$?
    ((rc == 0)) || kf_die "cluster not ready; see broker.out under $CWORK (try: $0 down)"
  fi
  kf_say "up on $(bootstrap) (node(s) ${to_start[*]} started in ${STARTED_IN}s)"
}

cmd_start() {
  local n=$1 pid w cid rc=0
  check_node_arg "$n"
  kf_require_java
  kf_fetch
  w=$(node_dir "$n")
  if pid=$(kf_running_pid "$w"); then
    kf_wait_started "$(kf_deadline "$KAFKA_START_TIMEOUT")" "$w" || rc=$?
    ((rc == 0)) || kf_die "node $n (pid $pid) did not become ready; see $w/broker.out"
    kf_say "node $n already up on 127.0.0.1:$(node_port "$n") (pid $pid)"
    return 0
  fi
  kf_check_ports_free "$(node_port "$n")" "$(node_cport "$n")"
  cid=$(cluster_id)
  prepare_node "$n" "$cid"
  start_and_wait "$n"
  kf_say "node $n up on 127.0.0.1:$(node_port "$n") (started in ${STARTED_IN}s)"
}

all_dirs() {
  local n
  for n in "${NODES[@]}"; do node_dir "$n"; echo; done
}

cmd_down() {
  local t0
  local -a dirs
  mapfile -t dirs < <(all_dirs)
  t0=$(kf_now)
  kf_stop_nodes TERM "${dirs[@]}"
  if ((${#KF_STOPPED_PIDS[@]})); then
    kf_say "stopped ${#KF_STOPPED_PIDS[@]} node(s) (pids ${KF_STOPPED_PIDS[*]}) in $(kf_elapsed "$t0")s"
  else
    kf_say "not running"
  fi
}

cmd_kill() {
  local n=$1
  check_node_arg "$n"
  kf_stop_nodes KILL "$(node_dir "$n")"
  if ((${#KF_STOPPED_PIDS[@]})); then
    kf_say "node $n killed (SIGKILL, pid ${KF_STOPPED_PIDS[0]})"
  else
    kf_say "node $n not running"
  fi
}

cmd_status() {
  local n pid w state all=0
  for n in "${NODES[@]}"; do
    w=$(node_dir "$n")
    if pid=$(kf_running_pid "$w"); then
      state=running
      kf_is_started "$w" || state=starting
      [[ $state == running ]] && all=$((all + 1))
      printf 'kafka-cluster node %s: %s pid %s port %s\n' "$n" "$state" "$pid" "$(node_port "$n")"
    else
      printf 'kafka-cluster node %s: stopped port %s\n' "$n" "$(node_port "$n")"
    fi
  done
  ((all == ${#NODES[@]})) || return 3
}

cmd_reset() {
  local n w
  cmd_down
  for n in "${NODES[@]}"; do
    w=$(node_dir "$n")
    if [[ -e $w/data ]]; then
      rm -rf -- "$w/data"
      kf_say "removed $w/data"
    fi
  done
  rm -f "$CWORK/cluster.id"
}

case ${1:-} in
  up) kf_lock "$CWORK"; cmd_up ;;
  down | stop) kf_lock "$CWORK"; cmd_down ;;
  status) cmd_status ;;
  kill) kf_lock "$CWORK"; cmd_kill "${2:-}" ;;
  start) kf_lock "$CWORK"; cmd_start "${2:-}" ;;
  reset) kf_lock "$CWORK"; cmd_reset ;;
  fetch) kf_fetch; kf_fetched && kf_say "jars ready in $KAFKA_LIB" ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
