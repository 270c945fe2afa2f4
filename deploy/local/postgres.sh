#!/usr/bin/env bash
# A project-private PostgreSQL 15 cluster (127.0.0.1 only) with one database per service, each
# owned by the service's own role (LOGIN, no superuser/createdb/createrole; its password in
# $REPO_ROOT/.run/dev-pg-passwords/<service>, generated once per checkout, mode 0600, the file
# libs/kit/settings.py reads) and CONNECT revoked from PUBLIC, so no role reaches another
# service's database. Service roles authenticate with scram-sha-256; the superuser `postgres`
# stays trusted on loopback as the local operator's tool (psql, the tests' scratch databases,
# the bench's invariant checker). Runs as the `postgres` OS user: initdb/pg_ctl refuse root.
#
#   postgres.sh up       install postgresql-15 if needed, initdb once, start, create the roles and
#                        databases (idempotent: upgrades a cluster made before roles existed)
#   postgres.sh down     fast shutdown (pg_ctl stop -m fast)
#   postgres.sh status   exit 0 when running, 3 when stopped
#   postgres.sh kill     immediate shutdown (pg_ctl stop -m immediate; crash recovery on next up)
#   postgres.sh reset    down, then delete the data
#   postgres.sh psql [db] [psql args...]
#
# Env: PGPORT (55432), BACKROOM_RUN_DIR (<repo>/.run), BACKROOM_PG_FAST=1 (fsync, synchronous_commit
# and full_page_writes off: for throw-away test data only, never for durability/fault tests),
# BACKROOM_PG_STATEMENTS=1 (preload pg_stat_statements: `python -m bench.bench --statements` counts every
# statement per checkout; applies when the cluster starts).
set -euo pipefail
SAY_PREFIX=postgres
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_BIN=/usr/lib/postgresql/15/bin
PGPORT=${PGPORT:-55432}
PG_HOST=127.0.0.1
DATABASES=(catalog inventory pricing orders payments notifications)
FAST=${BACKROOM_PG_FAST:-0}
PW_DIR=${BACKROOM_DEV_PG_PASSWORD_DIR:-$REPO_ROOT/.run/dev-pg-passwords}

as_pg() { (cd / && unlocked runuser -u postgres -- "$@"); }

# Where the cluster lives: $RUN_DIR/postgres, unless the postgres user cannot reach $RUN_DIR
# (e.g. the repo is under /root, mode 700); then /var/tmp/backroom-<hash of RUN_DIR>/postgres,
# with $RUN_DIR/postgres a symlink to it for humans.
resolve_paths() {
    local fallback_root
    fallback_root=/var/tmp/backroom-$(short_hash "$RUN_DIR")
    if [[ -L "$RUN_DIR/postgres" ]]; then
        PG_BASE=$(readlink "$RUN_DIR/postgres")
    elif id postgres >/dev/null 2>&1 && mkdir -p "$RUN_DIR" \
        && ! (cd / && runuser -u postgres -- test -x "$RUN_DIR"); then
        PG_BASE=$fallback_root/postgres
    else
        PG_BASE=$RUN_DIR/postgres
    fi
    PG_DATA=$PG_BASE/data
    PG_LOG=$PG_BASE/postgres.log
    PG_SOCK=$PG_BASE/sock
    # A unix socket path must fit in sun_path (108 bytes incl. NUL).
    if (( ${#PG_SOCK} + ${#PGPORT} + 11 > 100 )); then
        PG_SOCK=$fallback_root/pgsock
    fi
}

running() {
    [[ -f "$PG_DATA/PG_VERSION" ]] || return 1
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

postmaster_pid() { sed -n 1p "$PG_DATA/postmaster.pid" 2>/dev/null || true; }
postmaster_port() { sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null || true; }

pg_psql() { "$PG_BIN/psql" -h "$PG_HOST" -p "$PGPORT" -U postgres -X -v ON_ERROR_STOP=1 "$@"; }

# Rewrite the managed block at the end of postgresql.conf (so BACKROOM_PG_FAST, PGPORT... apply
# on every start, not only the first).
write_conf() {
    local conf=$PG_DATA/postgresql.conf tmp
    tmp=$(mktemp "$PG_DATA/.postgresql.conf.XXXXXX")
    sed '/^# >>> backroom/,/^# <<< backroom/d' "$conf" >"$tmp"
    {
        echo "# >>> backroom (managed by deploy/local/postgres.sh; rewritten on every up)"
        echo "listen_addresses = '$PG_HOST'"
        echo "port = $PGPORT"
        echo "unix_socket_directories = '$PG_SOCK'"
        echo "max_connections = 300"
        echo "shared_buffers = 256MB"
        if [[ "${BACKROOM_PG_STATEMENTS:-0}" == 1 ]]; then
            echo "shared_preload_libraries = 'pg_stat_statements'"
            echo "pg_stat_statements.max = 5000"
        fi
        if [[ "$FAST" == 1 ]]; then
            echo "# BACKROOM_PG_FAST=1: throw-away test data only"
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
        fi
        echo "# <<< backroom"
    } >>"$tmp"
    chown postgres:postgres "$tmp"
    chmod 600 "$tmp"
    mv -f "$tmp" "$conf"
}

# Who may connect how (rewritten on every up): the superuser without a password over loopback
# and the socket (the local operator), every other role with its scram password.
write_hba() {
    local hba=$PG_DATA/pg_hba.conf tmp
    tmp=$(mktemp "$PG_DATA/.pg_hba.conf.XXXXXX")
    cat >"$tmp" <<'HBA'
# managed by deploy/local/postgres.sh (rewritten on every up)
local   all  postgres                trust
host    all  postgres  127.0.0.1/32  trust
local   all  all                     scram-sha-256
host    all  all       127.0.0.1/32  scram-sha-256
HBA
    chown postgres:postgres "$tmp"
    chmod 600 "$tmp"
    mv -f "$tmp" "$hba"
}

# dev_password ROLE: the role's development password, created once (random, mode 0600,
# published with a hard link that never replaces an existing file: the same file and format
# libs/kit/settings.py load_dev_pg_password makes).
dev_password() {
    local file=$PW_DIR/$1 draft
    if [[ ! -s "$file" ]]; then
        mkdir -p "$PW_DIR"
        chmod 700 "$PW_DIR"
        draft=$PW_DIR/.$1.$$.$RANDOM
        (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$draft" && echo >>"$draft")
        ln "$draft" "$file" 2>/dev/null || true  # another process won: use its file
        rm -f "$draft"
    fi
    tr -d '[:space:]' <"$file"
}

create_databases() {
    local list svc pw
    list=$(printf "'%s'," "${DATABASES[@]}")
    # Roles first (the password is set on every up, so it always matches the checkout's file).
    for svc in "${DATABASES[@]}"; do
        pw=$(dev_password "$svc")
        [[ "$pw" =~ ^[0-9a-f]{32,}$ ]] || die "$PW_DIR/$svc holds no usable password: delete it"
        pg_psql -d postgres -q -v role="$svc" -v pw="$pw" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role')
\gexec
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION'
              ' NOBYPASSRLS PASSWORD %L', :'role', :'pw')
\gexec
SQL
    done
    pg_psql -d postgres -q <<SQL
SELECT format('CREATE DATABASE %I OWNER %I ENCODING ''UTF8''', d, d)
FROM unnest(ARRAY[${list%,}]) AS d
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d)
\gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', d, d) FROM unnest(ARRAY[${list%,}]) AS d
\gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', d) FROM unnest(ARRAY[${list%,}]) AS d
\gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', d, d)
FROM unnest(ARRAY[${list%,}]) AS d
\gexec
REVOKE ALL ON DATABASE postgres FROM PUBLIC;
SQL
    # Inside each database: the role owns the public schema and every object a migration made
    # there before roles existed (then as the superuser). A sequence owned by a table's column
    # follows its table.
    for svc in "${DATABASES[@]}"; do
        pg_psql -d "$svc" -q -v role="$svc" <<'SQL'
SELECT format('ALTER SCHEMA public OWNER TO %I', :'role')
\gexec
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SELECT format('ALTER %s %I.%I OWNER TO %I',
              CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                             WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                             ELSE 'TABLE' END,
              n.nspname, c.relname, :'role')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND pg_get_userbyid(c.relowner) <> :'role'
  AND NOT (c.relkind = 'S' AND EXISTS (
      SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
\gexec
SELECT format('ALTER TYPE %I.%I OWNER TO %I', n.nspname, t.typname, :'role')
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r')
  AND pg_get_userbyid(t.typowner) <> :'role'
\gexec
SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, :'role')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> :'role'
\gexec
SQL
    done
}

cmd_up() {
    lock postgres
    ensure_apt_pkg "$PG_BIN/postgres" postgresql-15
    resolve_paths
    if [[ "$PG_BASE" != "$RUN_DIR/postgres" && ! -e "$RUN_DIR/postgres" ]]; then
        say "postgres user cannot reach $RUN_DIR; data goes to $PG_BASE"
        ln -s "$PG_BASE" "$RUN_DIR/postgres"
    fi
    mkdir -p "$PG_BASE" "$PG_SOCK"
    chown postgres:postgres "$PG_BASE" "$PG_SOCK"
    chmod 700 "$PG_BASE"

    local t0 t_init="" t_start
    t0=$(now)
    if running; then
        if [[ "$(postmaster_port)" != "$PGPORT" ]]; then
            die "already running on port $(postmaster_port), not $PGPORT: run down first"
        fi
        say "already running on $PG_HOST:$PGPORT (pid $(postmaster_pid), data $PG_DATA)"
        write_hba
        pg_psql -d postgres -qAt -c 'SELECT pg_reload_conf()' >/dev/null
    else
        if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
            # A leftover from an interrupted initdb would make initdb refuse the directory.
            rm -rf "$PG_DATA"
            local nosync=()
            [[ "$FAST" == 1 ]] && nosync=(--no-sync)
            as_pg "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 \
                --locale=C.UTF-8 "${nosync[@]}" >"$PG_BASE/initdb.log" 2>&1 \
                || { cat "$PG_BASE/initdb.log" >&2; die "initdb failed"; }
            t_init=$(elapsed "$t0")
            say "initdb $PG_DATA in ${t_init}s"
        fi
        if port_open "$PG_HOST" "$PGPORT"; then
            die "port $PG_HOST:$PGPORT is taken by another process (set PGPORT)"
        fi
        write_conf
        write_hba
        t_start=$(now)
        if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null; then
            tail -n 20 "$PG_LOG" >&2 || true
            die "pg_ctl start failed (log: $PG_LOG)"
        fi
        say "up on $PG_HOST:$PGPORT (started in $(elapsed "$t_start")s)"
    fi
    create_databases
    say "databases: ${DATABASES[*]}, each owned by its role (passwords in $PW_DIR; data $PG_DATA, socket dir $PG_SOCK, log $PG_LOG$([[ "$FAST" == 1 ]] && echo ', FAST: fsync off'))"
}

cmd_stop() {  # cmd_stop fast|immediate
    resolve_paths
    if ! running; then
        say "not running"
        return 0
    fi
    local pid
    pid=$(postmaster_pid)
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m "$1" -w -t 60 stop >/dev/null
    say "stopped (pid $pid, mode $1)"
}

cmd_status() {
    resolve_paths
    if running; then
        say "running on $PG_HOST:$(postmaster_port) (pid $(postmaster_pid), data $PG_DATA)"
        return 0
    fi
    say "stopped (data $PG_DATA$([[ -f "$PG_DATA/PG_VERSION" ]] || echo ', not initialised'))"
    return 3
}

cmd_reset() {
    lock postgres
    cmd_stop fast
    rm -rf "$PG_DATA" "$PG_LOG" "$PG_BASE/initdb.log"
    say "data deleted ($PG_DATA)"
}

case "${1:-}" in
    up) cmd_up ;;
    down) lock postgres; cmd_stop fast ;;
    kill) cmd_stop immediate ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    psql)
        shift
        resolve_paths
        running && PGPORT=$(postmaster_port)  # the port it really runs on
        db=postgres
        if [[ $# -gt 0 && "$1" != -* ]]; then db=$1; shift; fi
        exec "$PG_BIN/psql" -h "$PG_HOST" -p "$PGPORT" -U postgres -d "$db" "$@" ;;
    *) usage up down status kill reset psql ;;
esac
