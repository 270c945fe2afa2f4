#!/usr/bin/env bash
# `make run`: infrastructure, migrations, the six services, the nginx gateway and the SMTP sink,
# demo data seeded, URLs printed. Ctrl-C stops everything this script started.
set -euo pipefail
SAY_PREFIX=run
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STARTED=$RUN_DIR/run-infra.started
# Webhook receivers on this machine (a local test server) may be subscribed; every other
# internal address stays refused. Unset outside `make run`: public addresses only.
export BACKROOM_WEBHOOK_ALLOWED_NETWORKS=${BACKROOM_WEBHOOK_ALLOWED_NETWORKS:-127.0.0.0/8,::1/128}
GATEWAY=http://127.0.0.1:${GATEWAY_PORT:-8000}
stop_all() {
    trap - EXIT INT TERM
    say "stopping..."
    bash "$LOCAL_DIR/prometheus.sh" down || true
    bash "$LOCAL_DIR/nginx.sh" down || true
    bash "$LOCAL_DIR/services.sh" down || true
    bash "$LOCAL_DIR/infra.sh" stop-started "$STARTED" || true
    say "stopped"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

t0=$(now)
# stripe-mock serves only the Stripe adapter's tests; the services run on the sandbox PSP here
# (a first start would need Go and a build).
INFRA_SKIP=stripe-mock bash "$LOCAL_DIR/infra.sh" up "$STARTED"
cd "$REPO_ROOT"
.venv/bin/backroom topics >/dev/null
.venv/bin/backroom migrate
bash "$LOCAL_DIR/services.sh" up
bash "$LOCAL_DIR/nginx.sh" up
bash "$LOCAL_DIR/prometheus.sh" up  # issue 14: every service's /metrics, deploy/prometheus/rules
.venv/bin/python "$LOCAL_DIR/seed.py" "$GATEWAY"
SUBSCRIBER_PASSWORD=$(tr -d '[:space:]' <"${BACKROOM_DEV_KAFKA_PASSWORD_DIR:-$REPO_ROOT/.run/dev-kafka-passwords}/subscriber")
cat <<EOM

Backroom is up ($(elapsed "$t0")s).
  gateway        $GATEWAY   (/catalog /pricing /inventory /orders /payments /notifications)
  API docs       $GATEWAY/docs   (OpenAPI 3.1: $GATEWAY/openapi.json)
  event catalog  $GATEWAY/asyncapi   (AsyncAPI 3: $GATEWAY/asyncapi.json, schemas: $GATEWAY/schemas/events/)
  services       catalog :8101  inventory :8102  pricing :8103  orders :8104  payments :8105  notifications :8106
                 each with /health/live /health/ready /metrics /docs
  kafka          127.0.0.1:${KAFKA_PORT:-9092}, SASL_PLAINTEXT + SCRAM-SHA-256, ACLs per principal
                 downstream subscriber (reads the public topics): user subscriber password $SUBSCRIBER_PASSWORD
                 aiokafka client settings: .venv/bin/backroom kafka-config --principal subscriber
  postgresql     postgresql://<service>@127.0.0.1:${PGPORT:-55432}/<service> (each service its own role;
                 password in .run/dev-pg-passwords/<service>; operator: postgres on loopback)
  smtp sink      127.0.0.1:${SMTP_PORT:-2525}, mail in $RUN_DIR/smtp/maildir
  prometheus     http://127.0.0.1:${PROMETHEUS_PORT:-9090}   (alerts: /alerts, rules: deploy/prometheus/rules)
  logs           $RUN_DIR/services/*.log, $RUN_DIR/nginx/
  operations     .venv/bin/backroom trace <order-id> | reconcile [--run] | dlq list|show|replay|drop
                 tracing: BACKROOM_TRACING=otlp (OTEL_EXPORTER_OTLP_ENDPOINT) or file (README, Tracing)
  tokens         .venv/bin/backroom token --sub alice --role customer   (add --role admin for admin)
                 HS256, signed with this checkout's dev secret .run/dev-jwt-secret (BACKROOM_ENV=dev)
Ctrl-C stops everything.
EOM
while true; do sleep 3600 & wait $! || true; done
