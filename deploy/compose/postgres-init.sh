#!/usr/bin/env bash
# One database per service, each owned by the service's own role, as deploy/local/postgres.sh
# makes them: LOGIN, no superuser/createdb/createrole, password from BACKROOM_PG_PASSWORD_<SVC>
# (the operator provides them: none is written here), CONNECT revoked from PUBLIC so no role
# reaches another service's database. The postgres image runs this once, when its data volume
# is empty (docker compose down -v starts afresh).
set -euo pipefail
for svc in catalog inventory pricing orders payments notifications; do
    var=BACKROOM_PG_PASSWORD_${svc^^}
    password=${!var:?$var is required}
    psql -v ON_ERROR_STOP=1 -X -q --username "$POSTGRES_USER" --dbname postgres \
        -v role="$svc" -v pw="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'role', :'pw')
\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'role', :'role')
\gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'role')
\gexec
SQL
    psql -v ON_ERROR_STOP=1 -X -q --username "$POSTGRES_USER" --dbname "$svc" \
        -c 'REVOKE ALL ON SCHEMA public FROM PUBLIC'
done
psql -v ON_ERROR_STOP=1 -X -q --username "$POSTGRES_USER" --dbname postgres \
    -c 'REVOKE ALL ON DATABASE postgres FROM PUBLIC'
