#!/usr/bin/env bash
# Load benchmark of keygate against nginx and a direct connection (issue #8).
#
#   bash benches/load.sh                       # 15 s per run, 3 interleaved repetitions
#   DURATION=5s REPS=1 bash benches/load.sh    # quick run
#
# Everything runs on 127.0.0.1 in a temp dir (removed on exit). The proxy under test runs
# on core 0; the upstream nginx, wrk (-t1 -c32, HTTP/1.1 keep-alive) and the OTLP sink on
# core 1. Cases, each with /small ("ok") and /big (a 64 KiB static file):
#   direct      wrk -> upstream nginx
#   nginx       nginx reverse proxy (1 worker, upstream keepalive, X-Forwarded-For, one
#               header set, access log to a file)
#   kg-pass     keygate: agent JWT (Ed25519, dev issuer), default policies, static
#               credential injected, audit log to a file
#   kg-full     keygate: agent JWT, Cedar with 100 permits (+ the 2 default forbids),
#               strip + secret scan of a header and a query param, minted JWT injected
#               (reused within the default window), audit log, OTLP traces to a local sink
#   kg-unique   kg-full with `unique_per_call = true`: a JWT minted for every call
#   kg-aws      keygate as an AWS endpoint (issue 14): agent JWT in Proxy-Authorization
#               beside the SDK's own SigV4 header, default policies, the S3 action and
#               its session policy derived, session credentials from STS (a local stand-in
#               answering AssumeRole; cached, so the measured calls never reach it), and
#               the call re-signed with them; upstream nginx accepts any signature
#   kg-oauth2   kg-pass with an OAuth2 tool instead of a static secret (issue 15): an
#               access token from a token endpoint (a local stand-in answering
#               client_credentials; cached per agent and scope, so the measured calls
#               never reach it) injected as a bearer token; no span export, as kg-pass
#   kg-fwd      kg-pass through the forward proxy (issue 16), with benches/load_client.rs
#               (wrk speaks no CONNECT): CONNECT with the agent JWT, TLS with a certificate
#               from keygate's CA, HTTP/1.1 keep-alive inside the tunnel; beside it the same
#               request over TLS to keygate's reverse-proxy listener and in cleartext, with
#               the same client; and a new tunnel (CONNECT + TLS handshake) per request,
#               whose extra CPU is the cost of a tunnel. `ONLY_FWD=1` runs only this part.
#   kg-pg       kg-pass on a PostgreSQL store (issue 18): Debian's PostgreSQL on core 1
#               (tests/postgres/cluster.sh), two replicas on one database (kg-pg and kg-pg2,
#               both on core 0); measured alone like every case, then both replicas under
#               load at once (two wrk, half the connections each), with the database's CPU
#               per request beside theirs. `ONLY_PG=1` runs only this part.
# Reported: medians over REPS of req/s, p50, p99, the proxy's CPU µs per request
# (utime+stime from /proc/<pid>/stat) and its peak RSS (VmHWM); then p99 at a fixed rate
# of half kg-full's peak on /small (wrk with a per-request delay).
# Needs root for apt-get when wrk or nginx is missing; needs python3 and cargo.
#
#   MODE=callgrind bash benches/load.sh        # instructions per request instead
#
# runs the keygate cases under `valgrind --tool=callgrind` (installed from Debian when
# missing): after a warm-up, the counters are zeroed, wrk sends CG_DURATION (default 20s)
# of /small with 8 connections, and the instructions the whole process executed (every
# thread: runtime, audit writer, span exporter) are divided by the requests served. A
# count, not a time: repeatable on a noisy machine.
set -euo pipefail

MODE=${MODE:-load}
CG_DURATION=${CG_DURATION:-20s}
DURATION=${DURATION:-15s}
REPS=${REPS:-3}
CONNS=${CONNS:-32}
ONLY_FWD=${ONLY_FWD:-0}
ONLY_PG=${ONLY_PG:-0}
CASES=(direct nginx kg-pass kg-full kg-unique kg-aws kg-oauth2 kg-pg)
PATHS=(small big)

cd "$(dirname "$0")/.."
ROOT=$(pwd)

# --- 1. tools -------------------------------------------------------------------------
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    echo "== installing wrk and nginx" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk nginx
fi
if [ "$MODE" = callgrind ] && ! command -v valgrind >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y valgrind
fi
for t in taskset python3 curl cargo; do
    command -v "$t" >/dev/null || { echo "load.sh: $t is required" >&2; exit 1; }
done
echo "== cargo build --release" >&2
cargo build --release --quiet
cargo build --release --quiet --example load_client
KG="$ROOT/target/release/keygate"
LC="$ROOT/target/release/examples/load_client"
NGINX=$(command -v nginx)
TCK=$(getconf CLK_TCK)

# --- 2. temp dir, cleanup -----------------------------------------------------------------
T=$(mktemp -d /tmp/keygate-load.XXXXXX)
PIDS=()
PG_SCRIPT_PID=""
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    # PostgreSQL stops (and its folder goes) when its script's input closes, that is once
    # every process started after it (each inherited the pipe) is gone.
    if [ -n "$PG_SCRIPT_PID" ]; then
        exec {PGW}>&-
        for _ in $(seq 1 50); do kill -0 "$PG_SCRIPT_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$PG_SCRIPT_PID" 2>/dev/null; then # a process still holds the pipe
            kill "$PG_SCRIPT_PID" 2>/dev/null || true
            runuser -u postgres -- "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)/pg_ctl" \
                -D "$PG_DIR/data" -m immediate stop > /dev/null 2>&1 || true
            rm -rf "$PG_DIR"
        fi
    fi
    rm -rf "$T"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port
    for _ in $(seq 1 600); do
        if curl -s -o /dev/null "http://127.0.0.1:$1/"; then return 0; fi
        sleep 0.1
    done
    echo "load.sh: nothing listens on port $1" >&2; return 1
}
wait_tcp() { # port (a TLS listener, which curl's http:// cannot probe)
    for _ in $(seq 1 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "load.sh: nothing listens on port $1" >&2; return 1
}
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
user_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12}'; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
nginx_worker() { # master pid -> worker pid
    for _ in $(seq 1 50); do
        local w
        w=$(cat "/proc/$1/task/$1/children" 2>/dev/null | awk '{print $1}')
        [ -n "$w" ] && { echo "$w"; return; }
        sleep 0.1
    done
    echo "load.sh: no nginx worker under $1" >&2; exit 1
}

# --- 4. upstream nginx on core 1 -----------------------------------------------------------
nginx_common() { # dir
    cat <<EOF
worker_processes 1;
user root;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
UP_PORT=$(free_port)
mkdir -p "$T/up/www"
head -c 65536 /dev/urandom > "$T/up/www/big"
{ nginx_common "$T/up"; cat <<EOF
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $T/up/tmp; proxy_temp_path $T/up/tmp; fastcgi_temp_path $T/up/tmp;
    uwsgi_temp_path $T/up/tmp; scgi_temp_path $T/up/tmp;
    server {
        listen 127.0.0.1:$UP_PORT;
        root $T/up/www;
        location = /small { default_type text/plain; return 200 "ok"; }
        location = /big { default_type application/octet-stream; }
    }
}
EOF
} > "$T/up/nginx.conf"
mkdir -p "$T/up/tmp"
taskset -c 1 "$NGINX" -e "$T/up/error.log" -p "$T/up" -c "$T/up/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
wait_port "$UP_PORT"

# --- nginx reverse proxy on core 0 ---------------------------------------------------------
NG_PORT=$(free_port)
mkdir -p "$T/ng/tmp"
{ nginx_common "$T/ng"; cat <<EOF
http {
    access_log $T/ng/access.log;
    keepalive_requests 1000000;
    client_body_temp_path $T/ng/tmp; proxy_temp_path $T/ng/tmp; fastcgi_temp_path $T/ng/tmp;
    uwsgi_temp_path $T/ng/tmp; scgi_temp_path $T/ng/tmp;
    upstream up { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NG_PORT;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header Authorization "Bearer bench-upstream-secret";
        }
    }
}
EOF
} > "$T/ng/nginx.conf"
taskset -c 0 "$NGINX" -e "$T/ng/error.log" -p "$T/ng" -c "$T/ng/nginx.conf" -g 'daemon off;' &
NG_MASTER=$!
PIDS+=($NG_MASTER)
wait_port "$NG_PORT"
NG_WORKER=$(nginx_worker "$NG_MASTER")

# --- OTLP sink on core 1 -------------------------------------------------------------------
OTLP_PORT=$(free_port)
cat > "$T/otlp_sink.py" <<'EOF'
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
taskset -c 1 python3 "$T/otlp_sink.py" "$OTLP_PORT" &
PIDS+=($!)
wait_port "$OTLP_PORT"

# --- STS stand-in on core 1 (kg-aws): answers every AssumeRole with a one-hour session -----
STS_PORT=$(free_port)
cat > "$T/sts.py" <<'EOF'
import sys, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        exp = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = ("<AssumeRoleResponse><AssumeRoleResult><Credentials>"
                "<AccessKeyId>ASIABENCHSESSION0001</AccessKeyId>"
                "<SecretAccessKey>benchSessionSecretKeyOfFortyCharacters00</SecretAccessKey>"
                "<SessionToken>FwoGZXIvYXdzEbenchsessiontoken</SessionToken>"
                f"<Expiration>{exp}</Expiration></Credentials>"
                "<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/bench/bench-agent</Arn></AssumedRoleUser>"
                "</AssumeRoleResult></AssumeRoleResponse>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
taskset -c 1 python3 "$T/sts.py" "$STS_PORT" &
PIDS+=($!)
wait_port "$STS_PORT"
printf '{"Version":1,"AccessKeyId":"AKIABENCHBASEKEY0001","SecretAccessKey":"benchBaseSecretKeyOfFortyCharacters00000"}' > "$T/aws-base.json"

# --- OAuth2 token endpoint stand-in on core 1 (kg-oauth2): a one-hour token per request ---
AS_PORT=$(free_port)
cat > "$T/as.py" <<'EOF'
import sys, json, secrets
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"access_token": "bench-" + secrets.token_urlsafe(30),
                           "token_type": "Bearer", "expires_in": 3600,
                           "scope": "up:read"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
taskset -c 1 python3 "$T/as.py" "$AS_PORT" &
PIDS+=($!)
wait_port "$AS_PORT"

# --- PostgreSQL on core 1 (kg-pg): the tests' throwaway cluster, one database -------------
PG_PORT=$(free_port)
PG_DIR=$(mktemp -u /tmp/keygate-bench-pg.XXXXXX)
mkfifo "$T/pg.in"
taskset -c 1 bash "$ROOT/tests/postgres/cluster.sh" "$PG_DIR" "$PG_PORT" < "$T/pg.in" > "$T/pg.out" &
PG_SCRIPT_PID=$!
exec {PGW}>"$T/pg.in"
for _ in $(seq 1 600); do grep -q ready "$T/pg.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$T/pg.out" || { echo "load.sh: PostgreSQL did not start" >&2; exit 1; }
PG_PW=$(cat "$PG_DIR/password")
PGPASSWORD=$PG_PW psql -h 127.0.0.1 -p "$PG_PORT" -U keygate -d postgres -q -c "CREATE DATABASE keygate"
export BENCH_PG_URL="postgres://keygate:$PG_PW@127.0.0.1:$PG_PORT/keygate?sslmode=disable"
pg_ticks() { # CPU ticks of every process of the cluster (its postmaster and backends)
    local pm total=0 p
    pm=$(head -n1 "$PG_DIR/data/postmaster.pid")
    for p in "$pm" $(pgrep -P "$pm"); do total=$((total + $(cpu_ticks "$p" 2>/dev/null || echo 0))); done
    echo "$total"
}

# --- 3. keygate instances on core 0 --------------------------------------------------------
export BENCH_UP_TOKEN=bench-upstream-secret
kg_config() { # dir port admin_port credential_toml extra_tool_toml (STORE_TOML: another [store])
    local store
    store=${STORE_TOML:-$'[store]\npath = "data/keygate.db"'}
    cat <<EOF
[server]
listen = "127.0.0.1:$2"
data_dir = "data"

[audit]
path = "audit.jsonl"

[[identity.issuers]]
name = "dev"
issuer = "keygate-dev"
audiences = ["keygate"]
jwks_file = "data/dev-issuer.jwks.json"
dev_signing_key = "data/dev-issuer.pem"

[signing]
issuer = "keygate"
algorithm = "EdDSA"

[policies]
dir = "policies"

$store

[admin]
listen = "127.0.0.1:$3"
token_file = "data/admin.token"

[[agents]]
id = "bench-agent"
owner = "bench@example.com"
attributes = { team = "bench" }

[[tools]]
name = "up"
upstream = "http://127.0.0.1:$UP_PORT"
$5

[tools.credential]
$4
EOF
}
gen_policies() { # dir: 100 permits with distinct @id, plus the default forbids
    {
        for i in $(seq -w 1 99); do
            printf '@id("permit-agent-%s")\npermit (principal == Agent::"agent-%s", action in Action::"read", resource == Tool::"up")\nwhen { context.method == "GET" };\n\n' "$i" "$i"
        done
        printf '@id("permit-bench-agent")\npermit (principal == Agent::"bench-agent", action in Action::"read", resource == Tool::"up")\nwhen { principal.owner == "bench@example.com" && principal.hasTag("team") };\n\n'
        cat <<'EOF'
@id("identity-creation-needs-approval")
@approval("a human approves every identity an agent creates")
forbid (principal, action in Action::"identity_creation", resource)
unless { context.approved };

@id("privilege-escalation-needs-approval")
@approval("a human approves every privilege escalation")
forbid (principal, action in Action::"privilege_escalation", resource)
unless { context.approved };
EOF
    } > "$1/bench.cedar"
}

declare -A PORT PID HDRS QUERY ADMIN
PORT[direct]=$UP_PORT
PORT[nginx]=$NG_PORT
PID[nginx]=$NG_WORKER
QUERY[direct]=""; QUERY[nginx]=""
FULL_TOOL='strip_headers = ["x-agent-session"]
strip_query = ["session"]'
for c in kg-pass kg-full kg-unique kg-aws kg-oauth2 kg-pg kg-pg2; do
    d="$T/$c"
    mkdir -p "$d/data" "$d/policies"
    PORT[$c]=$(free_port)
    admin=$(free_port)
    ADMIN[$c]=$admin
    case $c in
    kg-pass)
        cp "$ROOT"/policies/*.cedar "$ROOT"/policies/*.cedarschema "$d/policies/"
        kg_config "$d" "${PORT[$c]}" "$admin" 'provider = "static"
from_env = "BENCH_UP_TOKEN"' "" > "$d/keygate.toml"
        ;;
    kg-pg | kg-pg2)
        # kg-pass with its state in PostgreSQL, shared by the two replicas.
        cp "$ROOT"/policies/*.cedar "$ROOT"/policies/*.cedarschema "$d/policies/"
        STORE_TOML="[store]
url_env = \"BENCH_PG_URL\"" kg_config "$d" "${PORT[$c]}" "$admin" 'provider = "static"
from_env = "BENCH_UP_TOKEN"' "" > "$d/keygate.toml"
        # Both replicas accept the same agent tokens: kg-pg2 trusts kg-pg's dev issuer.
        if [ "$c" = kg-pg2 ]; then
            sed -i "s#jwks_file = \"data/dev-issuer.jwks.json\"#jwks_file = \"$T/kg-pg/data/dev-issuer.jwks.json\"#; s#dev_signing_key = \"data/dev-issuer.pem\"#dev_signing_key = \"$T/kg-pg/data/dev-issuer.pem\"#" "$d/keygate.toml"
        fi
        ;;
    kg-full | kg-unique)
        cp "$ROOT"/policies/*.cedarschema "$d/policies/"
        gen_policies "$d/policies"
        cred='provider = "jwt"
scope = "up:read"
ttl = "5m"'
        [ "$c" = kg-unique ] && cred="$cred
unique_per_call = true"
        kg_config "$d" "${PORT[$c]}" "$admin" "$cred" "$FULL_TOOL" > "$d/keygate.toml"
        ;;
    kg-aws)
        cp "$ROOT"/policies/*.cedar "$ROOT"/policies/*.cedarschema "$d/policies/"
        kg_config "$d" "${PORT[$c]}" "$admin" "provider = \"aws\"
role_arn = \"arn:aws:iam::123456789012:role/bench\"
sts_endpoint = \"http://127.0.0.1:$STS_PORT\"
from_file = \"$T/aws-base.json\"" 'kind = "aws"' > "$d/keygate.toml"
        ;;
    kg-oauth2)
        cp "$ROOT"/policies/*.cedar "$ROOT"/policies/*.cedarschema "$d/policies/"
        kg_config "$d" "${PORT[$c]}" "$admin" "provider = \"oauth2\"
token_endpoint = \"http://127.0.0.1:$AS_PORT/token\"
client_id = \"keygate-bench\"
from_env = \"BENCH_UP_TOKEN\"
scope = \"up:read\"" "" > "$d/keygate.toml"
        ;;
    esac
    echo "== $c: $("$KG" check --config "$d/keygate.toml")" >&2
    npol=$(cat "$d"/policies/*.cedar | grep -c '^@id(')
    echo "   policies with @id: $npol" >&2
    (
        cd "$d"
        export KEYGATE_WORKER_THREADS=1 KEYGATE_LOG=warn KEYGATE_REPLICA_ID=$c
        # kg-pass, kg-oauth2 and kg-pg differ only in their provider or store: none
        # exports spans.
        case $c in kg-pass | kg-oauth2 | kg-pg | kg-pg2) ;; *)
            export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT"
            export OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf
        ;; esac
        if [ "$MODE" = callgrind ]; then
            exec taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$d/callgrind.out" \
                "$KG" run --config "$d/keygate.toml"
        fi
        exec taskset -c 0 "$KG" run --config "$d/keygate.toml"
    ) > "$d/keygate.log" 2>&1 &
    PID[$c]=$!
    PIDS+=(${PID[$c]})
    wait_port "${PORT[$c]}"
    tok=$("$KG" dev-token --config "$d/keygate.toml" --agent bench-agent --ttl 2h)
    HDRS[$c]="Authorization: Bearer $tok"
    # An AWS SDK's Authorization is its SigV4 signature: the agent's JWT goes beside it.
    [ "$c" = kg-aws ] && HDRS[$c]="Proxy-Authorization: Bearer $tok"
    QUERY[$c]=""
    if [ "$c" = kg-full ] || [ "$c" = kg-unique ]; then
        QUERY[$c]="?q=quarterly-report-draft&session=agent-session-42"
    fi
    echo "   threads of keygate ($c): $(ls "/proc/${PID[$c]}/task" | wc -l) ($(cat /proc/"${PID[$c]}"/task/*/comm | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}'))" >&2
done

url() { # case path
    case $1 in
    direct | nginx) echo "http://127.0.0.1:${PORT[$1]}/$2" ;;
    *) echo "http://127.0.0.1:${PORT[$1]}/tools/up/$2${QUERY[$1]}" ;;
    esac
}
wrk_args() { # case -> extra header args, one per line
    case $1 in
    kg-*) printf '%s\n' -H "${HDRS[$1]}" ;;
    esac
    case $1 in
    kg-full | kg-unique) printf '%s\n' -H "X-Agent-Session: s-0042" -H "X-Request-Note: weekly-report-for-the-platform-team" ;;
    kg-aws) printf '%s\n' -H "Authorization: AWS4-HMAC-SHA256 Credential=AKIDANYKEYTHESDKHAS0/$(date -u +%Y%m%d)/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=$(printf '0%.0s' $(seq 64))" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -H "x-amz-date: $(date -u +%Y%m%dT%H%M%SZ)" ;;
    esac
}

# Sanity: every case answers 200 with the right size before anything is measured.
for c in "${CASES[@]}"; do
    for p in "${PATHS[@]}"; do
        mapfile -t extra < <(wrk_args "$c")
        out=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "${extra[@]}" "$(url "$c" "$p")")
        want=2; [ "$p" = big ] && want=65536
        if [ "$out" != "200 $want" ]; then
            echo "load.sh: $c /$p answered '$out', expected '200 $want'" >&2
            curl -s "${extra[@]}" "$(url "$c" "$p")" | head -c 400 >&2; echo >&2
            exit 1
        fi
    done
done
echo "== all cases answer 200" >&2

# --- 4b. kg-fwd: the forward proxy (issue 16), measured with load_client -------------------
# (not under callgrind: kg-pass, its cleartext baseline, runs under valgrind there)
if [ "$MODE" = load ] && [ "$ONLY_PG" != 1 ]; then
d="$T/kg-fwd"
mkdir -p "$d/data" "$d/policies"
cp "$ROOT"/policies/*.cedar "$ROOT"/policies/*.cedarschema "$d/policies/"
# The reverse-proxy listener's TLS certificate, from a CA of its own.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/tls-ca.key" \
    -out "$d/tls-ca.crt" -subj /CN=bench-ca -days 2 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/tls.key" \
    -out "$d/tls.csr" -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$d/tls.ext"
openssl x509 -req -in "$d/tls.csr" -CA "$d/tls-ca.crt" -CAkey "$d/tls-ca.key" -CAcreateserial \
    -days 2 -extfile "$d/tls.ext" -out "$d/tls.crt" 2>/dev/null
FWD_PORT=$(free_port)
FWD_PROXY=$(free_port)
{
    kg_config "$d" "$FWD_PORT" "$(free_port)" 'provider = "static"
from_env = "BENCH_UP_TOKEN"' 'hosts = ["up.bench.test"]'
    printf '\n[server.tls]\ncert_file = "tls.crt"\nkey_file = "tls.key"\n\n[proxy]\nlisten = "127.0.0.1:%s"\n' "$FWD_PROXY"
} > "$d/keygate.toml"
echo "== kg-fwd: $("$KG" check --config "$d/keygate.toml")" >&2
(
    cd "$d"
    export KEYGATE_WORKER_THREADS=1 KEYGATE_LOG=warn
    exec taskset -c 0 "$KG" run --config "$d/keygate.toml"
) > "$d/keygate.log" 2>&1 &
FWD_PID=$!
PIDS+=($FWD_PID)
wait_tcp "$FWD_PORT"
wait_port "$FWD_PROXY"
FWD_TOKEN=$("$KG" dev-token --config "$d/keygate.toml" --agent bench-agent --ttl 2h)
fwd_run() { # mode seconds -> load_client's JSON line
    local a=(--mode "$1" --seconds "$2" --conns "$CONNS")
    case $1 in
    # The cleartext baseline is kg-pass's own listener (and process).
    reverse) a+=(--addr "127.0.0.1:${PORT[kg-pass]}" --path /tools/up/small --token "${HDRS[kg-pass]#Authorization: Bearer }") ;;
    reverse-tls) a+=(--addr "127.0.0.1:$FWD_PORT" --path /tools/up/small --token "$FWD_TOKEN" --ca "$d/tls-ca.crt") ;;
    forward | forward-new) a+=(--addr "127.0.0.1:$FWD_PROXY" --host up.bench.test --path /small --token "$FWD_TOKEN" --ca "$d/data/proxy-ca.crt") ;;
    esac
    taskset -c 1 "$LC" "${a[@]}"
}
FWD_MODES=(reverse reverse-tls forward forward-new)
FWD_RES="$T/fwd.tsv"
: > "$FWD_RES"
secs=${DURATION%s}
echo "== kg-fwd: warm-up" >&2
for m in "${FWD_MODES[@]}"; do fwd_run "$m" 1 > /dev/null; done
for rep in $(seq 1 "$REPS"); do
    for m in "${FWD_MODES[@]}"; do
        pid=$FWD_PID
        [ "$m" = reverse ] && pid=${PID[kg-pass]}
        t0=$(cpu_ticks "$pid")
        out=$(fwd_run "$m" "$secs")
        t1=$(cpu_ticks "$pid")
        python3 - "$m" "$rep" "$((t1 - t0))" "$TCK" "$out" >> "$FWD_RES" <<'EOF'
import json, sys
m, rep, ticks, tck, out = sys.argv[1:6]
o = json.loads(out)
n = o["requests"]
print("\t".join(map(str, [m, rep, n, n / o["seconds"], int(ticks) / int(tck) * 1e6 / max(n, 1), o["errors"]])))
EOF
        echo "   kg-fwd $m rep $rep: $(tail -n1 "$FWD_RES" | cut -f3-6)" >&2
    done
done
python3 - "$FWD_RES" "$DURATION" "$REPS" "$CONNS" <<'EOF'
import sys, statistics as st
res, dur, reps, conns = sys.argv[1:5]
rows = [l.rstrip("\n").split("\t") for l in open(res) if l.strip()]
def med(m, i):
    return st.median(float(r[i]) for r in rows if r[0] == m)
what = {
    "reverse": "reverse proxy, cleartext (kg-pass)",
    "reverse-tls": "reverse proxy over TLS, keep-alive",
    "forward": "forward proxy: one tunnel per connection, keep-alive inside",
    "forward-new": "forward proxy: a new tunnel (CONNECT + TLS handshake) per request",
}
print(f"\n### Forward proxy (load_client, {conns} connections, {dur} per run, median of {reps}; /small)\n")
print("| mode | req/s | keygate CPU µs/req | errors |")
print("|---|---:|---:|---:|")
for m in ["reverse", "reverse-tls", "forward", "forward-new"]:
    errs = sum(int(r[5]) for r in rows if r[0] == m)
    print(f"| {what[m]} | {med(m, 3):,.0f} | {med(m, 4):.1f} | {errs} |")
print(f"\nA tunnel (CONNECT, certificate lookup, TLS handshake) costs {med('forward-new', 4) - med('forward', 4):.0f} µs of keygate CPU beyond its first request;")
print(f"a request in an open tunnel costs {med('forward', 4) - med('reverse-tls', 4):+.1f} µs against the reverse proxy over TLS, {med('forward', 4) - med('reverse', 4):+.1f} µs against cleartext.")
EOF
[ "$ONLY_FWD" = 1 ] && exit 0
fi

# --- 4c. kg-pg: two replicas on one PostgreSQL under load at once (issue 18) ---------------
# Each replica gets half the connections; the CPU each replica and the database spent is
# divided by the requests that replica (or both, for the database) served. A hot path that
# queried the database would show here as database CPU per request.
if [ "$MODE" = load ]; then
PG_RES="$T/pg.tsv"
: > "$PG_RES"
half_conns=$((CONNS / 2))
echo "== kg-pg: two replicas at once, $half_conns connections each" >&2
for rep in $(seq 1 "$REPS"); do
    a0=$(cpu_ticks "${PID[kg-pg]}"); b0=$(cpu_ticks "${PID[kg-pg2]}"); d0=$(pg_ticks)
    wrks=()
    for c in kg-pg kg-pg2; do
        mapfile -t extra < <(wrk_args "$c")
        taskset -c 1 wrk -t1 -c"$half_conns" -d"$DURATION" "${extra[@]}" "$(url "$c" small)" > "$T/wrk-2r-$c-$rep.txt" &
        wrks+=($!)
    done
    wait "${wrks[@]}"
    a1=$(cpu_ticks "${PID[kg-pg]}"); b1=$(cpu_ticks "${PID[kg-pg2]}"); d1=$(pg_ticks)
    na=$(awk '/requests in/ {print $1}' "$T/wrk-2r-kg-pg-$rep.txt")
    nb=$(awk '/requests in/ {print $1}' "$T/wrk-2r-kg-pg2-$rep.txt")
    bad=$(cat "$T"/wrk-2r-*-"$rep".txt | awk '/Non-2xx/ {s += $NF} END {print s + 0}')
    python3 - "$rep" "$na" "$nb" "$((a1 - a0))" "$((b1 - b0))" "$((d1 - d0))" "$TCK" "${DURATION%s}" "$bad" >> "$PG_RES" <<'EOF'
import sys
rep, na, nb, ta, tb, td, tck, secs, bad = sys.argv[1:10]
na, nb, tck = int(na), int(nb), int(tck)
us = lambda t, n: int(t) / tck * 1e6 / max(n, 1)
print("\t".join(map(str, [rep, (na + nb) / float(secs), us(ta, na), us(tb, nb), us(td, na + nb), bad])))
EOF
    echo "   kg-pg 2 replicas rep $rep: $(tail -n1 "$PG_RES")" >&2
done
python3 - "$PG_RES" "$DURATION" "$REPS" "$half_conns" <<'EOF'
import sys, statistics as st
res, dur, reps, conns = sys.argv[1:5]
rows = [[float(x) for x in l.split("\t")] for l in open(res) if l.strip()]
med = lambda i: st.median(r[i] for r in rows)
print(f"\n### Two replicas on one PostgreSQL (wrk -t1 -c{conns} to each at once, {dur} per run, median of {reps}; /small)\n")
print("| req/s, both | replica 1 CPU µs/req | replica 2 CPU µs/req | PostgreSQL CPU µs/req | non-2xx |")
print("|---:|---:|---:|---:|---:|")
print(f"| {med(1):,.0f} | {med(2):.1f} | {med(3):.1f} | {med(4):.2f} | {int(sum(r[5] for r in rows))} |")
EOF
[ "$ONLY_PG" = 1 ] && exit 0
fi

# --- 5a. callgrind: instructions per request --------------------------------------------------
if [ "$MODE" = callgrind ]; then
    echo "== callgrind: instructions per request on /small (wrk -c8, $CG_DURATION after a warm-up)" >&2
    printf '\n| case | requests | instructions | instructions per request |\n|---|---:|---:|---:|\n' > "$T/cg.md"
    for c in kg-pass kg-full kg-unique kg-aws kg-oauth2 kg-pg; do
        mapfile -t extra < <(wrk_args "$c")
        taskset -c 1 wrk -t1 -c8 -d5s "${extra[@]}" "$(url "$c" small)" > /dev/null
        callgrind_control -z "${PID[$c]}" > /dev/null 2>&1
        n=$(taskset -c 1 wrk -t1 -c8 -d"$CG_DURATION" "${extra[@]}" "$(url "$c" small)" |
            awk '/requests in/ {print $1}')
        callgrind_control -d "${PID[$c]}" > /dev/null 2>&1
        sleep 1
        f=$(ls -t "$T/$c"/callgrind.out.* | head -1)
        total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
        echo "   $c: $n requests, $total instructions" >&2
        printf '| %s | %s | %s | %s |\n' "$c" "$n" "$total" "$((total / n))" >> "$T/cg.md"
        # The annotated profile, for reading where the instructions go.
        callgrind_annotate --inclusive=yes "$f" > "$ROOT/target/callgrind-$c.txt" 2>/dev/null || true
        # And by function alone (self cost), to compare two builds function by function.
        callgrind_annotate "$f" > "$ROOT/target/callgrind-$c-self.txt" 2>/dev/null || true
    done
    cat "$T/cg.md"
    echo "(profiles: target/callgrind-<case>.txt, self cost in target/callgrind-<case>-self.txt)" >&2
    exit 0
fi

# --- 5. runs -------------------------------------------------------------------------------
RES="$T/results.tsv"
: > "$RES"
run_wrk() { # case path duration [lua] -> prints wrk output
    local c=$1 p=$2 d=$3 lua=${4:-}
    local -a extra
    mapfile -t extra < <(wrk_args "$c")
    local -a s=()
    [ -n "$lua" ] && s=(-s "$lua")
    taskset -c 1 wrk -t1 -c"$CONNS" -d"$d" --latency "${s[@]}" "${extra[@]}" "$(url "$c" "$p")"
}
measure() { # case path rep label [lua]
    local c=$1 p=$2 rep=$3 label=$4 lua=${5:-}
    local pid=${PID[$c]:-} t0=0 t1=0 u0=0 u1=0 out
    [ -n "$pid" ] && { t0=$(cpu_ticks "$pid"); u0=$(user_ticks "$pid"); }
    out=$(run_wrk "$c" "$p" "$DURATION" "$lua")
    [ -n "$pid" ] && { t1=$(cpu_ticks "$pid"); u1=$(user_ticks "$pid"); }
    local f="$T/wrk-$label-$c-$p-$rep.txt"
    echo "$out" > "$f"
    python3 - "$label" "$c" "$p" "$rep" "$((t1 - t0))" "$TCK" "${pid:+1}" "$f" "$((u1 - u0))" >> "$RES" <<'EOF'
import re, sys
label, c, p, rep, ticks, tck, has, f, uticks = sys.argv[1:10]
out = open(f).read()
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
reqs = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
err = re.search(r"Socket errors: (.*)", out)
cpu = int(ticks) / int(tck) * 1e6 / reqs if has else float("nan")
user = int(uticks) / int(tck) * 1e6 / reqs if has else float("nan")
# Columns 11 and 12: the proxy's user and system CPU µs per request.
print("\t".join(map(str, [label, c, p, rep, reqs, rps, p50, p99, cpu, bad.group(1) if bad else 0, (err.group(1) if err else "").replace("\t", " ") or "-", user, cpu - user])))
EOF
    echo "   $label $c /$p rep $rep: $(tail -n1 "$RES" | cut -f5-10)" >&2
}

echo "== load before: $(cat /proc/loadavg)" >&2
echo "== warm-up" >&2
for c in "${CASES[@]}"; do for p in "${PATHS[@]}"; do run_wrk "$c" "$p" 1s > /dev/null; done; done
for rep in $(seq 1 "$REPS"); do
    for c in "${CASES[@]}"; do
        for p in "${PATHS[@]}"; do
            measure "$c" "$p" "$rep" peak
        done
    done
done

# Fixed rate: half of kg-full's median peak on /small, for every case. wrk has no rate
# option; each connection waits `delay` ms between responses and the next request.
HALF=$(awk -F'\t' '$1=="peak" && $2=="kg-full" && $3=="small" {print $6}' "$RES" | sort -g |
    awk '{a[NR]=$1} END {print a[int((NR+1)/2)] / 2}')
DELAY_MS=$(python3 -c "print(max(1, round($CONNS * 1000 / $HALF)))")
printf 'function delay() return %s end\n' "$DELAY_MS" > "$T/delay.lua"
echo "== fixed rate: target ~$HALF req/s ($CONNS connections, ${DELAY_MS} ms between requests)" >&2
for rep in $(seq 1 "$REPS"); do
    for c in "${CASES[@]}"; do
        measure "$c" small "$rep" half "$T/delay.lua"
    done
done
echo "== load after: $(cat /proc/loadavg)" >&2

RSS="$T/rss.tsv"
: > "$RSS"
for c in "${CASES[@]}"; do
    [ -n "${PID[$c]:-}" ] && printf '%s\t%s\n' "$c" "$(hwm_kib "${PID[$c]}")" >> "$RSS"
done

for c in kg-full kg-unique; do
    dropped=$(curl -s "http://127.0.0.1:${ADMIN[$c]}/metrics" | awk '/^keygate_spans_dropped_total/ {print $2}')
    echo "== $c: spans dropped by the exporter over the whole run: ${dropped:-unknown}" >&2
done
NG_SPILLS=$(grep -c 'buffered to a temporary file' "$T/ng/error.log" || true)
echo "== nginx proxy: $NG_SPILLS upstream responses buffered to a temporary file (default proxy_buffers)" >&2

# --- 6. report -----------------------------------------------------------------------------
python3 - "$RES" "$RSS" "$DURATION" "$REPS" "$CONNS" "$DELAY_MS" <<'EOF'
import sys, statistics as st, math
res, rss_f, dur, reps, conns, delay = sys.argv[1:7]
rows = [l.rstrip("\n").split("\t") for l in open(res) if l.strip()]
rss = dict(l.split() for l in open(rss_f) if l.strip())
cases = ["direct", "nginx", "kg-pass", "kg-full", "kg-unique", "kg-aws", "kg-oauth2", "kg-pg"]
def med(label, c, p, i):
    v = [float(r[i]) for r in rows if r[0] == label and r[1] == c and r[2] == p]
    v = [x for x in v if not math.isnan(x)]
    return st.median(v) if v else float("nan")
def bad(label, c, p):
    return sum(int(r[9]) for r in rows if r[0] == label and r[1] == c and r[2] == p)
def f(x, d=0):
    return "n/a" if math.isnan(x) else f"{x:,.{d}f}"
print(f"\n### Results (wrk -t1 -c{conns}, {dur} per run, median of {reps})\n")
print("| case | path | req/s | p50 ms | p99 ms | proxy CPU µs/req | of which user | of which system | proxy peak RSS MiB | non-2xx |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in cases:
    for p in ["small", "big"]:
        r = f"{int(rss[c]) / 1024:.1f}" if c in rss else "n/a"
        print(f"| {c} | /{p} | {f(med('peak', c, p, 5))} | {f(med('peak', c, p, 6), 2)} | {f(med('peak', c, p, 7), 2)} | {f(med('peak', c, p, 8), 1)} | {f(med('peak', c, p, 11), 1)} | {f(med('peak', c, p, 12), 1)} | {r} | {bad('peak', c, p)} |")
print(f"\n### Ratios\n")
print("| case | path | CPU/req vs nginx | CPU/req − nginx (µs) | req/s vs direct | req/s vs nginx |")
print("|---|---|---:|---:|---:|---:|")
for c in ["kg-pass", "kg-full", "kg-unique", "kg-aws", "kg-oauth2", "kg-pg"]:
    for p in ["small", "big"]:
        cpu, ncpu = med('peak', c, p, 8), med('peak', 'nginx', p, 8)
        rps, drps, nrps = med('peak', c, p, 5), med('peak', 'direct', p, 5), med('peak', 'nginx', p, 5)
        print(f"| {c} | /{p} | {cpu / ncpu:.2f} | {cpu - ncpu:+.1f} | {rps / drps:.2f} | {rps / nrps:.2f} |")
print(f"\n### Fixed rate on /small (half of kg-full's peak; {conns} connections, {delay} ms between requests)\n")
print("| case | achieved req/s | p50 ms | p99 ms | p99 added vs direct (ms) | proxy CPU µs/req |")
print("|---|---:|---:|---:|---:|---:|")
d99 = med('half', 'direct', 'small', 7)
for c in cases:
    p99 = med('half', c, 'small', 7)
    print(f"| {c} | {f(med('half', c, 'small', 5))} | {f(med('half', c, 'small', 6), 2)} | {f(p99, 2)} | {'—' if c == 'direct' else f'{p99 - d99:+.2f}'} | {f(med('half', c, 'small', 8), 1)} |")
EOF
