-- One service's database role and database, as deploy/local/postgres.sh makes them: LOGIN, no
-- superuser/createdb/createrole, owning its database (and the public schema in it), CONNECT
-- revoked from PUBLIC so no other role reaches it. Run once per service, as an administrator,
-- with the password you put in the Secret backroom-pg-<service>:
--   psql "$ADMIN_URL" -v role=catalog -v pw="$(kubectl -n backroom get secret backroom-pg-catalog -o jsonpath='{.data.BACKROOM_PG_PASSWORD}' | base64 -d)" -f postgres-roles.sql
\set ON_ERROR_STOP on
SELECT format('CREATE ROLE %I LOGIN', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role')
\gexec
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'role', :'pw')
\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'role', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'role')
\gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'role', :'role')
\gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'role')
\gexec
\connect :role
SELECT format('ALTER SCHEMA public OWNER TO %I', :'role')
\gexec
REVOKE ALL ON SCHEMA public FROM PUBLIC;
