# shellcheck shell=bash
# Helpers shared by deploy/local/kafka.sh (one node) and deploy/local/kafka-cluster.sh (three
# nodes). Source it after `set -euo pipefail` and after setting KF_NAME (prefix for messages).
#
# Layout of a node's work dir <W> (made by kf_start_node and friends):
#   <W>/server.properties   rendered from server.properties.tmpl on every start
#   <W>/broker.pid          pid of the java process (written by the process itself)
#   <W>/broker.out          stdout+stderr of the current run (previous run: broker.out.prev)
#   <W>/format.out          output of the last StorageTool format
#   <W>/data                log.dirs (kafka.sh can point it elsewhere with KAFKA_DATA_DIR)
#
# Environment:
#   BACKROOM_CACHE    jar cache root, default ~/.cache/backroom (jars: kafka-<ver>/lib)
#   BACKROOM_RUN_DIR  state root, default <repo root>/.run (git-ignored)
#   JAVA_HOME         optional; otherwise `java` from PATH (Kafka 4.2 needs Java 17+)

KF_NAME=${KF_NAME:-kafka}
KAFKA_VERSION=4.2.2   # keep in step with <kafka.version> in pom.xml

KAFKA_LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BACKROOM_ROOT=$(cd "$KAFKA_LOCAL_DIR/../../.." && pwd)
KAFKA_CACHE_HOME=${BACKROOM_CACHE:-$HOME/.cache/backroom}/kafka-$KAFKA_VERSION
KAFKA_LIB=$KAFKA_CACHE_HOME/lib
KAFKA_FETCH_MARKER=$KAFKA_LIB/.fetch-complete
KAFKA_RUN_ROOT=${BACKROOM_RUN_DIR:-$BACKROOM_ROOT/.run}
case $KAFKA_RUN_ROOT in /*) ;; *) KAFKA_RUN_ROOT=$PWD/$KAFKA_RUN_ROOT ;; esac
KAFKA_JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
KAFKA_LOG4J2=$KAFKA_LOCAL_DIR/log4j2.properties
KAFKA_TEMPLATE=$KAFKA_LOCAL_DIR/server.properties.tmpl
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-120}
KAFKA_STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}

kf_say() { printf '%s: %s\n' "$KF_NAME" "$*"; }
kf_warn() { printf '%s: %s\n' "$KF_NAME" "$*" >&2; }
kf_die() { printf '%s: error: %s\n' "$KF_NAME" "$*" >&2; exit 1; }

# Wall clock in seconds with microseconds (bash 5); LC_NUMERIC may use a comma.
kf_now() { local t=$EPOCHREALTIME; printf '%s' "${t/,/.}"; }
kf_elapsed() { awk -v a="$1" -v b="$(kf_now)" 'BEGIN { printf "%.1f", b - a }'; }

kf_require_java() {
  command -v "$KAFKA_JAVA" >/dev/null 2>&1 || kf_die "java not found ($KAFKA_JAVA); install a JDK 17+ or set JAVA_HOME"
}

# ---------------------------------------------------------------------------------------------
# Jars

kf_pom_hash() { sha256sum "$KAFKA_LOCAL_DIR/pom.xml" | cut -d' ' -f1; }

kf_fetched() {
  [[ -f $KAFKA_FETCH_MARKER && -f $KAFKA_LIB/kafka_2.13-$KAFKA_VERSION.jar ]] &&
    [[ $(<"$KAFKA_FETCH_MARKER") == "$(kf_pom_hash)" ]]
}

# Copy the broker's runtime jars into $KAFKA_LIB once. The marker (holding the pom's hash) is
# written only after mvn succeeded, so an interrupted download, or a changed pom, is redone
# from scratch. A lock keeps concurrent callers (kafka.sh and kafka-cluster.sh) apart.
kf_fetch() {
  kf_fetched && return 0
  command -v mvn >/dev/null 2>&1 || kf_die "mvn not found; install Maven (apt-get install maven)"
  mkdir -p "$KAFKA_CACHE_HOME"
  local lock_fd
  exec {lock_fd}>"$KAFKA_CACHE_HOME/.fetch.lock"
  flock "$lock_fd"
  if ! kf_fetched; then
    local t0 n
    t0=$(kf_now)
    kf_say "fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIB"
    rm -rf "$KAFKA_LIB"
    # Output goes to a log shown only on failure (Maven 3.8 prints stray ANSI resets even with -B -q).
    if ! mvn -B -q -f "$KAFKA_LOCAL_DIR/pom.xml" package \
        -Dkafka.version="$KAFKA_VERSION" -Dkafka.lib.dir="$KAFKA_LIB" >"$KAFKA_CACHE_HOME/fetch.log" 2>&1; then
      cat "$KAFKA_CACHE_HOME/fetch.log" >&2
      exec {lock_fd}>&-
      kf_die "mvn failed (output above, also in $KAFKA_CACHE_HOME/fetch.log); nothing cached, re-run to retry"
    fi
    [[ -f $KAFKA_LIB/kafka_2.13-$KAFKA_VERSION.jar ]] ||
      { exec {lock_fd}>&-; kf_die "mvn succeeded but $KAFKA_LIB/kafka_2.13-$KAFKA_VERSION.jar is missing"; }
    kf_pom_hash >"$KAFKA_FETCH_MARKER"
    n=$(find "$KAFKA_LIB" -maxdepth 1 -name '*.jar' | wc -l)
    kf_say "fetched $n jars in $(kf_elapsed "$t0")s"
  fi
  exec {lock_fd}>&-
}

# ---------------------------------------------------------------------------------------------
# Config, cluster id, formatting

# Cluster id: url-safe base64 of 16 random bytes, no padding (22 chars), like
# Uuid.randomUuid(). Like Kafka we reject ids starting with "-": StorageTool would parse
# `-t -abc...` as an option. (The all-zero and metadata-topic ids are astronomically unlikely.)
kf_new_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ ${#id} -eq 22 && $id != -* ]] && break
  done
  printf '%s\n' "$id"
}

# ---------------------------------------------------------------------------------------------
# Principals (ADR 0007): one SCRAM credential each, the storage formatted with all of them.

# As libs/kit/kafka_acl.py PRINCIPALS.
KAFKA_PRINCIPALS=(admin catalog inventory pricing orders payments notifications subscriber)
# Per checkout (like .run/dev-pg-passwords), whatever BACKROOM_RUN_DIR says: the services read it there.
KAFKA_PW_DIR=${BACKROOM_DEV_KAFKA_PASSWORD_DIR:-$BACKROOM_ROOT/.run/dev-kafka-passwords}

# kf_password PRINCIPAL: its development password, created once (random hex, mode 0600,
# published with a hard link that never replaces an existing file: the same file and format
# libs/kit/settings.py load_dev_kafka_password makes).
kf_password() {
  local file=$KAFKA_PW_DIR/$1 draft
  if [[ ! -s $file ]]; then
    mkdir -p "$KAFKA_PW_DIR"
    chmod 700 "$KAFKA_PW_DIR"
    draft=$KAFKA_PW_DIR/.$1.$$.$RANDOM
    (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$draft" && echo >>"$draft")
    ln "$draft" "$file" 2>/dev/null || true  # another process won: use its file
    rm -f "$draft"
  fi
  tr -d '[:space:]' <"$file"
}

# Fingerprint of every principal's password: stored beside a formatted data dir, so storage
# formatted with other credentials (or none: before ADR 0007) is found and formatted afresh.
kf_credentials_hash() {
  local p
  for p in "${KAFKA_PRINCIPALS[@]}"; do printf '%s=%s\n' "$p" "$(kf_password "$p")"; done |
    sha256sum | cut -d' ' -f1
}

# kf_reformat_if_stale DATA_DIR: remove a formatted DATA_DIR whose credentials differ (local
# development data only: topics are created again by `backroom topics`).
kf_reformat_if_stale() {
  local data=$1
  [[ -f $data/meta.properties ]] || return 0
  [[ -f $data/backroom-credentials && $(<"$data/backroom-credentials") == "$(kf_credentials_hash)" ]] && return 0
  kf_say "$data was formatted without this checkout's Kafka credentials; formatting it afresh"
  rm -rf -- "$data"
}

# kf_render_config OUT NODE_ID PORT CONTROLLER_PORT VOTERS LOG_DIRS REPLICATION MIN_ISR DEDUPE
kf_render_config() {
  local out=$1 text
  text=$(<"$KAFKA_TEMPLATE")
  text=${text//@ADMIN_PASSWORD@/$(kf_password admin)}
  text=${text//@NODE_ID@/$2}
  text=${text//@PORT@/$3}
  text=${text//@CONTROLLER_PORT@/$4}
  text=${text//@VOTERS@/$5}
  text=${text//@LOG_DIRS@/$6}
  text=${text//@REPLICATION@/$7}
  text=${text//@MIN_ISR@/$8}
  text=${text//@DEDUPE_BUFFER@/$9}
  if [[ $text =~ @[A-Z_]+@ ]]; then
    kf_die "unfilled placeholder ${BASH_REMATCH[0]} in $KAFKA_TEMPLATE"
  fi
  (umask 077 && printf '%s\n' "$text" >"$out.tmp")  # holds the admin password
  mv -f "$out.tmp" "$out"
}

# Cluster id recorded in a formatted data dir (empty if not formatted).
kf_meta_cluster_id() {
  local meta=$1/meta.properties
  [[ -f $meta ]] || return 0
  sed -n 's/^cluster\.id=//p' "$meta"
}

# kf_format WORKDIR DATA_DIR CLUSTER_ID: format DATA_DIR unless it already has meta.properties.
# Static quorum: no --standalone / --initial-controllers flag.
kf_format() {
  local w=$1 data=$2 cid=$3 t0 p
  local -a scram=()
  [[ -f $data/meta.properties ]] && return 0
  mkdir -p "$data"
  t0=$(kf_now)
  for p in "${KAFKA_PRINCIPALS[@]}"; do
    scram+=(--add-scram "SCRAM-SHA-256=[name=$p,password=$(kf_password "$p")]")
  done
  if ! "$KAFKA_JAVA" -Xmx256m -Dlog4j2.configurationFile="$KAFKA_LOG4J2" -cp "$KAFKA_LIB/*" \
      kafka.tools.StorageTool format -t "$cid" -c "$w/server.properties" "${scram[@]}" >"$w/format.out" 2>&1; then
    cat "$w/format.out" >&2
    kf_die "formatting $data failed (output above, also in $w/format.out)"
  fi
  kf_credentials_hash >"$data/backroom-credentials"
  kf_say "formatted $data (cluster id $cid) in $(kf_elapsed "$t0")s"
}

# ---------------------------------------------------------------------------------------------
# Processes and ports

# True if something accepts TCP connections on 127.0.0.1:PORT.
# shellcheck disable=SC2016
kf_port_open() {
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# Print the pid recorded in WORKDIR/broker.pid if that process is alive and is the broker we
# started there (guards against pid reuse); otherwise remove a stale pid file and return 1.
kf_running_pid() {
  local w=$1 pid cmd
  [[ -s $w/broker.pid ]] || return 1
  pid=$(<"$w/broker.pid")
  if [[ $pid =~ ^[0-9]+$ ]] && kf_alive "$pid"; then
    if [[ -r /proc/$pid/cmdline ]]; then
      cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
    else
      cmd=$(ps -o args= -p "$pid" 2>/dev/null || true)
    fi
    if [[ $cmd == *kafka.Kafka* && $cmd == *"$w/server.properties"* ]]; then
      printf '%s\n' "$pid"
      return 0
    fi
  fi
  rm -f "$w/broker.pid"
  return 1
}

# Broker port a running node was started with (from its rendered config).
kf_config_port() {
  sed -n 's|^listeners=CLIENT://[^:]*:\([0-9]*\),.*|\1|p' "$1/server.properties" 2>/dev/null
}

# kf_check_ports_free PORT...: fail if any port already answers on loopback.
kf_check_ports_free() {
  local p
  for p in "$@"; do
    if kf_port_open "$p"; then
      kf_die "127.0.0.1:$p is already in use by a process this script did not start; stop it or choose other ports (see --help)"
    fi
  done
}

# kf_lock DIR: serialise up/down/kill/reset on DIR (two `up`s at once would both find the ports
# free and start two brokers on one data dir). Held until the script exits; kf_start_node
# keeps the lock fd out of the broker.
KF_LOCK_FD=
kf_lock() {
  mkdir -p "$1"
  exec {KF_LOCK_FD}>"$1/.lock"
  flock -w $((KAFKA_START_TIMEOUT + 60)) "$KF_LOCK_FD" ||
    kf_die "timed out waiting for another $KF_NAME command holding $1/.lock"
}

# The broker's JVM flags. On a 2-core development machine the JIT is most of an idle broker's CPU
# for minutes after a start (C2 compiler threads; measured with per-thread /proc times, issue 10)
# and G1's concurrent threads compete with the services: C1 alone and the serial collector cost
# less there. A production broker is not started by these scripts.
KAFKA_JVM_FLAGS=${KAFKA_JVM_FLAGS:--XX:TieredStopAtLevel=1 -XX:+UseSerialGC}

# kf_start_node WORKDIR HEAP_OPTS: launch the broker in its own session so it outlives the
# calling shell. The process writes its own pid (then execs java), which stays correct even
# if setsid has to fork; it also closes the lock fd so the broker does not hold the lock.
kf_start_node() {
  local w=$1 heap=$2 i
  local -a heap_opts jvm_opts
  read -r -a heap_opts <<<"$heap"
  read -r -a jvm_opts <<<"$KAFKA_JVM_FLAGS"
  rm -f "$w/broker.pid"
  [[ -f $w/broker.out ]] && mv -f "$w/broker.out" "$w/broker.out.prev"
  # shellcheck disable=SC2016
  setsid nohup bash -c 'echo $$ >"$1"; [[ -n $2 ]] && eval "exec $2>&-"; shift 2; exec "$@"' \
    _ "$w/broker.pid" "$KF_LOCK_FD" \
    "$KAFKA_JAVA" "${heap_opts[@]}" "${jvm_opts[@]}" -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_LOG4J2" \
    -cp "$KAFKA_LIB/*" kafka.Kafka "$w/server.properties" \
    </dev/null >"$w/broker.out" 2>&1 &
  for ((i = 0; i < 100; i++)); do
    [[ -s $w/broker.pid ]] && return 0
    sleep 0.05
  done
  kf_die "broker in $w did not record its pid"
}

kf_is_started() { grep -q 'Kafka Server started' "$1/broker.out" 2>/dev/null; }

# True if PID exists and is not a zombie (a broker started by this very script run is our
# child until the script exits, so a crashed one lingers as a zombie that kill -0 still sees).
kf_alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

kf_pid_alive() {
  [[ -s $1/broker.pid ]] || return 1
  kf_alive "$(<"$1/broker.pid")"
}

# kf_wait_started DEADLINE_EPOCH WORKDIR...: wait until every node logged "Kafka Server
# started". Returns 1 (after printing the log tail) if a node died, 2 on timeout.
kf_wait_started() {
  local deadline=$1 w pending
  shift
  while :; do
    pending=0
    for w in "$@"; do
      kf_is_started "$w" && continue
      if ! kf_pid_alive "$w"; then
        kf_warn "broker in $w exited during startup; last lines of $w/broker.out:"
        tail -n 30 "$w/broker.out" >&2 || true
        rm -f "$w/broker.pid"
        return 1
      fi
      pending=1
    done
    ((pending)) || return 0
    if awk -v now="$(kf_now)" -v d="$deadline" 'BEGIN { exit !(now > d) }'; then
      for w in "$@"; do
        kf_is_started "$w" || kf_warn "broker in $w not started after ${KAFKA_START_TIMEOUT}s; see $w/broker.out"
      done
      return 2
    fi
    sleep 0.2
  done
}

kf_deadline() { awk -v now="$(kf_now)" -v t="$1" 'BEGIN { printf "%.6f", now + t }'; }

# kf_stop_nodes SIGNAL WORKDIR...: send SIGNAL (TERM or KILL) to every running node at once,
# wait up to KAFKA_STOP_TIMEOUT s, SIGKILL what is left, remove pid files. Safe when nothing
# runs. The pids that were running are left in KF_STOPPED_PIDS (node dirs in KF_STOPPED_DIRS).
kf_stop_nodes() {
  local sig=$1 w pid i alive deadline
  shift
  KF_STOPPED_PIDS=()
  KF_STOPPED_DIRS=()
  local -a dirs=() pids=()
  for w in "$@"; do
    if pid=$(kf_running_pid "$w"); then
      dirs+=("$w")
      pids+=("$pid")
      kill -"$sig" "$pid" 2>/dev/null || true
    fi
  done
  ((${#pids[@]})) || return 0
  deadline=$(kf_deadline "$KAFKA_STOP_TIMEOUT")
  while :; do
    alive=0
    for pid in "${pids[@]}"; do kf_alive "$pid" && alive=1; done
    ((alive)) || break
    if awk -v now="$(kf_now)" -v d="$deadline" 'BEGIN { exit !(now > d) }'; then
      for i in "${!pids[@]}"; do
        if kf_alive "${pids[i]}"; then
          kf_warn "pid ${pids[i]} (${dirs[i]}) still alive after ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
          kill -KILL "${pids[i]}" 2>/dev/null || true
        fi
      done
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  # Dead but possibly still a zombie for a moment; give its parent (init) time to reap it so
  # that `pgrep java` right after `down` shows nothing.
  for ((i = 0; i < 20; i++)); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for i in "${!dirs[@]}"; do
    rm -f "${dirs[i]}/broker.pid"
    KF_STOPPED_PIDS+=("${pids[i]}")
    KF_STOPPED_DIRS+=("${dirs[i]}")
  done
}
