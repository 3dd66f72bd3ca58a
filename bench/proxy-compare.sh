#!/usr/bin/env bash
# Side-by-side HTTP/1.1 proxy benchmark: Trellis vs nginx vs HAProxy, plus the upstream direct.
# See bench/README.md. Usage: bench/proxy-compare.sh   (tunables are environment variables below)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10}"          # seconds per max-rate run
CONNS="${CONNS:-32}"                # wrk connections for the max-rate run
RATE_CONNS="${RATE_CONNS:-4}"       # h2load connections for the fixed-rate run
RPS_PER_CONN="${RPS_PER_CONN:-500}" # h2load requests/s per connection (total = RATE_CONNS * this)
RATE_DURATION="${RATE_DURATION:-10}"
LOAD_CPUS="${LOAD_CPUS:-0}"         # cores for wrk / h2load
UPSTREAM_CPUS="${UPSTREAM_CPUS:-0}" # cores for the upstream nginx
PROXY_CPU="${PROXY_CPU:-1}"         # the one core every proxy is pinned to
UPSTREAM_WORKERS="${UPSTREAM_WORKERS:-1}"
TARGETS="${TARGETS:-direct trellis nginx haproxy}"

for tool in nginx haproxy wrk h2load taskset curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y nginx haproxy wrk nghttp2-client)" >&2; exit 1; }
done

# The `dist` profile (LTO) when built, else `release`.
dist_bin="${CARGO_TARGET_DIR:-target}/dist/trellis"
[[ -x "$dist_bin" ]] || dist_bin="${CARGO_TARGET_DIR:-target}/release/trellis"
TRELLIS="${TRELLIS:-$dist_bin}"
[[ -x "$TRELLIS" ]] || { echo "no trellis binary at $TRELLIS: cargo build --release -p trellis-cli, or set TRELLIS=" >&2; exit 1; }

work="$(mktemp -d /tmp/proxy-compare.XXXXXX)"
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # wait_http URL NAME
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$2 did not come up on $1" >&2; exit 1
}

UP_PORT=$(free_port); TR_PORT=$(free_port); NG_PORT=$(free_port); HA_PORT=$(free_port)
declare -A PORT=([direct]=$UP_PORT [trellis]=$TR_PORT [nginx]=$NG_PORT [haproxy]=$HA_PORT)
declare -A PID=()

nginx_common="pid $work/%s.pid; error_log $work/%s.err warn;
events { worker_connections 8192; }"
nginx_temp="client_body_temp_path $work/tmp_%s; proxy_temp_path $work/ptmp_%s; fastcgi_temp_path $work/f_%s; uwsgi_temp_path $work/u_%s; scgi_temp_path $work/s_%s;"

# --- upstream: nginx answering 200 "ok" ---------------------------------------------------
# shellcheck disable=SC2059
cat >"$work/upstream.conf" <<EOF
worker_processes $UPSTREAM_WORKERS;
$(printf "$nginx_common" up up)
http {
  access_log off; $(printf "$nginx_temp" up up up up up)
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP_PORT; location / { return 200 "ok"; } }
}
EOF
taskset -c "$UPSTREAM_CPUS" nginx -c "$work/upstream.conf" -g 'daemon off;' & PID[direct]=$!; pids+=($!)
wait_http "http://127.0.0.1:$UP_PORT/" upstream

# --- (a) Trellis: Gateway + ServiceEntry(STATIC) + VirtualService ----------------------------
mkdir -p "$work/trellis"
cat >"$work/trellis/bench.yaml" <<EOF
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
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*/*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: upstream, namespace: edge}
spec:
  hosts: [upstream.bench]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: $UP_PORT}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: edge}
spec:
  hosts: ["*"]
  gateways: [edge/bench-gw]
  http: [{route: [{destination: {host: upstream.bench, port: {number: 80}}}]}]
EOF
taskset -c "$PROXY_CPU" "$TRELLIS" proxy -c "$work/trellis" --workload edge/bench-gw \
  --listen-remap "80=127.0.0.1:$TR_PORT" --admin off --status off --no-watch --log-level warn \
  >"$work/trellis.log" 2>&1 & PID[trellis]=$!; pids+=($!)

# --- (b) nginx reverse proxy -----------------------------------------------------------------
# shellcheck disable=SC2059
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
$(printf "$nginx_common" ng ng)
http {
  access_log off; $(printf "$nginx_temp" ng ng ng ng ng)
  keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NG_PORT;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
taskset -c "$PROXY_CPU" nginx -c "$work/nginx.conf" -g 'daemon off;' & PID[nginx]=$!; pids+=($!)

# --- (c) HAProxy -----------------------------------------------------------------------------
cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:$HA_PORT
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:$UP_PORT
EOF
taskset -c "$PROXY_CPU" haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 & PID[haproxy]=$!; pids+=($!)

for t in trellis nginx haproxy; do wait_http "http://127.0.0.1:${PORT[$t]}/" "$t"; done
for t in $TARGETS; do
  body="$(curl -fsS "http://127.0.0.1:${PORT[$t]}/")"
  [[ "$body" == ok ]] || { echo "$t returned '$body', not the upstream's 'ok'" >&2; exit 1; }
done

# CPU ticks (utime+stime) summed over a process and its children (nginx master + worker).
tree() { echo "$1"; pgrep -P "$1" || true; }
cpu_ticks() {
  local sum=0 p
  for p in $(tree "$1"); do
    # fields after the ")" of comm: utime and stime are fields 14 and 15 of the stat line
    sum=$((sum + $(awk '{sub(/.*\) /,""); print $12 + $13}' "/proc/$p/stat")))
  done
  echo "$sum"
}
rss_kib() { # current RSS summed over the process tree
  local sum=0 p
  for p in $(tree "$1"); do sum=$((sum + $(awk '/^VmRSS/{print $2}' "/proc/$p/status"))); done
  echo "$sum"
}
hwm_kib() { # peak RSS summed over the process tree
  local sum=0 p
  for p in $(tree "$1"); do sum=$((sum + $(awk '/^VmHWM/{print $2}' "/proc/$p/status"))); done
  echo "$sum"
}

for t in $TARGETS; do
  url="http://127.0.0.1:${PORT[$t]}/"
  echo "== $t ($url)" >&2
  load taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d2s "$url" >/dev/null # warm-up
  c0=$(cpu_ticks "${PID[$t]}"); s0=$(date +%s.%N)
  load taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url" >"$work/$t.wrk"
  c1=$(cpu_ticks "${PID[$t]}"); s1=$(date +%s.%N)
  echo "$((c1 - c0)) $s0 $s1" >"$work/$t.cpu"
  # RSS in steady state is sampled halfway through the fixed-rate run.
  ( sleep "$(( (RATE_DURATION + 2) / 2 ))"; rss_kib "${PID[$t]}" >"$work/$t.rss" ) & sampler=$!
  load taskset -c "$LOAD_CPUS" h2load --h1 -c"$RATE_CONNS" --rps="$RPS_PER_CONN" -D "$RATE_DURATION" \
    --warm-up-time=1 --log-file="$work/$t.h2log" "$url" >"$work/$t.h2load"
  wait "$sampler" || true
  hwm_kib "${PID[$t]}" >"$work/$t.hwm"
done

python3 - "$work" "$(getconf CLK_TCK)" "$TARGETS" "$CONNS" "$DURATION" "$RATE_CONNS" "$RPS_PER_CONN" <<'EOF'
import re, sys
work, hz, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
conns, dur, rconns, rps = sys.argv[4:8]
unit = {"us": 1.0, "ms": 1e3, "s": 1e6}
def usec(s):
    m = re.match(r"([\d.]+)(us|ms|s)$", s)
    return float(m.group(1)) * unit[m.group(2)]
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")
r = {}
for t in targets:
    w = open(f"{work}/{t}.wrk").read()
    d = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", w).group(1)),
         "reqs": int(re.search(r"(\d+) requests in", w).group(1)),
         "p50": usec(re.search(r"^\s+50%\s+(\S+)", w, re.M).group(1)),
         "p99": usec(re.search(r"^\s+99%\s+(\S+)", w, re.M).group(1))}
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", w)
    d["errors"] = errs.group(0) if errs else ""
    ticks, s0, s1 = open(f"{work}/{t}.cpu").read().split()
    cpu_s = int(ticks) / hz
    d["us_req"] = cpu_s * 1e6 / d["reqs"]
    d["util"] = 100 * cpu_s / (float(s1) - float(s0))
    lat, bad = [], 0
    for line in open(f"{work}/{t}.h2log"):
        f = line.split()
        if len(f) >= 3:
            lat.append(float(f[2]))
            bad += f[1] != "200"
    d["fr_n"], d["fr_bad"] = len(lat), bad
    d["fr50"], d["fr99"], d["fr999"] = pct(lat, .5), pct(lat, .99), pct(lat, .999)
    d["rss"] = int(open(f"{work}/{t}.hwm").read()) / 1024
    d["steady"] = int(open(f"{work}/{t}.rss").read()) / 1024
    r[t] = d

def ratio(t, k):
    return f"{r[t][k] / r['nginx'][k]:.2f}x" if "nginx" in r and r["nginx"][k] else "-"
print(f"max rate: wrk -t1 -c{conns} -d{dur}s (HTTP/1.1 keep-alive); "
      f"fixed rate: h2load --h1 -c{rconns} --rps={rps} ({int(rconns) * int(rps)} req/s total)\n")
print("| target | req/s | vs nginx | p50 | p99 | fixed-rate p50 | p99 | p99.9 | added p50 / p99 vs direct | proxy CPU µs/req | vs nginx | proxy core busy | peak RSS MiB | RSS at fixed rate MiB | vs nginx |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t, d in r.items():
    added = (f"{d['fr50'] - r['direct']['fr50']:+.0f} / {d['fr99'] - r['direct']['fr99']:+.0f} µs"
             if "direct" in r and t != "direct" else "-")
    print(f"| {t} | {d['rps']:.0f} | {ratio(t, 'rps')} | {d['p50']:.0f} µs | {d['p99']:.0f} µs "
          f"| {d['fr50']:.0f} µs | {d['fr99']:.0f} µs | {d['fr999']:.0f} µs | {added} "
          f"| {d['us_req']:.2f} | {ratio(t, 'us_req')} | {d['util']:.0f}% | {d['rss']:.1f} | {d['steady']:.1f} | {ratio(t, 'steady')} |")
notes = [f"{t}: {d['errors']}" for t, d in r.items() if d["errors"]]
notes += [f"{t}: {d['fr_bad']} non-200 of {d['fr_n']} fixed-rate requests" for t, d in r.items() if d["fr_bad"]]
if notes:
    print("\nerrors:\n" + "\n".join(notes))
print("\n`direct` is the upstream nginx itself, hit with no proxy in between: its CPU/RSS columns "
      "are the upstream's, not a proxy's.")
EOF
