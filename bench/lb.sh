#!/usr/bin/env bash
# Load benchmark of the LB data path: new connections per second (no
# keep-alive) through `zdt lb` and through haproxy (mode tcp, one thread) to
# one nginx, measured in the same run beside the direct path.
#
#   bench/lb.sh [DURATION_SECONDS] [RATES...]      defaults: 10 5000 10000
#
# ROUNDS=N (default 3) repeats every cell N times, the paths interleaved in
# each round, and reports the median of each figure with the spread of the
# added p50: on a shared 2-core machine one 10 s cell moves by ±0.2 ms.
# ZDT_LB=path runs another zdt build as the LB than as the generator, and
# ZDT_LB_B=path adds a second LB build as path "zdt-b" (A/B of an LB change
# with one generator).
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
NGINX_PORT=18900 ZDT_PORT=18901 HAPROXY_PORT=18902 ADMIN_PORT=18903 ZDT_B_PORT=18904 ADMIN_B_PORT=18905
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
ZDT_LB=${ZDT_LB:-$ZDT}
ZDT_LB_B=${ZDT_LB_B:-}
ROUNDS=${ROUNDS:-3}
# PIN=A:B runs the generator and nginx on CPUs A and the proxies on CPUs B
# (taskset lists, e.g. PIN=0:1): each proxy then has a core of its own and
# the cells stop depending on where the scheduler put whom.
ON_GEN=() ON_PROXY=()
if [ -n "${PIN:-}" ]; then
  need taskset "apt-get install util-linux"
  ON_GEN=(taskset -c "${PIN%%:*}") ON_PROXY=(taskset -c "${PIN##*:}")
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
"${ON_GEN[@]}" nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log"

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
"${ON_PROXY[@]}" "$ZDT_LB" lb --config "$WORK/lb.yaml" > "$WORK/lb-events.jsonl" 2> "$WORK/lb.log" &
ZDT_PID=$!
PIDS+=("$ZDT_PID")
ZDT_B_PID=
if [ -n "$ZDT_LB_B" ]; then
  sed -e "s/:$ZDT_PORT\$/:$ZDT_B_PORT/" -e "s/:$ADMIN_PORT\$/:$ADMIN_B_PORT/" "$WORK/lb.yaml" > "$WORK/lb-b.yaml"
  "${ON_PROXY[@]}" "$ZDT_LB_B" lb --config "$WORK/lb-b.yaml" > "$WORK/lb-b-events.jsonl" 2> "$WORK/lb-b.log" &
  ZDT_B_PID=$!
  PIDS+=("$ZDT_B_PID")
fi

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
"${ON_PROXY[@]}" haproxy -f "$WORK/haproxy.cfg" -db > "$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")

# Wait until all three answer and the LB's backend is healthy.
for i in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$ADMIN_PORT/wait-healthy?count=1&timeout=100ms" >/dev/null 2>&1 \
    && { [ -z "$ZDT_LB_B" ] || curl -sf "http://127.0.0.1:$ADMIN_B_PORT/wait-healthy?count=1&timeout=100ms" >/dev/null 2>&1; } \
    && curl -sf "http://127.0.0.1:$ZDT_PORT/" >/dev/null && curl -sf "http://127.0.0.1:$HAPROXY_PORT/" >/dev/null; then
    break
  fi
  sleep 0.1
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Busy and total ticks of the whole machine: how much room a cell left.
machine_ticks() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t-$5-$6, t}' /proc/stat; }
CLK_TCK=$(getconf CLK_TCK)
OHA_JSON=(-j)
if [ "$GEN" = oha ] && oha --help 2>&1 | grep -q -- '--output-format'; then OHA_JSON=(--output-format json); fi

# Each proxied request leaves two conntrack entries (client and backend
# legs) for TIME_WAIT's 120 s; a full table drops SYNs and the cells after
# it measure the kernel, not the proxies.
if [ -r /proc/sys/net/netfilter/nf_conntrack_max ]; then
  legs=$(( 1 + 2 + 2 + $([ -n "$ZDT_LB_B" ] && echo 2 || echo 0) ))
  total=0; for r in "${RATES[@]}"; do total=$(( total + r * DURATION * legs )); done
  total=$(( total * ROUNDS ))
  # Entries live ~120 s; the run lasts a cell of DURATION + 2 s per path.
  seconds=$(( ROUNDS * ${#RATES[@]} * (legs + 1) / 2 * (DURATION + 2) ))
  [ "$seconds" -gt 120 ] && total=$(( total * 120 / seconds ))
  max=$(cat /proc/sys/net/netfilter/nf_conntrack_max)
  if [ "$total" -gt "$max" ]; then
    echo "bench/lb.sh: this run keeps ~$total conntrack entries and the table holds $max;" >&2
    echo "  raise it for the run: sysctl -w net.netfilter.nf_conntrack_max=$(( total * 2 ))" >&2
  fi
fi

# One measurement: the generator at RATE against PORT for DURATION seconds.
run() { # name port rate round pid|-
  local name=$1 port=$2 rate=$3 round=$4 pid=$5 before after out
  out="$WORK/$name-$rate-$round"
  [ "$pid" != - ] && before=$(cpu_ticks "$pid")
  read -r busy0 total0 < <(machine_ticks)
  if [ "$GEN" = oha ]; then
    "${ON_GEN[@]}" oha --no-tui "${OHA_JSON[@]}" --disable-keepalive --latency-correction \
        -q "$rate" -z "${DURATION}s" -t 10s "http://127.0.0.1:$port/" > "$out.json" 2> "$out.err" || true
  else
    "${ON_GEN[@]}" "$ZDT" attack "http://127.0.0.1:$port/" --rate "$rate/s" --duration "${DURATION}s" --timeout 10s \
        --keepalive false --max-inflight $MAXCONN --format json > "$out.json" 2> "$out.err" || true
  fi
  read -r busy1 total1 < <(machine_ticks)
  echo "$busy0 $total0 $busy1 $total1" > "$out.machine"
  if [ "$pid" != - ]; then
    after=$(cpu_ticks "$pid")
    echo $(( after - before )) > "$out.cpu"
  else
    echo 0 > "$out.cpu"
  fi
  sleep 2 # let TIME_WAIT and the proxies settle between runs
}

PATHS=(direct zdt haproxy)
[ -n "$ZDT_LB_B" ] && PATHS+=(zdt-b)
for round in $(seq 1 "$ROUNDS"); do
  for rate in "${RATES[@]}"; do
    run direct "$NGINX_PORT" "$rate" "$round" -
    run zdt "$ZDT_PORT" "$rate" "$round" "$ZDT_PID"
    run haproxy "$HAPROXY_PORT" "$rate" "$round" "$HAPROXY_PID"
    [ -n "$ZDT_LB_B" ] && run zdt-b "$ZDT_B_PORT" "$rate" "$round" "$ZDT_B_PID"
  done
done

python3 - "$WORK" "$CLK_TCK" "$DURATION" "$GEN" "$ROUNDS" "${PATHS[*]}" "${RATES[@]}" <<'PY'
import json, statistics, sys
work, clk, duration, gen, rounds, paths, rates = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6].split(), sys.argv[7:]
def load(name, rate, rnd):
    base = f"{work}/{name}-{rate}-{rnd}"
    with open(f"{base}.json") as f:
        j = json.load(f)
    cpu = int(open(f"{base}.cpu").read()) / clk
    b0, t0, b1, t1 = map(int, open(f"{base}.machine").read().split())
    busy = 100.0 * (b1 - b0) / max(t1 - t0, 1)
    if gen == "oha":
        s = j["summary"]
        lp = j.get("latencyPercentiles") or {}
        total = sum(j.get("statusCodeDistribution", {}).values()) + sum(j.get("errorDistribution", {}).values())
        ok = j.get("statusCodeDistribution", {}).get("200", 0)
        p50, p99 = (lp.get("p50") or 0) * 1e3, (lp.get("p99") or 0) * 1e3
        return dict(rps=s.get("requestsPerSec", 0), total=total, ok=ok,
                    p50=p50, p99=p99, s50=p50, s99=p99, lag=float("nan"),
                    cpu_us=cpu * 1e6 / max(ok, 1), busy=busy, errors=j.get("errorDistribution", {}))
    total = j["requests"]
    ok = j.get("status_codes", {}).get("200", 0)
    return dict(rps=j["rate"], total=total, ok=ok,
                p50=j["latencies"]["50th"] / 1e6, p99=j["latencies"]["99th"] / 1e6,
                s50=j["latencies_uncorrected"]["50th"] / 1e6, s99=j["latencies_uncorrected"]["99th"] / 1e6,
                lag=j["schedule_lag"]["99th"] / 1e6,
                cpu_us=cpu * 1e6 / max(ok, 1), busy=busy,
                errors=j.get("error_kinds", {}))  # not-sent is one of the kinds
med = statistics.median
print(f"generator {gen}; {duration:.0f}s per cell; median of {rounds} interleaved rounds; proxy CPU from /proc/PID/stat")
print("'due': latency from the request's due time (what a user sees, generator lag included);")
print("'sent': from the moment it was sent (the path alone; oha reports only 'due').")
print("'added' compares each round's 'sent' latency with the direct path's in the same round;")
print("'machine busy' is the share of all cores in use during the cell (idle and iowait excluded).\n")
print("| rate | path | achieved/s | success | due p50 ms | due p99 ms | sent p50 ms | sent p99 ms | gen lag p99 ms | added p50 ms (spread) | added p99 ms | proxy CPU µs/conn | machine busy |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for rate in rates:
    direct = [load("direct", rate, r) for r in range(1, rounds + 1)]
    for name in paths:
        rs = [load(name, rate, r) for r in range(1, rounds + 1)]
        m = lambda k: med(x[k] for x in rs)
        succ = 100.0 * sum(x["ok"] for x in rs) / max(sum(x["total"] for x in rs), 1)
        if name == "direct":
            added, cpu = "– | –", "–"
        else:
            a50 = [x["s50"] - d["s50"] for x, d in zip(rs, direct)]
            a99 = [x["s99"] - d["s99"] for x, d in zip(rs, direct)]
            added = f"{med(a50):+.3f} ({min(a50):+.3f}…{max(a50):+.3f}) | {med(a99):+.3f}"
            cpu = f"{m('cpu_us'):.1f}"
        print(f"| {rate}/s | {name} | {m('rps'):.0f} | {succ:.2f}% | {m('p50'):.3f} | {m('p99'):.3f} | {m('s50'):.3f} | {m('s99'):.3f} | {m('lag'):.3f} | {added} | {cpu} | {m('busy'):.0f}% |")
        errors = {}
        for x in rs:
            for k, v in x["errors"].items():
                errors[k] = errors.get(k, 0) + v
        if errors:
            print(f"|  | errors, all rounds | {errors} | | | | | | | | | | |")
PY
echo
echo "raw results: $WORK"
