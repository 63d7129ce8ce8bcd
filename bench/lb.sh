#!/usr/bin/env bash
# Load benchmark of the LB data path: new connections per second (no
# keep-alive) through `zdt lb` and through haproxy (mode tcp, one thread) to
# one nginx, measured in the same run beside the direct path.
#
#   bench/lb.sh [DURATION_SECONDS] [RATES...]      defaults: 10 5000 10000
#
# Generator: GEN=zdt (default: `zdt attack`, open model, latency from the
# due time, reports its schedule lag) or GEN=oha (cargo install oha; run with
# --latency-correction). Needs nginx, haproxy and a release zdt
# (ZDT=path, default target/x86_64-unknown-linux-gnu/release/zdt, then
# target/release/zdt; built with `cargo build --release` if neither exists).
# Prints a Markdown table: achieved rate, success, p50/p99 end to end (from
# the due time), the generator's schedule lag, added p50/p99 vs direct, and
# the proxy's CPU per connection from /proc/PID/stat (utime+stime).
set -euo pipefail

DURATION=${1:-10}
shift || true
RATES=("${@:-5000 10000}")
RATES=(${RATES[@]})
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/zdt-bench-lb.XXXXXX)
NGINX_PORT=18900 ZDT_PORT=18901 HAPROXY_PORT=18902 ADMIN_PORT=18903
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null || { echo "bench/lb.sh: needs $1 ($2)" >&2; exit 2; }; }
need nginx "apt-get install nginx-light"
need haproxy "apt-get install haproxy"
GEN=${GEN:-zdt}
[ "$GEN" = oha ] && need oha "cargo install oha"
need python3 "apt-get install python3"

ZDT=${ZDT:-}
if [ -z "$ZDT" ]; then
  for c in "$ROOT/target/x86_64-unknown-linux-gnu/release/zdt" "$ROOT/target/release/zdt"; do
    [ -x "$c" ] && ZDT=$c && break
  done
fi
if [ -z "$ZDT" ]; then
  (cd "$ROOT" && cargo build --release --bin zdt) >&2
  ZDT=$ROOT/target/release/zdt
fi
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
MAXCONN=$(( (NOFILE - 512) / 2 ))  # two descriptors per proxied connection

# --- nginx: one worker, 200 with a tiny body, no logs -----------------------
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections $MAXCONN; }
http {
  access_log off;
  keepalive_timeout 0;
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=65535;
    location / { return 200 "ok\n"; }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log"

# --- zdt lb --------------------------------------------------------------------
cat > "$WORK/lb.yaml" <<LB
frontend: 127.0.0.1:$ZDT_PORT
admin: 127.0.0.1:$ADMIN_PORT
profile: custom
probe: { interval: 1s, timeout: 1s, unhealthy_threshold: 2, healthy_threshold: 1 }
max_connections: $MAXCONN
backends:
  - name: nginx
    address: 127.0.0.1:$NGINX_PORT
LB
"$ZDT" lb --config "$WORK/lb.yaml" > "$WORK/lb-events.jsonl" 2> "$WORK/lb.log" &
ZDT_PID=$!
PIDS+=("$ZDT_PID")

# --- haproxy: mode tcp, one thread -------------------------------------------
cat > "$WORK/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn $MAXCONN
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend be
backend be
  server nginx 127.0.0.1:$NGINX_PORT
HAP
haproxy -f "$WORK/haproxy.cfg" -db > "$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")

# Wait until all three answer and the LB's backend is healthy.
for i in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$ADMIN_PORT/wait-healthy?count=1&timeout=100ms" >/dev/null 2>&1 \
    && curl -sf "http://127.0.0.1:$ZDT_PORT/" >/dev/null && curl -sf "http://127.0.0.1:$HAPROXY_PORT/" >/dev/null; then
    break
  fi
  sleep 0.1
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)
OHA_JSON=(-j)
if [ "$GEN" = oha ] && oha --help 2>&1 | grep -q -- '--output-format'; then OHA_JSON=(--output-format json); fi

# One measurement: the generator at RATE against PORT for DURATION seconds.
run() { # name port rate pid|-
  local name=$1 port=$2 rate=$3 pid=$4 before after
  [ "$pid" != - ] && before=$(cpu_ticks "$pid")
  if [ "$GEN" = oha ]; then
    oha --no-tui "${OHA_JSON[@]}" --disable-keepalive --latency-correction \
        -q "$rate" -z "${DURATION}s" -t 10s "http://127.0.0.1:$port/" > "$WORK/$name-$rate.json" 2> "$WORK/$name-$rate.err" || true
  else
    "$ZDT" attack "http://127.0.0.1:$port/" --rate "$rate/s" --duration "${DURATION}s" --timeout 10s \
        --keepalive false --max-inflight $MAXCONN --format json > "$WORK/$name-$rate.json" 2> "$WORK/$name-$rate.err" || true
  fi
  if [ "$pid" != - ]; then
    after=$(cpu_ticks "$pid")
    echo $(( after - before )) > "$WORK/$name-$rate.cpu"
  else
    echo 0 > "$WORK/$name-$rate.cpu"
  fi
  sleep 2 # let TIME_WAIT and the proxies settle between runs
}

for rate in "${RATES[@]}"; do
  run direct "$NGINX_PORT" "$rate" -
  run zdt "$ZDT_PORT" "$rate" "$ZDT_PID"
  run haproxy "$HAPROXY_PORT" "$rate" "$HAPROXY_PID"
done

python3 - "$WORK" "$CLK_TCK" "$DURATION" "$GEN" "${RATES[@]}" <<'PY'
import json, sys
work, clk, duration, gen, rates = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5:]
def load(name, rate):
    with open(f"{work}/{name}-{rate}.json") as f:
        j = json.load(f)
    cpu = int(open(f"{work}/{name}-{rate}.cpu").read()) / clk
    if gen == "oha":
        s = j["summary"]
        lp = j.get("latencyPercentiles") or {}
        total = sum(j.get("statusCodeDistribution", {}).values()) + sum(j.get("errorDistribution", {}).values())
        ok = j.get("statusCodeDistribution", {}).get("200", 0)
        return dict(rps=s.get("requestsPerSec", 0), total=total, ok=ok,
                    p50=(lp.get("p50") or 0) * 1e3, p99=(lp.get("p99") or 0) * 1e3, lag=float("nan"),
                    cpu_us=cpu * 1e6 / max(ok, 1), errors=j.get("errorDistribution", {}))
    total = j["requests"]
    ok = j.get("status_codes", {}).get("200", 0)
    return dict(rps=j["rate"], total=total, ok=ok,
                p50=j["latencies"]["50th"] / 1e6, p99=j["latencies"]["99th"] / 1e6,
                lag=j["schedule_lag"]["99th"] / 1e6,
                cpu_us=cpu * 1e6 / max(ok, 1),
                errors=j.get("error_kinds", {}))  # not-sent is one of the kinds
print(f"generator {gen}; {duration:.0f}s per cell; latency from the due time; proxy CPU from /proc/PID/stat\n")
print("| rate | path | achieved/s | success | p50 ms | p99 ms | gen lag p99 ms | added p50 ms | added p99 ms | proxy CPU µs/conn |")
print("|---|---|---|---|---|---|---|---|---|---|")
for rate in rates:
    d = load("direct", rate)
    for name in ("direct", "zdt", "haproxy"):
        r = load(name, rate)
        succ = 100.0 * r["ok"] / max(r["total"], 1)
        added = "" if name == "direct" else f"{r['p50']-d['p50']:+.3f} | {r['p99']-d['p99']:+.3f}"
        if name == "direct":
            added = "– | –"
        cpu = "–" if name == "direct" else f"{r['cpu_us']:.1f}"
        print(f"| {rate}/s | {name} | {r['rps']:.0f} | {succ:.2f}% | {r['p50']:.3f} | {r['p99']:.3f} | {r['lag']:.3f} | {added} | {cpu} |")
        if r["errors"]:
            print(f"|  | errors | {r['errors']} | | | | | | | |")
PY
echo
echo "raw results: $WORK"
