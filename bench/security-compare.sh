#!/usr/bin/env bash
# Side-by-side benchmark of the security path: Trellis vs nginx.
#   gateway: HTTPS gateway (TLS termination)                  vs nginx `listen ... ssl`
#   jwt:     HTTPS gateway + RequestAuthentication (inline JWKS, RS256) + AuthorizationPolicy
#            (the difference to `gateway` is the CPU JWT + authz add per request)
#   mesh:    client sidecar -> Istio mTLS (STRICT) -> server sidecar -> app
#                                                             vs an nginx pair with mutual TLS
# See bench/README.md. Usage: bench/security-compare.sh   (tunables are environment variables below)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10}"          # seconds per max-rate run
WARMUP="${WARMUP:-2}"               # seconds of wrk warm-up before every max-rate run
ROUNDS="${ROUNDS:-3}"               # max-rate and fixed-rate runs per target, interleaved; medians reported
CONNS="${CONNS:-32}"                # wrk connections for the max-rate run
RATE_CONNS="${RATE_CONNS:-4}"       # h2load connections for the fixed-rate run
RPS_PER_CONN="${RPS_PER_CONN:-500}" # h2load requests/s per connection (total = RATE_CONNS * this)
RATE_DURATION="${RATE_DURATION:-10}" # seconds per fixed-rate run (at least 4)
LOAD_CPUS="${LOAD_CPUS:-0}"         # cores for wrk / h2load
UPSTREAM_CPUS="${UPSTREAM_CPUS:-0}" # cores for the upstream nginx
PROXY_CPU="${PROXY_CPU:-1}"         # the one core every proxy (both of a pair, too) is pinned to
UPSTREAM_WORKERS="${UPSTREAM_WORKERS:-1}"
SCENARIOS="${SCENARIOS:-gateway jwt mesh}"
JWT_GOAL_US="${JWT_GOAL_US:-5}"     # goal: JWT + authz add less than this many µs CPU per request
((RATE_DURATION >= 4)) || { echo "RATE_DURATION must be at least 4 (s)" >&2; exit 1; }

for tool in nginx wrk h2load taskset curl openssl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y nginx wrk nghttp2-client openssl curl)" >&2; exit 1; }
done
python3 -c 'import jwt, cryptography' 2>/dev/null || { echo "python3 needs PyJWT and cryptography (pip install pyjwt cryptography)" >&2; exit 1; }

# The `dist` profile (LTO) when built, else `release`.
dist_bin="${CARGO_TARGET_DIR:-target}/dist/trellis"
[[ -x "$dist_bin" ]] || dist_bin="${CARGO_TARGET_DIR:-target}/release/trellis"
TRELLIS="${TRELLIS:-$dist_bin}"
[[ -x "$TRELLIS" ]] || { echo "no trellis binary at $TRELLIS: cargo build --release -p trellis-cli, or set TRELLIS=" >&2; exit 1; }

work="$(mktemp -d /tmp/security-compare.XXXXXX)"
pids=()
load_pid=""
cleanup() {
  local rc="${1:-$?}"
  trap - EXIT INT TERM
  [[ -n "$load_pid" ]] && kill -TERM "$load_pid" 2>/dev/null
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [[ -n "${KEEP_WORK:-}" ]]; then echo "raw output kept in $work" >&2; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'cleanup 130' INT
trap 'cleanup 143' TERM
# Run a load generator in the background and wait for it, so a signal interrupts the wait
# (bash defers traps until a foreground child exits) and cleanup can stop it.
load() { "$@" & load_pid=$!; wait "$load_pid"; load_pid=""; }
nap() { sleep "$1" & wait $!; } # a sleep that signals interrupt
die() { echo "$*" >&2; exit 1; }
has() { [[ " $SCENARIOS " == *" $1 "* ]]; }

# N distinct free ports on 127.0.0.1 (held open together, so no duplicates); the first one is
# also free on 127.0.0.2, where the server sidecar's inbound listener binds the app's port.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
held = []
def bind(ip, port=0):
    s = socket.socket(); s.bind((ip, port)); held.append(s); return s.getsockname()[1]
while True:
    p = bind("127.0.0.1")
    try:
        bind("127.0.0.2", p)
        break
    except OSError:
        pass
print(p, *[bind("127.0.0.1") for _ in range(int(sys.argv[1]) - 1)])
EOF
}
wait_ok() { # wait_ok URL NAME [curl args...]: until the URL answers 200 with the upstream's "ok"
  local url="$1" name="$2" body=""; shift 2
  for _ in $(seq 150); do
    body="$(curl -fsS --max-time 5 "$@" "$url" 2>/dev/null)" && [[ "$body" == ok ]] && return 0
    sleep 0.1
  done
  die "$name did not answer 'ok' on $url (last body: '$body'; KEEP_WORK=1 keeps the logs in $work)"
}
wait_tcp() { # wait_tcp HOST PORT NAME
  for _ in $(seq 150); do
    (: <"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$3 did not listen on $1:$2"
}
tls_params() { # tls_params URL [curl args...]: the protocol / cipher curl (OpenSSL, like wrk) negotiates
  local url="$1"; shift
  curl -sv -o /dev/null --max-time 5 "$@" "$url" 2>&1 | sed -n 's/.*SSL connection using //p' | head -1
}
status_of() { curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$@" 2>/dev/null || true; }

read -r UP_PORT TRG_PORT TRJ_PORT NGG_PORT A_PORT NC_PORT NS_PORT <<<"$(free_ports 7)"
B_HOST="b.secmesh.svc.cluster.local:8080"

# --- certificates (ECDSA P-256, as Trellis's mesh CA issues) ---------------------------------
pki="$work/pki"; mkdir -p "$pki"
(
  cd "$pki"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 2 -subj /CN=bench-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
  leaf() { # leaf NAME CN EXT
    openssl req "${ec[@]}" -keyout "$1.key" -out "$1.csr" -subj "/CN=$2"
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out "$1.crt" -extfile "$1.ext"
  }
  leaf server server.bench "subjectAltName=DNS:server.bench,IP:127.0.0.1
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature"
  leaf client client.bench "subjectAltName=DNS:client.bench
extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
  openssl verify -CAfile ca.crt server.crt client.crt # fails when any step above did
) >"$pki/openssl.log" 2>&1 || { cat "$pki/openssl.log" >&2; die "openssl failed"; }

# --- JWT: an RS256 key, its JWKS and a token (PyJWT + cryptography) ---------------------------
ISSUER="https://issuer.bench.test"
AUDIENCE="bench-api"
python3 - "$work" "$ISSUER" "$AUDIENCE" <<'EOF'
import base64, json, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
work, iss, aud = sys.argv[1:4]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
b64 = lambda n: base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
pub = key.public_key().public_numbers()
jwks = {"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256", "use": "sig", "n": b64(pub.n), "e": b64(pub.e)}]}
now = int(time.time())
claims = {"iss": iss, "aud": aud, "sub": "bench-user", "iat": now, "exp": now + 86400}
open(f"{work}/jwks.json", "w").write(json.dumps(jwks, separators=(",", ":")))
open(f"{work}/token", "w").write(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"}))
EOF
TOKEN="$(cat "$work/token")"

nginx_common="pid $work/%s.pid; error_log $work/%s.err warn;
events { worker_connections 8192; }"
nginx_temp="client_body_temp_path $work/tmp_%s; proxy_temp_path $work/ptmp_%s; fastcgi_temp_path $work/f_%s; uwsgi_temp_path $work/u_%s; scgi_temp_path $work/s_%s;"
nginx_proxy='proxy_http_version 1.1; proxy_set_header Connection "";'
declare -A PIDS=() URL=() HOSTHDR=() AUTH=() PROC=()
start() { # start NAME CMD...: pinned to the proxy core, output to $work/NAME.log
  local name="$1"; shift
  taskset -c "$PROXY_CPU" "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  PROC[$name]=$!
}

# --- upstream: nginx answering 200 "ok" (and /xfcc: the x-forwarded-client-cert it got) -------
# shellcheck disable=SC2059
cat >"$work/upstream.conf" <<EOF
worker_processes $UPSTREAM_WORKERS;
$(printf "$nginx_common" up up)
http {
  access_log off; $(printf "$nginx_temp" up up up up up)
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { return 200 "ok"; }
    location = /xfcc { return 200 "\$http_x_forwarded_client_cert"; }
  }
}
EOF
taskset -c "$UPSTREAM_CPUS" nginx -c "$work/upstream.conf" -g 'daemon off;' & pids+=($!); PROC[upstream]=$!
wait_ok "http://127.0.0.1:$UP_PORT/" upstream
PIDS[direct]="${PROC[upstream]}"; URL[direct]="http://127.0.0.1:$UP_PORT/"

# --- gateway manifests: Pod + Service + Gateway (HTTPS, SIMPLE, credentialName) + TLS Secret,
# and a STATIC ServiceEntry for the upstream + a VirtualService routing everything there ------
b64() { base64 -w0 <"$1"; }
mkdir -p "$work/gw-tls" "$work/gw-jwt"
cat >"$work/gw-tls/gateway.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: secbench-gw, namespace: secbench, labels: {istio: secbench-gw}}
spec: {containers: [{name: proxy, image: trellis}]}
---
apiVersion: v1
kind: Service
metadata: {name: secbench-gw, namespace: secbench}
spec: {selector: {istio: secbench-gw}, ports: [{name: https, port: 443}]}
---
apiVersion: v1
kind: Secret
metadata: {name: bench-cert, namespace: secbench}
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "$pki/server.crt")
  tls.key: $(b64 "$pki/server.key")
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secbench-gw, namespace: secbench}
spec:
  selector: {istio: secbench-gw}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*/*"]
    tls: {mode: SIMPLE, credentialName: bench-cert}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: upstream, namespace: secbench}
spec:
  hosts: [upstream.bench]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: $UP_PORT}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: secbench}
spec:
  hosts: ["*"]
  gateways: [secbench/secbench-gw]
  http: [{route: [{destination: {host: upstream.bench, port: {number: 80}}}]}]
EOF
cp "$work/gw-tls/gateway.yaml" "$work/gw-jwt/"
cat >"$work/gw-jwt/security.yaml" <<EOF
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: bench-jwt, namespace: secbench}
spec:
  selector: {matchLabels: {istio: secbench-gw}}
  jwtRules:
  - issuer: $ISSUER
    audiences: [$AUDIENCE]
    jwks: '$(cat "$work/jwks.json")'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: secbench}
spec:
  selector: {matchLabels: {istio: secbench-gw}}
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: ["*"]}}]
    to: [{operation: {paths: ["/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: secbench}
spec:
  selector: {matchLabels: {istio: secbench-gw}}
  action: DENY
  rules:
  - to: [{operation: {ports: ["443"], paths: ["/admin*"]}}]
EOF

# --- mesh manifests: server workload b (Pod 127.0.0.2, Service b:8080 -> the upstream's port),
# client workload a (WorkloadEntry), mesh-wide STRICT PeerAuthentication; auto mTLS (b is
# labelled as injected, so a knows b takes Istio mTLS) ------------------------------------------
mkdir -p "$work/mesh"
cat >"$work/mesh/mesh.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: secmesh, labels: {app: b, sidecar.istio.io/inject: "true"}}
spec:
  serviceAccountName: b
  containers: [{name: app, image: nginx, ports: [{name: http, containerPort: $UP_PORT}]}]
status: {podIP: 127.0.0.2}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: secmesh}
spec:
  selector: {app: b}
  ports: [{name: http, port: 8080, targetPort: $UP_PORT}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: a, namespace: secmesh}
spec: {address: 127.0.0.3, labels: {app: a}, serviceAccount: a}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
EOF

# The manifests must load cleanly (warnings fail too).
for d in gw-tls gw-jwt mesh; do
  "$TRELLIS" analyze --failure-threshold Warning "$work/$d" >"$work/analyze-$d.log" 2>&1 ||
    { cat "$work/analyze-$d.log" >&2; die "trellis analyze $d is not clean"; }
done

tls=(--cacert "$pki/ca.crt")
trellis_flags=(--admin off --status off --no-watch --log-level "${TRELLIS_LOG_LEVEL:-warn}")

# --- gateway / jwt: Trellis (TLS only, TLS + JWT + authz) and nginx (TLS) ---------------------
if has gateway || has jwt; then
  start trellis-gw "$TRELLIS" proxy -c "$work/gw-tls" --workload secbench/secbench-gw \
    --listen-remap "443=127.0.0.1:$TRG_PORT" "${trellis_flags[@]}"
  has jwt && start trellis-jwt "$TRELLIS" proxy -c "$work/gw-jwt" --workload secbench/secbench-gw \
    --listen-remap "443=127.0.0.1:$TRJ_PORT" "${trellis_flags[@]}"
  # shellcheck disable=SC2059
  cat >"$work/nginx-gw.conf" <<EOF
worker_processes 1;
$(printf "$nginx_common" ngg ngg)
http {
  access_log off; $(printf "$nginx_temp" ngg ngg ngg ngg ngg)
  keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGG_PORT ssl;
    ssl_certificate $pki/server.crt; ssl_certificate_key $pki/server.key; ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://up; $nginx_proxy }
  }
}
EOF
  start nginx-gw nginx -c "$work/nginx-gw.conf" -g 'daemon off;'

  wait_ok "https://127.0.0.1:$TRG_PORT/" "trellis gateway" "${tls[@]}"
  wait_ok "https://127.0.0.1:$NGG_PORT/" "nginx gateway" "${tls[@]}"
  if has gateway; then
    PIDS[gw-trellis]="${PROC[trellis-gw]}"; URL[gw-trellis]="https://127.0.0.1:$TRG_PORT/"
    PIDS[gw-nginx]="${PROC[nginx-gw]}"; URL[gw-nginx]="https://127.0.0.1:$NGG_PORT/"
  fi
  if has jwt; then
    u="https://127.0.0.1:$TRJ_PORT"
    bearer=(-H "Authorization: Bearer $TOKEN")
    wait_ok "$u/" "trellis gateway with JWT (token sent)" "${tls[@]}" "${bearer[@]}"
    s=$(status_of "${tls[@]}" "$u/"); [[ "$s" == 403 ]] || die "JWT gateway: no token gave $s, not 403"
    sig="${TOKEN##*.}"; c=A; if [[ "${sig:0:1}" == A ]]; then c=B; fi # flip the signature's first character
    s=$(status_of "${tls[@]}" -H "Authorization: Bearer ${TOKEN%.*}.$c${sig:1}" "$u/")
    [[ "$s" == 401 ]] || die "JWT gateway: a bad signature gave $s, not 401"
    s=$(status_of "${tls[@]}" "${bearer[@]}" "$u/admin"); [[ "$s" == 403 ]] || die "JWT gateway: /admin gave $s, not 403"
    echo "jwt gateway checks: no token 403, bad signature 401, /admin 403, token 200 ok" >&2
    PIDS[jwt-trellis]="${PROC[trellis-jwt]}"; URL[jwt-trellis]="$u/"; AUTH[jwt-trellis]="$TOKEN"
    PIDS[jwt-trellis-tls]="${PROC[trellis-gw]}"; URL[jwt-trellis-tls]="https://127.0.0.1:$TRG_PORT/"; AUTH[jwt-trellis-tls]="$TOKEN"
    PIDS[jwt-nginx]="${PROC[nginx-gw]}"; URL[jwt-nginx]="https://127.0.0.1:$NGG_PORT/"; AUTH[jwt-nginx]="$TOKEN"
  fi
  for p in "trellis gateway:$TRG_PORT" "nginx gateway:$NGG_PORT"; do
    echo "${p%:*}: $(tls_params "https://127.0.0.1:${p##*:}/" "${tls[@]}")" >>"$work/tls-params"
  done
fi

# --- mesh: Trellis sidecars a -> (mTLS) -> b -> upstream, and an nginx pair ------------------
if has mesh; then
  ca="$work/mesh-ca"
  # b first: it creates the CA in $ca; a then loads the same one.
  start trellis-b "$TRELLIS" proxy -c "$work/mesh" --workload secmesh/b --ca-dir "$ca" \
    --listen-remap "15006=127.0.0.2:$UP_PORT" --listen-remap 15001=127.0.0.1:0 \
    --listen-remap 8080=127.0.0.1:0 "${trellis_flags[@]}"
  wait_tcp 127.0.0.2 "$UP_PORT" "trellis sidecar b (inbound)"
  start trellis-a "$TRELLIS" proxy -c "$work/mesh" --workload secmesh/a --ca-dir "$ca" \
    --listen-remap 15006=127.0.0.1:0 --listen-remap 15001=127.0.0.1:0 \
    --listen-remap "8080=127.0.0.1:$A_PORT" "${trellis_flags[@]}"

  # shellcheck disable=SC2059
  cat >"$work/nginx-server.conf" <<EOF
worker_processes 1;
$(printf "$nginx_common" ngs ngs)
http {
  access_log off; $(printf "$nginx_temp" ngs ngs ngs ngs ngs)
  keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NS_PORT ssl;
    ssl_certificate $pki/server.crt; ssl_certificate_key $pki/server.key; ssl_protocols TLSv1.2 TLSv1.3;
    ssl_client_certificate $pki/ca.crt; ssl_verify_client on;
    location / { proxy_pass http://up; $nginx_proxy }
  }
}
EOF
  # shellcheck disable=SC2059
  cat >"$work/nginx-client.conf" <<EOF
worker_processes 1;
$(printf "$nginx_common" ngc ngc)
http {
  access_log off; $(printf "$nginx_temp" ngc ngc ngc ngc ngc)
  keepalive_requests 1000000;
  upstream srv { server 127.0.0.1:$NS_PORT; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NC_PORT;
    location / {
      proxy_pass https://srv; $nginx_proxy
      proxy_ssl_certificate $pki/client.crt; proxy_ssl_certificate_key $pki/client.key;
      proxy_ssl_trusted_certificate $pki/ca.crt; proxy_ssl_verify on;
      proxy_ssl_name server.bench; proxy_ssl_session_reuse on; proxy_ssl_protocols TLSv1.2 TLSv1.3;
    }
  }
}
EOF
  start nginx-server nginx -c "$work/nginx-server.conf" -g 'daemon off;'
  start nginx-client nginx -c "$work/nginx-client.conf" -g 'daemon off;'

  wait_ok "http://127.0.0.1:$A_PORT/" "trellis sidecar a (outbound)" -H "Host: $B_HOST"
  wait_ok "http://127.0.0.1:$NC_PORT/" "nginx client proxy" -H "Host: $B_HOST"
  xfcc="$(curl -fsS -H "Host: $B_HOST" "http://127.0.0.1:$A_PORT/xfcc")"
  [[ "$xfcc" == By=spiffe://cluster.local/ns/secmesh/sa/b\;*URI=spiffe://cluster.local/ns/secmesh/sa/a ]] ||
    die "the server sidecar did not see a's mTLS identity: x-forwarded-client-cert '$xfcc'"
  # STRICT: plaintext, and TLS without a client certificate, to b's inbound port are refused.
  s=$(status_of "http://127.0.0.2:$UP_PORT/"); [[ "$s" == 000 ]] || die "b's inbound answered plaintext with $s"
  s=$(status_of -k "https://127.0.0.2:$UP_PORT/"); [[ "$s" == 000 ]] || die "b's inbound answered TLS without a client cert with $s"
  # The nginx server side: plaintext and no client certificate get 400.
  s=$(status_of "http://127.0.0.1:$NS_PORT/"); [[ "$s" == 400 ]] || die "nginx server answered plaintext with $s"
  s=$(status_of -k "https://127.0.0.1:$NS_PORT/"); [[ "$s" == 400 ]] || die "nginx server answered no client cert with $s"
  echo "mesh checks: a -> b carries XFCC $xfcc; b refuses plaintext and cert-less TLS; nginx server 400s both" >&2
  echo "nginx server side (mutual TLS): $(tls_params "https://127.0.0.1:$NS_PORT/" "${tls[@]}" \
    --cert "$pki/client.crt" --key "$pki/client.key")" >>"$work/tls-params"

  PIDS[mesh-trellis]="${PROC[trellis-a]} ${PROC[trellis-b]}"; URL[mesh-trellis]="http://127.0.0.1:$A_PORT/"; HOSTHDR[mesh-trellis]="$B_HOST"
  PIDS[mesh-nginx]="${PROC[nginx-client]} ${PROC[nginx-server]}"; URL[mesh-nginx]="http://127.0.0.1:$NC_PORT/"; HOSTHDR[mesh-nginx]="$B_HOST"
fi

# CPU ticks (utime+stime) summed over processes and their children (nginx master + worker).
tree() { echo "$1"; pgrep -P "$1" || true; }
alive() { # alive PID...: every measured process is still running (something else may kill it)
  local p
  for p in "$@"; do
    [[ -r "/proc/$p/stat" ]] && continue
    local n name="$p"
    for n in "${!PROC[@]}"; do [[ "${PROC[$n]}" == "$p" ]] && name="$n (pid $p)"; done
    die "$name exited during the run (killed from outside?); its log: $work/${name%% *}.log (KEEP_WORK=1 keeps it)"
  done
}
cpu_ticks() {
  local sum=0 p root t
  alive "$@"
  for root in "$@"; do
    for p in $(tree "$root"); do
      # fields after the ")" of comm: utime and stime are fields 14 and 15 of the stat line
      t=$(awk '{sub(/.*\) /,""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null) || continue
      sum=$((sum + t))
    done
  done
  echo "$sum"
}
hwm_kib() { # peak RSS summed over the process trees
  local sum=0 p root t
  alive "$@"
  for root in "$@"; do
    for p in $(tree "$root"); do
      t=$(awk '/^VmHWM/{print $2}' "/proc/$p/status" 2>/dev/null) || continue
      sum=$((sum + t))
    done
  done
  echo "$sum"
}

targets=(direct)
has gateway && targets+=(gw-trellis gw-nginx)
has jwt && targets+=(jwt-trellis jwt-trellis-tls jwt-nginx)
has mesh && targets+=(mesh-trellis mesh-nginx)

hdrs() { # hdrs TARGET wrk|h2load: the extra header arguments for TARGET
  local h=()
  if [[ -n "${HOSTHDR[$1]:-}" ]]; then
    if [[ "$2" == wrk ]]; then h+=(-H "Host: ${HOSTHDR[$1]}"); else h+=(-H ":authority: ${HOSTHDR[$1]}"); fi
  fi
  [[ -n "${AUTH[$1]:-}" ]] && h+=(-H "Authorization: Bearer ${AUTH[$1]}")
  if ((${#h[@]})); then printf '%s\0' "${h[@]}"; fi
}

uptime >"$work/uptime.before"
for round in $(seq "$ROUNDS"); do
  for t in "${targets[@]}"; do
    echo "== round $round/$ROUNDS: $t (${URL[$t]})" >&2
    mapfile -d '' h < <(hdrs "$t" wrk)
    read -ra tp <<<"${PIDS[$t]}"
    load taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${h[@]}" "${URL[$t]}" >/dev/null
    c0=$(cpu_ticks "${tp[@]}"); s0=$(date +%s.%N)
    load taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${h[@]}" "${URL[$t]}" >"$work/$t.$round.wrk"
    c1=$(cpu_ticks "${tp[@]}"); s1=$(date +%s.%N)
    echo "$((c1 - c0)) $s0 $s1" >"$work/$t.$round.cpu"
  done
done
# Fixed rate: latency from h2load's per-request log, and the proxy's CPU over a window inside the
# measured period (after the 1 s warm-up, 1 s before the end), divided by the requests the log
# shows started in that window.
for round in $(seq "$ROUNDS"); do
  for t in "${targets[@]}"; do
    echo "== fixed rate, round $round/$ROUNDS: $t" >&2
    mapfile -d '' h < <(hdrs "$t" h2load)
    read -ra tp <<<"${PIDS[$t]}"
    taskset -c "$LOAD_CPUS" h2load --h1 -c"$RATE_CONNS" --rps="$RPS_PER_CONN" -D "$RATE_DURATION" \
      --warm-up-time=1 --log-file="$work/$t.$round.h2log" "${h[@]}" "${URL[$t]}" >"$work/$t.$round.h2load" &
    load_pid=$!
    nap 1.5
    c0=$(cpu_ticks "${tp[@]}"); s0=$(date +%s.%N)
    nap "$((RATE_DURATION - 2))"
    c1=$(cpu_ticks "${tp[@]}"); s1=$(date +%s.%N)
    wait "$load_pid"; load_pid=""
    echo "$((c1 - c0)) $s0 $s1" >"$work/$t.$round.ratecpu"
  done
done
for t in "${targets[@]}"; do read -ra tp <<<"${PIDS[$t]}"; hwm_kib "${tp[@]}" >"$work/$t.hwm"; done
uptime >"$work/uptime.after"

python3 - "$work" "$(getconf CLK_TCK)" "${targets[*]}" "$ROUNDS" "$CONNS" "$DURATION" "$RATE_CONNS" "$RPS_PER_CONN" "$JWT_GOAL_US" <<'EOF'
import re, statistics, sys
work, hz, targets, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), int(sys.argv[4])
conns, dur, rconns, rps, goal = sys.argv[5:10]
goal = float(goal)
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")
r = {}
errors = []
for t in targets:
    runs = []
    for i in range(1, rounds + 1):
        w = open(f"{work}/{t}.{i}.wrk").read()
        ticks, s0, s1 = open(f"{work}/{t}.{i}.cpu").read().split()
        reqs = int(re.search(r"(\d+) requests in", w).group(1))
        cpu_s = int(ticks) / hz
        runs.append({"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", w).group(1)),
                     "us_req": cpu_s * 1e6 / max(reqs, 1),
                     "util": 100 * cpu_s / (float(s1) - float(s0))})
        for m in re.finditer(r"Non-2xx or 3xx responses: \d+|Socket errors: .*", w):
            errors.append(f"{t} round {i}: {m.group(0)}")
    d = {k: statistics.median(x[k] for x in runs) for k in ("rps", "us_req", "util")}
    d["us_runs"] = [x["us_req"] for x in runs]
    d["us_min"] = min(x["us_req"] for x in runs)
    d["us_max"] = max(x["us_req"] for x in runs)
    lat, bad, rate_us = [], 0, []
    for i in range(1, rounds + 1):
        ticks, s0, s1 = open(f"{work}/{t}.{i}.ratecpu").read().split()
        n = 0
        for line in open(f"{work}/{t}.{i}.h2log"):
            f = line.split()
            if len(f) >= 3:
                lat.append(float(f[2]))
                bad += f[1] != "200"
                n += float(s0) * 1e6 <= float(f[0]) < float(s1) * 1e6
        rate_us.append(int(ticks) / hz * 1e6 / max(n, 1))
    if bad:
        errors.append(f"{t}: {bad} non-200 of {len(lat)} fixed-rate requests")
    d["rate_us"], d["rate_runs"] = statistics.median(rate_us), rate_us
    d["fr50"], d["fr99"], d["fr999"] = pct(lat, .5), pct(lat, .99), pct(lat, .999)
    d["rss"] = int(open(f"{work}/{t}.hwm").read()) / 1024
    r[t] = d

scenarios = [
    ("gateway", "Gateway, TLS termination (HTTPS keep-alive in, plain HTTP to the upstream)",
     [("direct", "direct (upstream, plain HTTP)"), ("gw-trellis", "trellis (TLS)"), ("gw-nginx", "nginx (TLS)")]),
    ("jwt", "Gateway, TLS + JWT (RS256, inline JWKS) + authz; every request carries the bearer token",
     [("direct", "direct (upstream, plain HTTP)"), ("jwt-trellis", "trellis (TLS + JWT + authz)"),
      ("jwt-trellis-tls", "trellis (TLS only, token ignored)"), ("jwt-nginx", "nginx (TLS only, token ignored)")]),
    ("mesh", "Sidecar pair: client proxy -> mutual TLS -> server proxy -> upstream (CPU and RSS: both proxies summed)",
     [("direct", "direct (upstream, plain HTTP)"), ("mesh-trellis", "trellis pair (Istio mTLS, STRICT)"),
      ("mesh-nginx", "nginx pair (mutual TLS)")]),
]
print(f"max rate: wrk -t1 -c{conns} -d{dur}s keep-alive; fixed rate: h2load --h1 -c{rconns} --rps={rps} "
      f"({int(rconns) * int(rps)} req/s total); {rounds} interleaved round(s) of each: rates and CPU are "
      f"medians over the rounds, fixed-rate percentiles are over all rounds' requests")
span = rounds > 1
for key, title, rows in scenarios:
    rows = [(t, label) for t, label in rows if t in r]
    if len(rows) <= 1:
        continue
    ng = next((t for t, _ in rows if t.endswith("-nginx")), None)
    def ratio(t, k):
        return f"{r[t][k] / r[ng][k]:.2f}x" if ng and r[ng][k] else "-"
    print(f"\n### {title}\n")
    print("| target | req/s | vs nginx | fixed-rate p50 | p99 | p99.9 | added p50 vs direct | proxy CPU µs/req"
          + (" (min–max)" if span else "") + " | vs nginx | req/s per proxy core | proxy core busy "
          "| CPU µs/req at fixed rate | peak RSS MiB | vs nginx |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t, label in rows:
        d = r[t]
        direct = t == "direct"
        added = f"{d['fr50'] - r['direct']['fr50']:+.0f} µs" if "direct" in r and not direct else "-"
        cpu = f"{d['us_req']:.2f}" + (f" ({d['us_min']:.1f}–{d['us_max']:.1f})" if span else "")
        print(f"| {label} | {d['rps']:.0f} | {ratio(t, 'rps') if not direct else '-'} | {d['fr50']:.0f} µs "
              f"| {d['fr99']:.0f} µs | {d['fr999']:.0f} µs | {added} | {cpu} | {ratio(t, 'us_req') if not direct else '-'} "
              f"| {1e6 / d['us_req']:.0f} | {d['util']:.0f}% | {d['rate_us']:.2f} | {d['rss']:.1f} "
              f"| {ratio(t, 'rss') if not direct else '-'} |")
    tr = next((t for t, _ in rows if t.endswith("-trellis")), None)
    if tr and ng:
        a, b = 1e6 / r[tr]["us_req"], 1e6 / r[ng]["us_req"]
        print(f"\ngoal, Trellis >= nginx throughput per core: {a:.0f} vs {b:.0f} req/s per core "
              f"({a / b:.2f}x): {'met' if a >= b else 'NOT met'}")
    if key == "jwt" and "jwt-trellis" in r:
        lines = []
        for base, what in (("gw-trellis", "minus the TLS-only gateway (no token sent; the first table)"),
                           ("jwt-trellis-tls", "minus the TLS-only gateway sent the same token (header cost cancels)")):
            if base not in r:
                continue
            lines.append(f"JWT + authz added CPU per request (cached keys), TLS+JWT+authz {what}:")
            for k, runs, how in (("us_req", "us_runs", "max rate"), ("rate_us", "rate_runs", "fixed rate")):
                dd = r["jwt-trellis"][k] - r[base][k]
                pairs = [a - b for a, b in zip(r["jwt-trellis"][runs], r[base][runs])]
                paired = (f"; per-round paired differences: median {statistics.median(pairs):+.2f}, "
                          f"range {min(pairs):+.1f} to {max(pairs):+.1f} µs" if span else "")
                lines.append(f"  {how}: {dd:+.2f} µs (difference of medians{paired}); goal < {goal:g} µs: "
                             f"{'met' if dd < goal else 'NOT met'}")
        print("\n" + "\n".join(lines))
if errors:
    print("\nerrors:\n" + "\n".join(errors))
print("\n`direct` is the upstream nginx itself, hit with no proxy in between: its CPU/RSS columns are the "
      "upstream's, not a proxy's. \"req/s per proxy core\" is 1e6 / (CPU µs per request at max rate). "
      "\"CPU µs/req at fixed rate\" is the proxy's CPU over the fixed-rate run (median of the rounds), "
      "with the proxy far from saturated.")
EOF
echo
echo "TLS negotiated by curl with OpenSSL defaults (as wrk and h2load):"
sed 's/^/  /' "$work/tls-params" 2>/dev/null || true
echo "load average before: $(cat "$work/uptime.before")"
echo "load average after:  $(cat "$work/uptime.after")"
