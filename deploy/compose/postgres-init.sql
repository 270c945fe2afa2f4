-- One database per service, as deploy/local/postgres.sh creates them. The postgres image runs
-- this once, when its data volume is empty (docker compose down -v starts afresh).
CREATE DATABASE catalog;
CREATE DATABASE inventory;
CREATE DATABASE pricing;
CREATE DATABASE orders;
CREATE DATABASE payments;
CREATE DATABASE notifications;
