#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: repeatable for
# the same binary and load whatever else the machine is doing (wall-clock benchmarks on a
# shared 2-core VM are not). Use it to compare two builds of Trellis on the hot path; the
# kernel's share (syscalls) is not counted, see proxy-compare.sh for whole-process CPU.
#
# Usage: TRELLIS=path/to/trellis bench/callgrind-proxy.sh [REQUESTS] [CONNS]
#   prints "instructions/request: N" and leaves the profile in $OUT (callgrind_annotate it).
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS="${1:-10000}"
CONNS="${2:-4}"
TRELLIS="${TRELLIS:-${CARGO_TARGET_DIR:-target}/release/trellis}"
OUT="${OUT:-/tmp/trellis.callgrind}"
for tool in valgrind callgrind_control nginx h2load curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y valgrind nginx nghttp2-client)" >&2; exit 1; }
done
[[ -x "$TRELLIS" ]] || { echo "no trellis binary at $TRELLIS" >&2; exit 1; }

work="$(mktemp -d /tmp/callgrind-proxy.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 600); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "$1 did not come up" >&2; exit 1; }

UP=$(free_port); TR=$(free_port)
cat >"$work/up.conf" <<CONF
worker_processes 1; pid $work/up.pid; error_log $work/up.err warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $work/b; proxy_temp_path $work/p;
  fastcgi_temp_path $work/f; uwsgi_temp_path $work/u; scgi_temp_path $work/s;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { return 200 "ok"; } } }
CONF
nginx -c "$work/up.conf" -g 'daemon off;' & pids+=($!)
wait_http "http://127.0.0.1:$UP/"

mkdir -p "$work/cfg"
cat >"$work/cfg/bench.yaml" <<CONF
apiVersion: v1
kind: Pod
metadata: {name: bench-gw, namespace: edge, labels: {istio: bench-gw}}
spec: {containers: [{name: proxy, image: trellis}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench-gw, namespace: edge}
spec:
  selector: {istio: bench-gw}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*/*"]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: upstream, namespace: edge}
spec:
  hosts: [upstream.bench]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: $UP}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: edge}
spec:
  hosts: ["*"]
  gateways: [edge/bench-gw]
  http: [{route: [{destination: {host: upstream.bench, port: {number: 80}}}]}]
CONF
valgrind --tool=callgrind --callgrind-out-file="$OUT" --dump-instr=no \
  "$TRELLIS" proxy -c "$work/cfg" --workload edge/bench-gw --concurrency 1 \
  --listen-remap "80=127.0.0.1:$TR" --admin off --status off --no-watch --log-level warn \
  >"$work/trellis.log" 2>&1 & vg=$!; pids+=($vg)
wait_http "http://127.0.0.1:$TR/"
h2load --h1 -n 1000 -c "$CONNS" "http://127.0.0.1:$TR/" >/dev/null   # warm-up: pools, caches
callgrind_control --zero "$vg" >/dev/null
h2load --h1 -n "$REQUESTS" -c "$CONNS" "http://127.0.0.1:$TR/" >"$work/h2load.out"
grep -q "succeeded, 0 failed" <(grep "requests:" "$work/h2load.out") || { cat "$work/h2load.out" >&2; exit 1; }
callgrind_control --dump "$vg" >/dev/null
sleep 1
latest=$(ls -t "$OUT"* | head -1)
total=$(awk '/^summary:|^totals:/{print $2; exit}' "$latest")
echo "profile: $latest"
echo "requests: $REQUESTS over $CONNS connections"
echo "instructions/request: $((total / REQUESTS))"
