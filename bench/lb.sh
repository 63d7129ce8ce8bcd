#!/usr/bin/env bash
# Load benchmark of the LB data path: new connections per second (no
# keep-alive) through `zdt lb` and through haproxy (mode tcp, one thread) to
# one nginx, measured in the same run beside the direct path.
#
#   bench/lb.sh [DURATION_SECONDS] [RATES...]      defaults: 10 5000 10000
#   bench/lb.sh --report DIR                       the tables again, from a run's raw results
#
# ROUNDS=N (default 3) repeats every cell N times, the paths interleaved in
# each round in an order that rotates from round to round, and reports the
# median of each figure with the spread of the added p50: on a shared 2-core
# machine one 10 s cell moves by ±0.2 ms. Proxies are then compared round by
# round (median of the paired differences with a bootstrap 95% interval,
# from 5 rounds on), and cells with a stall (a request over 20 ms) are
# listed with the hypervisor's steal time in them.
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
# the proxy's CPU per connection from /proc/PID/stat (utime+stime), and how
# long per connection it waited for a CPU while runnable.
set -euo pipefail

# The tables, from the raw results of a run: WORK CLK_TCK DURATION GEN ROUNDS
# "PATHS" RATES...
report() {
python3 - "$@" <<'PY'
import functools, json, statistics, sys
work, clk, duration, gen, rounds, paths, rates = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6].split(), sys.argv[7:]
def generator_figures(j):
    if gen == "oha":
        s = j["summary"]
        lp = j.get("latencyPercentiles") or {}
        total = sum(j.get("statusCodeDistribution", {}).values()) + sum(j.get("errorDistribution", {}).values())
        p50, p99 = (lp.get("p50") or 0) * 1e3, (lp.get("p99") or 0) * 1e3
        return dict(rps=s.get("requestsPerSec", 0), total=total,
                    ok=j.get("statusCodeDistribution", {}).get("200", 0),
                    p50=p50, p99=p99, s50=p50, s99=p99, smax=float("nan"), lag=float("nan"),
                    errors=j.get("errorDistribution", {}))
    sent = j["latencies_uncorrected"]
    return dict(rps=j["rate"], total=j["requests"], ok=j.get("status_codes", {}).get("200", 0),
                p50=j["latencies"]["50th"] / 1e6, p99=j["latencies"]["99th"] / 1e6,
                s50=sent["50th"] / 1e6, s99=sent["99th"] / 1e6, smax=sent["max"] / 1e6,
                lag=j["send_lag"]["99th"] / 1e6,
                errors=j.get("error_kinds", {}))  # not-sent is one of the kinds

# Each cell is read once: the tables below look at the same cells again.
@functools.cache
def load(name, rate, rnd):
    base = f"{work}/{name}-{rate}-{rnd}"
    with open(f"{base}.json") as f:
        x = generator_figures(json.load(f))
    ok = max(x["ok"], 1)
    cpu = int(open(f"{base}.cpu").read()) / clk
    b0, t0, b1, t1, s0, s1 = map(int, open(f"{base}.machine").read().split())
    w0, i0, w1, i1 = map(int, open(f"{base}.sched").read().split())
    x.update(cpu_us=cpu * 1e6 / ok, busy=100.0 * (b1 - b0) / max(t1 - t0, 1),
             steal=1000.0 * (s1 - s0) / clk,
             wait_us=(w1 - w0) / 1e3 / ok, preempt=1000.0 * (i1 - i0) / ok)
    return x
med = statistics.median
print(f"generator {gen}; {duration:.0f}s per cell; median of {rounds} interleaved rounds; proxy CPU from /proc/PID/stat")
print("'due': latency from the request's due time (what a user sees, generator lag included);")
print("'sent': from the moment it was sent (the path alone; oha reports only 'due').")
print("'added' compares each round's 'sent' latency with the direct path's in the same round;")
print("'machine busy' is the share of all cores in use during the cell (idle and iowait excluded).\n")
print("'proxy waits' is the proxy's time runnable but off-CPU per connection, and its")
print("preemptions (involuntary context switches) per 1000 connections, from /proc/PID/task/*.\n")
print("| rate | path | achieved/s | success | due p50 ms | due p99 ms | sent p50 ms | sent p99 ms | gen lag p99 ms | added p50 ms (spread) | added p99 ms | proxy CPU µs/conn | proxy waits µs/conn, preempts/1k | machine busy |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for rate in rates:
    direct = [load("direct", rate, r) for r in range(1, rounds + 1)]
    for name in paths:
        rs = [load(name, rate, r) for r in range(1, rounds + 1)]
        m = lambda k: med(x[k] for x in rs)
        succ = 100.0 * sum(x["ok"] for x in rs) / max(sum(x["total"] for x in rs), 1)
        if name == "direct":
            added, cpu = "– | –", "– | –"
        else:
            a50 = [x["s50"] - d["s50"] for x, d in zip(rs, direct)]
            a99 = [x["s99"] - d["s99"] for x, d in zip(rs, direct)]
            added = f"{med(a50):+.3f} ({min(a50):+.3f}…{max(a50):+.3f}) | {med(a99):+.3f}"
            cpu = f"{m('cpu_us'):.1f} | {m('wait_us'):.1f}, {m('preempt'):.1f}"
        print(f"| {rate}/s | {name} | {m('rps'):.0f} | {succ:.2f}% | {m('p50'):.3f} | {m('p99'):.3f} | {m('s50'):.3f} | {m('s99'):.3f} | {m('lag'):.3f} | {added} | {cpu} | {m('busy'):.0f}% |")
        errors = {}
        for x in rs:
            for k, v in x["errors"].items():
                errors[k] = errors.get(k, 0) + v
        if errors:
            print(f"|  | errors, all rounds | {errors} | | | | | | | | | | | |")

# A stall of tens of ms in one cell sets that cell's p99 on its own; list
# them with the hypervisor's steal in the same cell.
stalls = []
for rate in rates:
    for name in paths:
        for r in range(1, rounds + 1):
            x = load(name, rate, r)
            if x["smax"] > 20:
                stalls.append(f"{name} at {rate}/s, round {r}: max {x['smax']:.1f} ms, p99 {x['s99']:.2f} ms, steal {x['steal']:.0f} ms")
if stalls:
    print("\ncells with a request slower than 20 ms (sent):")
    for line in stalls:
        print("  " + line)

# One p99 moves by 0.5-1.5 ms between rounds, so a difference of proxies is
# read from the rounds paired (same round, same machine state): the median of
# the per-round differences with a bootstrap 95% interval over the rounds.
import random
rng = random.Random(1)
def interval(diffs, iters=4000):
    if len(diffs) < 5:
        return "(too few rounds for an interval)"
    meds = sorted(med(rng.choices(diffs, k=len(diffs))) for _ in range(iters))
    return f"[{meds[int(0.025 * iters)]:+.3f}, {meds[int(0.975 * iters) - 1]:+.3f}]"
pairs = [(a, b) for a, b in (("zdt", "haproxy"), ("zdt-b", "zdt"), ("zdt-b", "haproxy")) if a in paths and b in paths]
print("\n| rate | pair | rounds | Δ sent p50 ms, median [95% CI] | Δ sent p99 ms, median [95% CI] | rounds A's p99 lower |")
print("|---|---|---|---|---|---|")
for rate in rates:
    for a, b in pairs:
        ra = [load(a, rate, r) for r in range(1, rounds + 1)]
        rb = [load(b, rate, r) for r in range(1, rounds + 1)]
        d50 = [x["s50"] - y["s50"] for x, y in zip(ra, rb)]
        d99 = [x["s99"] - y["s99"] for x, y in zip(ra, rb)]
        lower = sum(1 for d in d99 if d < 0)
        print(f"| {rate}/s | {a} − {b} | {rounds} | {med(d50):+.3f} {interval(d50)} | {med(d99):+.3f} {interval(d99)} | {lower}/{rounds} |")
PY
}

# --report DIR prints the tables again from a run's raw results.
if [ "${1:-}" = --report ]; then
  [ -f "${2:-}/meta" ] || { echo "bench/lb.sh --report DIR: DIR is a run's raw results (the last line of its output)" >&2; exit 2; }
  read -r clk duration gen rounds paths rates < "$2/meta"
  report "$2" "$clk" "$duration" "$gen" "$rounds" "${paths//,/ }" ${rates//,/ }
  exit
fi

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
probe: { interval: 1s, timeout: 1s, unhealthyThreshold: 2, healthyThreshold: 1 }
maxConnections: $MAXCONN
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
# Summed over the process's threads: ns spent waiting for a CPU while
# runnable, and involuntary context switches (preemptions). A proxy that
# waits for the CPU more often shows it in its tail.
sched_stats() {
  local wait=0 inv=0 t w n
  for t in /proc/"$1"/task/*; do
    read -r _ w _ < "$t/schedstat" && wait=$(( wait + w ))
    n=$(awk '/^nonvoluntary_ctxt_switches/{print $2}' "$t/status") && inv=$(( inv + n ))
  done
  echo "$wait $inv"
}
# Busy and total ticks of the whole machine: how much room a cell left.
# Steal is the time the hypervisor ran someone else on our vCPUs: a stall
# no proxy can help.
machine_ticks() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t-$5-$6, t, $9}' /proc/stat; }
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
  local name=$1 port=$2 rate=$3 round=$4 pid=$5 before after out sched0
  out="$WORK/$name-$rate-$round"
  [ "$pid" != - ] && before=$(cpu_ticks "$pid") && sched0=$(sched_stats "$pid")
  read -r busy0 total0 steal0 < <(machine_ticks)
  if [ "$GEN" = oha ]; then
    "${ON_GEN[@]}" oha --no-tui "${OHA_JSON[@]}" --disable-keepalive --latency-correction \
        -q "$rate" -z "${DURATION}s" -t 10s "http://127.0.0.1:$port/" > "$out.json" 2> "$out.err" || true
  else
    "${ON_GEN[@]}" "$ZDT" attack "http://127.0.0.1:$port/" --rate "$rate/s" --duration "${DURATION}s" --timeout 10s \
        --keepalive false --max-inflight $MAXCONN --format json > "$out.json" 2> "$out.err" || true
  fi
  read -r busy1 total1 steal1 < <(machine_ticks)
  echo "$busy0 $total0 $busy1 $total1 $steal0 $steal1" > "$out.machine"
  if [ "$pid" != - ]; then
    after=$(cpu_ticks "$pid")
    echo $(( after - before )) > "$out.cpu"
    echo "$sched0 $(sched_stats "$pid")" > "$out.sched"
  else
    echo 0 > "$out.cpu"
    echo "0 0 0 0" > "$out.sched"
  fi
  sleep 2 # let TIME_WAIT and the proxies settle between runs
}

PATHS=(direct zdt haproxy)
[ -n "$ZDT_LB_B" ] && PATHS+=(zdt-b)
cell() { # path rate round
  case $1 in
    direct) run direct "$NGINX_PORT" "$2" "$3" - ;;
    zdt) run zdt "$ZDT_PORT" "$2" "$3" "$ZDT_PID" ;;
    haproxy) run haproxy "$HAPROXY_PORT" "$2" "$3" "$HAPROXY_PID" ;;
    zdt-b) run zdt-b "$ZDT_B_PORT" "$2" "$3" "$ZDT_B_PID" ;;
  esac
}
n=${#PATHS[@]}
for round in $(seq 1 "$ROUNDS"); do
  for rate in "${RATES[@]}"; do
    # The order rotates each round: a fixed order gives one path the cell
    # after the busiest one (TIME_WAIT, conntrack) in every round.
    for i in $(seq 0 $(( n - 1 ))); do
      cell "${PATHS[$(( (i + round - 1) % n ))]}" "$rate" "$round"
    done
  done
done

(IFS=,; echo "$CLK_TCK $DURATION $GEN $ROUNDS ${PATHS[*]} ${RATES[*]}") > "$WORK/meta"
report "$WORK" "$CLK_TCK" "$DURATION" "$GEN" "$ROUNDS" "${PATHS[*]}" "${RATES[@]}"
echo
echo "raw results: $WORK (bench/lb.sh --report DIR prints the tables again)"
