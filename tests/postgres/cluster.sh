#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: Debian's postgresql, run as the
# `postgres` user (initdb and postgres refuse root), data in DIR, listening on 127.0.0.1:PORT
# with password (SCRAM) authentication; user `keygate` (password in DIR/password) may
# create databases. Prints `ready` once it accepts connections, then waits: when its
# standard input closes (the test binary ended), the cluster is stopped and DIR removed.
#
#   cluster.sh DIR PORT
set -euo pipefail
dir=$1 port=$2
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg() {
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
mkdir -p "$dir"
if [[ $(id -u) == 0 ]]; then chown postgres "$dir"; fi
chmod 0700 "$dir"
umask 077
head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$dir/password"
if [[ $(id -u) == 0 ]]; then chown postgres "$dir/password"; fi
as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=scram-sha-256 \
    --pwfile="$dir/password" -E UTF8 --no-instructions >"$dir/initdb.log" 2>&1
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
start() { as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null; }
start
PGPASSWORD=$(cat "$dir/password") "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -q -c "CREATE ROLE keygate LOGIN CREATEDB PASSWORD '$(cat "$dir/password")'"
echo ready
# Commands from the test, one per line: `stop` and `start` (the database going away and
# coming back under the replicas); end of input stops everything.
while read -r cmd; do
    case $cmd in
        stop) as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null; echo stopped ;;
        start) start; echo started ;;
    esac
done
as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
rm -rf "$dir"
