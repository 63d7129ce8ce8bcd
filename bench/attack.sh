#!/usr/bin/env bash
# Benchmark the traffic generator against oha on one local nginx worker.
#
#   bench/attack.sh                  # cells + RSS check + rate search + closed loop
#   ROUNDS=5 SECS=10 bench/attack.sh # more rounds (default 3 rounds of 10 s)
#   SEARCH=0 bench/attack.sh         # skip the highest-rate search and closed loop
#   RSS=0 bench/attack.sh            # skip the RSS flatness check (≈ 55 s)
#   QUICK=1 bench/attack.sh          # 3 s cells, 1 round: a smoke test of the script
#
# Everything runs inside a fresh network namespace (`unshare -n`, then
# `ip link set lo up`): nginx, zdt and oha share a private loopback, so the
# host's conntrack table, ports and other traffic play no part. Run as root
# (or where unprivileged user namespaces allow `unshare -rn`). Each measured
# run gets a namespace (and an nginx) of its own besides: a run without
# keep-alive leaves 50,000 TIME_WAIT sockets, which would expire 60 s later,
# in batches of ~5,000 per CPU every 2 s (the timer wheel's granularity at
# HZ=250), each holding a CPU in the timer softirq for 3–8 ms — in the
# middle of whichever tool's run came 60 s later. A namespace's TIME_WAIT
# sockets go with it when it is torn down, between runs.
#
# Cells: 5000/s without keep-alive, 5000/s with keep-alive, 20000/s with
# keep-alive. In each round every cell runs zdt, oha with
# `--latency-correction` (latency from the scheduled time, as zdt's) and
# oha without it (latency from the actual send), in an order that rotates
# from round to round; the tables show the median over rounds. For each run:
#   - latency p50/p99 from the due time ("due") and from the send ("sent"),
#   - zdt's send lag (sent − due) p50/p99/max,
#   - rate accuracy (zdt: vegeta's rate = sent / (last send − first send);
#     oha: requestsPerSec),
#   - CPU seconds (user + sys from wait4) per 1000 requests and peak RSS.
# oha's `--latency-correction` stamps each request with the moment its pacer
# task woke for it (`Instant::now()` after `sleep_until`, oha 1.16
# src/client.rs), not with its due time: the pacer's own lateness (tokio's
# 1 ms timer, a stalled process or vCPU) is left out of oha's figures, while
# zdt's "due" latency includes all of zdt's send lag. A last table sets
# zdt's latency from the send beside it, which leaves zdt's lag out too.
# Then the issue's done-when checks, per cell, against oha with latency
# correction: zdt p50 ≤ oha p50 + 50 µs, zdt p99 ≤ oha p99, accuracy
# ≥ 99.95 %, CPU ≤ 0.9 × oha's, RSS ≤ 50 MB; and RSS flat from 50,000 to
# 1,000,000 requests (zdt, 20000/s keep-alive, 2.5 s and 50 s).
#
# Tools: ZDT=path (default: cargo build --release, in $CARGO_TARGET_DIR or
# target/), OHA=path (default: oha in PATH; else `cargo install oha --locked`),
# nginx (apt-get install nginx-light), wrk for the closed-loop reference.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)

# --- a private network namespace ---------------------------------------------
if [ "${ZDT_BENCH_IN_NETNS:-}" != 1 ]; then
  command -v unshare >/dev/null && command -v ip >/dev/null \
    || { echo "needs unshare (util-linux) and ip (iproute2)" >&2; exit 2; }
  # Build and find the tools on the host's network (cargo may download).
  if [ -z "${ZDT:-}" ]; then
    echo "== building zdt (release)" >&2
    (cd "$ROOT" && cargo build --release --bin zdt >&2)
    ZDT="${CARGO_TARGET_DIR:-$ROOT/target}/release/zdt"
  fi
  if [ -z "${OHA:-}" ]; then
    if ! OHA=$(command -v oha); then
      echo "== installing oha (cargo install oha --locked; takes a few minutes)" >&2
      cargo install oha --locked >&2
      OHA=$(command -v oha)
    fi
  fi
  export ZDT OHA ZDT_BENCH_IN_NETNS=1
  unshare_flags=(-n)
  [ "$(id -u)" = 0 ] || unshare_flags=(-r -n)
  exec unshare "${unshare_flags[@]}" -- bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$@"
fi

QUICK=${QUICK:-0}
SECS=${SECS:-10}
ROUNDS=${ROUNDS:-3}
SEARCH=${SEARCH:-1}
RSS=${RSS:-1}
if [ "$QUICK" = 1 ]; then SECS=3; ROUNDS=1; SEARCH=0; fi
WORK=$(mktemp -d /tmp/zdt-bench.XXXXXX)
PORT=8080
URL="http://127.0.0.1:$PORT/"
NGINX_PID=""

cleanup() {
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "== $*" >&2; }

ulimit -n 262144 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ -x "$ZDT" ] || { echo "zdt not found at $ZDT" >&2; exit 2; }
[ -x "$OHA" ] || { echo "oha not found at $OHA" >&2; exit 2; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "nginx missing: apt-get install nginx-light" >&2; exit 2; }

# --- target ------------------------------------------------------------------
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
worker_rlimit_nofile 262144;
events { worker_connections 65535; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$PORT backlog=4096;
    location / { add_header X-Node bench; return 200 "hello from nginx\n"; }
  }
}
EOF
# The same server for the runs' own namespaces, with its own pid file.
sed "s|$WORK/nginx/nginx.pid|$WORK/nginx/run.pid|" "$WORK/nginx/nginx.conf" > "$WORK/nginx/run.conf"
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
for _ in $(seq 50); do curl -fs "$URL" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$URL" >/dev/null || { echo "nginx did not start" >&2; exit 1; }
log "zdt $("$ZDT" --version 2>/dev/null || true), $("$OHA" --version), $("$NGINX" -v 2>&1), in a private network namespace"
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- the runs and the tables --------------------------------------------------
python3 - "$WORK" "$URL" "$ZDT" "$OHA" "$SECS" "$ROUNDS" "$SEARCH" "$RSS" "$NGINX" <<'PY'
import ctypes, json, os, socket, statistics, subprocess, sys, time

work, url, zdt, oha = sys.argv[1:5]
secs, rounds = int(sys.argv[5]), int(sys.argv[6])
search, rss_check = sys.argv[7] == "1", sys.argv[8] == "1"
nginx = sys.argv[9]
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)

def log(*a):
    print("==", *a, file=sys.stderr, flush=True)

def command(tool, rate, secs, ka):
    duration = f"{round(secs * 1000)}ms"
    if tool == "zdt":
        return [zdt, "attack", url, "--rate", f"{rate}/s", "--duration", duration,
                "--keepalive", "true" if ka else "false", "--timeout", "10s", "--format", "json"]
    c = [oha, url, "-q", str(rate), "-z", duration, "-c", "1000", "--no-tui",
         "--output-format", "json"]
    if not ka:
        c.append("--disable-keepalive")
    if tool == "oha":
        c.append("--latency-correction")
    return c

def in_own_namespace(measure):
    """measure() in a child process in a network namespace of its own, with
    an nginx of its own (see the top of this script: the TIME_WAIT sockets
    of the run go with the namespace)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        result = {}
        try:
            if libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            server = subprocess.Popen([nginx, "-p", f"{work}/nginx", "-c", f"{work}/nginx/run.conf"])
            try:
                for _ in range(100):
                    try:
                        socket.create_connection(("127.0.0.1", 8080), timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.05)
                result["ok"] = measure()
            finally:
                server.terminate()
                server.wait()
        except BaseException as e:
            result["error"] = repr(e)
        finally:
            os.write(w, json.dumps(result).encode())
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    result = json.loads(data or b"{}")
    if "ok" not in result:
        sys.exit(f"a run in its own network namespace failed: {result.get('error', 'no result')}")
    return result["ok"]

def run(tool, rate, secs, ka, name):
    """One run: its figures, with CPU and peak RSS of that process alone."""
    out = f"{work}/{name}.json"
    def measure():
        with open(out, "wb") as f:
            p = subprocess.Popen(command(tool, rate, secs, ka), stdout=f, stderr=subprocess.DEVNULL)
            _, status, ru = os.wait4(p.pid, 0)
        return ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024
    cpu, rss = in_own_namespace(measure)
    with open(out) as f:
        j = json.load(f)
    if tool == "zdt":
        l, u, lag = j["latencies"], j["latencies_uncorrected"], j["send_lag"]
        n = j["due"]
        x = dict(p50=l["50th"] / 1e3, p99=l["99th"] / 1e3,
                 s50=u["50th"] / 1e3, s99=u["99th"] / 1e3,
                 lag50=lag["50th"] / 1e3, lag99=lag["99th"] / 1e3, lagmax=lag["max"] / 1e3,
                 acc=j["rate"] / rate * 100, n=n, not_sent=j["not_sent"],
                 success=j["success"] * 100)
    else:
        lp = j.get("latencyPercentiles") or {}
        n = sum(j.get("statusCodeDistribution", {}).values()) + sum(j.get("errorDistribution", {}).values())
        p50, p99 = (lp.get("p50") or 0) * 1e6, (lp.get("p99") or 0) * 1e6
        x = dict(p50=p50, p99=p99, s50=p50, s99=p99,
                 acc=j["summary"]["requestsPerSec"] / rate * 100, n=n,
                 success=(j["summary"].get("successRate") or 0) * 100)
    x.update(cpu_per_k=cpu / max(n, 1) * 1000 * 1000, rss=rss, cpu=cpu)
    log(f"{name}: {n} requests, due p50/p99 {x['p50']:.0f}/{x['p99']:.0f} µs, "
        f"sent p50/p99 {x['s50']:.0f}/{x['s99']:.0f} µs, accuracy {x['acc']:.3f} %, "
        f"cpu {cpu:.2f} s, rss {rss:.1f} MB"
        + (f", send lag p50/p99/max {x['lag50']:.0f}/{x['lag99']:.0f}/{x['lagmax']:.0f} µs" if tool == "zdt" else ""))
    time.sleep(2)  # let the run's namespace be torn down (its TIME_WAIT sockets purged)
    return x

cells = [(5000, False), (5000, True), (20000, True)]
tools = ["zdt", "oha", "oha-sent"]
results = {}  # (rate, ka, tool) -> [figures per round]
for r in range(rounds):
    for ci, (rate, ka) in enumerate(cells):
        shift = (r + ci) % len(tools)
        for tool in tools[shift:] + tools[:shift]:
            name = f"{tool}-{rate}-{'ka' if ka else 'noka'}-{r}"
            results.setdefault((rate, ka, tool), []).append(run(tool, rate, secs, ka, name))

def med(rate, ka, tool, key):
    return statistics.median(x[key] for x in results[(rate, ka, tool)])

def label(rate, ka):
    return f"{rate}/s, {'keep-alive' if ka else 'no keep-alive'}"

print(f"### Latency, {rounds} round(s) of {secs} s per cell, medians (µs)")
print()
print("| cell | zdt due p50 / p99 | oha due p50 / p99 | zdt sent p50 / p99 | oha sent p50 / p99 | zdt send lag p50 / p99 / max |")
print("|---|---|---|---|---|---|")
for rate, ka in cells:
    m = lambda t, k: med(rate, ka, t, k)
    print(f"| {label(rate, ka)} | {m('zdt','p50'):.0f} / {m('zdt','p99'):.0f} | {m('oha','p50'):.0f} / {m('oha','p99'):.0f} "
          f"| {m('zdt','s50'):.0f} / {m('zdt','s99'):.0f} | {m('oha-sent','s50'):.0f} / {m('oha-sent','s99'):.0f} "
          f"| {m('zdt','lag50'):.0f} / {m('zdt','lag99'):.0f} / {m('zdt','lagmax'):.0f} |")
print()
print("### Rate, CPU, memory (medians; oha = oha --latency-correction)")
print()
print("| cell | accuracy zdt / oha | CPU ms per 1000 requests zdt / oha (zdt/oha) | peak RSS zdt / oha (zdt/oha) |")
print("|---|---|---|---|")
for rate, ka in cells:
    m = lambda t, k: med(rate, ka, t, k)
    print(f"| {label(rate, ka)} | {m('zdt','acc'):.3f} % / {m('oha','acc'):.3f} % "
          f"| {m('zdt','cpu_per_k'):.1f} / {m('oha','cpu_per_k'):.1f} ({m('zdt','cpu_per_k') / m('oha','cpu_per_k'):.2f}) "
          f"| {m('zdt','rss'):.1f} / {m('oha','rss'):.1f} MB ({m('zdt','rss') / m('oha','rss'):.2f}) |")
print()

print("### p99 with each tool's own lag left out (zdt from the send; oha --latency-correction from its pacer's wake-up)")
print()
print("| cell | zdt sent p99 | oha p99 | zdt send lag p99 / max |")
print("|---|---|---|---|")
for rate, ka in cells:
    m = lambda t, k: med(rate, ka, t, k)
    print(f"| {label(rate, ka)} | {m('zdt','s99'):.0f} µs | {m('oha','p99'):.0f} µs | {m('zdt','lag99'):.0f} / {m('zdt','lagmax'):.0f} µs |")
print()

checks = []
def check(what, ok, detail):
    checks.append((what, ok, detail))
for rate, ka in cells:
    m = lambda t, k: med(rate, ka, t, k)
    c = label(rate, ka)
    check(f"{c}: zdt p50 ≤ oha p50 + 50 µs", m("zdt", "p50") <= m("oha", "p50") + 50,
          f"{m('zdt','p50'):.0f} vs {m('oha','p50'):.0f} + 50 µs")
    check(f"{c}: zdt p99 ≤ oha p99", m("zdt", "p99") <= m("oha", "p99"),
          f"{m('zdt','p99'):.0f} vs {m('oha','p99'):.0f} µs")
    check(f"{c}: zdt rate accuracy ≥ 99.95 %", m("zdt", "acc") >= 99.95, f"{m('zdt','acc'):.3f} %")
    check(f"{c}: zdt CPU ≤ 0.9 × oha's", m("zdt", "cpu_per_k") <= 0.9 * m("oha", "cpu_per_k"),
          f"{m('zdt','cpu_per_k') / m('oha','cpu_per_k'):.2f} ×")
    check(f"{c}: zdt RSS ≤ 50 MB", m("zdt", "rss") <= 50, f"{m('zdt','rss'):.1f} MB")

if rss_check:
    # Same rate, 20× the requests: memory must not grow with the count.
    small = run("zdt", 20000, 2.5, True, "rss-50k")
    big = run("zdt", 20000, 50, True, "rss-1m")
    print("### Memory against the request count (zdt, 20000/s, keep-alive)")
    print()
    print("| requests | peak RSS | send lag p50 / p99 / max (µs) | accuracy |")
    print("|---|---|---|---|")
    for x in (small, big):
        print(f"| {x['n']:,} | {x['rss']:.1f} MB | {x['lag50']:.0f} / {x['lag99']:.0f} / {x['lagmax']:.0f} | {x['acc']:.3f} % |")
    print()
    check("RSS ≤ 50 MB at 1,000,000 requests", big["rss"] <= 50, f"{big['rss']:.1f} MB")
    check("RSS flat from 50,000 to 1,000,000 requests (within 5 MB)", big["rss"] - small["rss"] <= 5,
          f"{small['rss']:.1f} → {big['rss']:.1f} MB")

print("### Done when (issue #19)")
print()
print("| check | result | measured |")
print("|---|---|---|")
for what, ok, detail in checks:
    print(f"| {what} | {'PASS' if ok else 'FAIL'} | {detail} |")
print()

if search:
    def max_rate(tool, ka, rate, step, secs=5):
        best = 0
        for _ in range(12):
            x = run(tool, rate, secs, ka, f"max-{tool}-{rate}-{ka}")
            if x["acc"] >= 99.9 and x["n"] >= rate * secs * 0.999:
                best = rate
            else:
                log(f"{tool} {rate}/s keep-alive={ka}: accuracy {x['acc']:.3f} % ({x['n']} requests) < 99.9 %")
                break
            rate += step
        return best
    mz, mo = max_rate("zdt", False, 5000, 1000), max_rate("oha", False, 5000, 1000)
    mzk, mok = max_rate("zdt", True, 20000, 5000), max_rate("oha", True, 20000, 5000)
    def closed(tool, ka, secs=5):
        if tool == "wrk":
            h = [] if ka else ["-H", "Connection: close"]
            out = subprocess.run(["wrk", "-t1", "-c50", f"-d{secs}s", *h, url], capture_output=True, text=True).stdout
            return next((l.split()[1] for l in out.splitlines() if l.startswith("Requests/sec")), "?")
        c = [oha, url, "-z", f"{secs}s", "-c", "50", "--no-tui", "--output-format", "json"]
        if not ka:
            c.append("--disable-keepalive")
        out = subprocess.run(c, capture_output=True, text=True).stdout
        return f"{json.loads(out)['summary']['requestsPerSec']:.0f}"
    have_wrk = subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode == 0
    print("### Highest rate with ≥ 99.9 % accuracy (5 s per step)")
    print()
    print("| keep-alive | zdt | oha | zdt/oha |")
    print("|---|---|---|---|")
    print(f"| no (steps of 1000/s) | {mz}/s | {mo}/s | {mz / mo if mo else float('nan'):.2f} |")
    print(f"| yes (steps of 5000/s) | {mzk}/s | {mok}/s | {mzk / mok if mok else float('nan'):.2f} |")
    print()
    print("Closed-loop maxima against the same nginx (1 worker), for reference:")
    print()
    print("| tool | keep-alive | no keep-alive |")
    print("|---|---|---|")
    if have_wrk:
        print(f"| wrk -t1 -c50 | {closed('wrk', True)}/s | {closed('wrk', False)}/s |")
    print(f"| oha -c 50 | {closed('oha', True)}/s | {closed('oha', False)}/s |")
PY
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
