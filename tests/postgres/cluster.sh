#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: Debian's postgresql, run as the
# `postgres` user (initdb and postgres refuse root), data in DIR, listening on 127.0.0.1:PORT
# with password (SCRAM) authentication, with or without TLS (its certificate, for
# 127.0.0.1 and localhost, from a CA of its own: DIR/ca.crt); user `keygate` (password in
# DIR/password) may create databases. Prints `ready` once it accepts connections, then waits: when its
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
# TLS: a CA of the test's own and a server certificate from it.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=keygate-test-db-ca -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$dir/data/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/data/server.crt" 2>/dev/null
chmod 0644 "$dir/ca.crt"
if [[ $(id -u) == 0 ]]; then chown postgres "$dir/data/server.key" "$dir/data/server.crt"; fi
cat >>"$dir/data/postgresql.conf" <<CONF
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'

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
