#!/usr/bin/env bash
# The compose `kafka` container's entrypoint (docker-compose.yml mounts it into apache/kafka):
# the same security as deploy/local/kafka/server.properties.tmpl (ADR 0007) on one KRaft node.
#
#  1. Renders server.properties from the container's KAFKA_* variables (the image's own naming:
#     KAFKA_ dropped, lower case, `_` -> `.`, `__` -> `_`, `___` -> `-`), plus what holds the
#     admin password, which compose never sees in a KAFKA_* value: the broker's own SASL login
#     on every listener (SCRAM as admin on the broker listeners, for replication; PLAIN on the
#     controller listener, where admin is the one user defined, as in the local template).
#  2. Writes admin.properties beside it: the admin principal's client settings, for the
#     healthcheck and for operators (`docker compose exec kafka /opt/kafka/bin/kafka-topics.sh
#     --bootstrap-server kafka:9092 --command-config /opt/kafka/config/admin.properties --list`).
#  3. On the first start only (empty data volume), formats the storage with one SCRAM-SHA-256
#     credential per principal (admin, the six services, subscriber: libs/kit/kafka_acl.py
#     PRINCIPALS), each password from BACKROOM_KAFKA_PASSWORD_<PRINCIPAL>, so every principal
#     exists before anyone authenticates. Later starts keep the storage (--ignore-formatted) and
#     refuse to run with other passwords than it was formatted with: they would not log in.
#  4. Execs the broker.
#
# The passwords come from the operator (.env, deploy/compose/README.md); none is written here.
# Hex or similar (letters, digits, . _ ~ -), 16 characters or more: they are written into
# JAAS strings and --add-scram arguments unquoted. `kafka-start.sh --render-only` stops after
# step 2 (tests/unit/deploy/test_manifests.py renders the compose file's settings with it).
#
# Environment: CLUSTER_ID, KAFKA_* (server properties; KAFKA_LOG_DIRS first dir = data),
# BACKROOM_KAFKA_PASSWORD_<PRINCIPAL>, KF_HOME (/opt/kafka), KF_CONFIG_DIR (<KF_HOME>/config).
set -euo pipefail

KF_HOME=${KF_HOME:-/opt/kafka}
KF_CONFIG_DIR=${KF_CONFIG_DIR:-$KF_HOME/config}
SERVER_CONFIG=$KF_CONFIG_DIR/server.properties
ADMIN_CONFIG=$KF_CONFIG_DIR/admin.properties

# As libs/kit/kafka_acl.py PRINCIPALS (and deploy/local/kafka/lib.sh KAFKA_PRINCIPALS).
PRINCIPALS=(admin catalog inventory pricing orders payments notifications subscriber)
ADMIN="admin"  # the brokers' super user (super.users)
# Variables of the image's scripts (kafka-run-class.sh), not server properties.
NOT_PROPERTIES=" KAFKA_VERSION KAFKA_HEAP_OPTS KAFKA_LOG4J_OPTS KAFKA_OPTS KAFKA_JMX_OPTS KAFKA_JVM_PERFORMANCE_OPTS KAFKA_GC_LOG_OPTS KAFKA_LOG4J_ROOT_LOGLEVEL KAFKA_LOG4J_LOGGERS KAFKA_TOOLS_LOG4J_LOGLEVEL KAFKA_JMX_HOSTNAME KAFKA_JMX_PORT KAFKA_DEBUG KAFKA_HOME "

say() { printf 'kafka-start: %s\n' "$*"; }
die() { printf 'kafka-start: error: %s\n' "$*" >&2; exit 1; }

# password PRINCIPAL: BACKROOM_KAFKA_PASSWORD_<PRINCIPAL>, required and safe to write unquoted.
password() {
  local var=BACKROOM_KAFKA_PASSWORD_${1^^}
  local value=${!var:-}
  [[ -n $value ]] || die "$var is required (generate it: openssl rand -hex 24; see deploy/compose/README.md)"
  [[ $value =~ ^[A-Za-z0-9._~-]{16,}$ ]] ||
    die "$var must be 16 or more letters, digits or . _ ~ - (e.g. openssl rand -hex 24)"
  printf '%s' "$value"
}

# property_name KAFKA_VAR: the server property a KAFKA_* variable sets (the image's mapping).
property_name() {
  local key=${1#KAFKA_}
  key=${key,,}
  key=${key//_/.}
  key=${key//.../-}
  key=${key//../_}
  printf '%s' "$key"
}

render() {
  local admin_pw name listener protocol mechanism controllers scram_jaas plain_jaas
  admin_pw=$(password "$ADMIN")
  for name in "${PRINCIPALS[@]}"; do password "$name" >/dev/null; done
  [[ -n ${KAFKA_LISTENERS:-} && -n ${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP:-} ]] ||
    die "KAFKA_LISTENERS and KAFKA_LISTENER_SECURITY_PROTOCOL_MAP are required"
  controllers=",${KAFKA_CONTROLLER_LISTENER_NAMES:?KAFKA_CONTROLLER_LISTENER_NAMES is required},"
  mechanism=${KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL:?KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL is required}
  [[ $mechanism == SCRAM-* ]] || die "the broker listeners use SCRAM (got $mechanism)"
  scram_jaas="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$ADMIN\" password=\"$admin_pw\";"
  plain_jaas="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$ADMIN\" password=\"$admin_pw\" user_$ADMIN=\"$admin_pw\";"
  mkdir -p "$KF_CONFIG_DIR"
  (
    umask 077  # both files hold the admin password
    {
      printf '# Rendered by kafka-start.sh from the KAFKA_* environment on every start; do not edit.\n'
      while read -r name; do
        [[ $name == KAFKA_* && $NOT_PROPERTIES != *" $name "* ]] || continue
        printf '%s=%s\n' "$(property_name "$name")" "${!name}"
      done < <(compgen -e | LC_ALL=C sort)
      printf '# The broker'\''s own SASL login on each listener (the admin principal).\n'
      for listener in ${KAFKA_LISTENERS//,/ }; do
        listener=${listener%%://*}
        protocol=$(tr ',' '\n' <<<"$KAFKA_LISTENER_SECURITY_PROTOCOL_MAP" | sed -n "s/^$listener://p")
        [[ $protocol == SASL_* ]] || die "listener $listener is $protocol: every listener authenticates (SASL_*)"
        if [[ $controllers == *",$listener,"* ]]; then
          printf 'listener.name.%s.plain.sasl.jaas.config=%s\n' "${listener,,}" "$plain_jaas"
        else
          printf 'listener.name.%s.%s.sasl.jaas.config=%s\n' "${listener,,}" "${mechanism,,}" "$scram_jaas"
        fi
      done
    } >"$SERVER_CONFIG.tmp"
    printf 'security.protocol=%s\nsasl.mechanism=%s\nsasl.jaas.config=%s\n' \
      SASL_PLAINTEXT "$mechanism" "$scram_jaas" >"$ADMIN_CONFIG.tmp"
  )
  mv -f "$SERVER_CONFIG.tmp" "$SERVER_CONFIG"
  mv -f "$ADMIN_CONFIG.tmp" "$ADMIN_CONFIG"
}

# Fingerprint of every principal's password, kept beside the formatted storage.
credentials_hash() {
  local p
  for p in "${PRINCIPALS[@]}"; do printf '%s=%s\n' "$p" "$(password "$p")"; done |
    sha256sum | cut -d' ' -f1
}

format_once() {
  local data=${KAFKA_LOG_DIRS:?KAFKA_LOG_DIRS is required}
  local p out mechanism=$KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL
  local -a scram=()
  data=${data%%,*}
  if [[ -f $data/meta.properties ]]; then
    [[ -f $data/backroom-credentials ]] ||
      die "$data was formatted without the principals' credentials (before Kafka authentication); start afresh with docker compose down -v (deletes the Kafka data)"
    [[ $(<"$data/backroom-credentials") == "$(credentials_hash)" ]] ||
      die "$data was formatted with other BACKROOM_KAFKA_PASSWORD_* values than these: restore those, or start afresh with docker compose down -v (deletes the Kafka data)"
    return 0
  fi
  for p in "${PRINCIPALS[@]}"; do
    scram+=(--add-scram "$mechanism=[name=$p,password=$(password "$p")]")
  done
  # Its output lists the bootstrap records, SCRAM keys included: shown only if it fails.
  if ! out=$("$KF_HOME/bin/kafka-storage.sh" format --cluster-id "${CLUSTER_ID:?CLUSTER_ID is required}" \
      --config "$SERVER_CONFIG" --ignore-formatted "${scram[@]}" 2>&1); then
    printf '%s\n' "$out" >&2
    die "formatting $data failed (output above)"
  fi
  credentials_hash >"$data/backroom-credentials"
  say "formatted $data (cluster id $CLUSTER_ID) with the credentials of ${PRINCIPALS[*]}"
}

render
[[ ${1:-} == --render-only ]] && exit 0
format_once
exec "$KF_HOME/bin/kafka-server-start.sh" "$SERVER_CONFIG"
