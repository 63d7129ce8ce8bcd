#!/usr/bin/env bash
# Soak: does zdt stay flat over a long run? Two parts, ~10 min each:
#   1. `zdt attack` at $RATE against a local nginx on 127.0.0.1
#   2. `zdt run` of an emulator + LB scenario at $RATE for $DURATION
# Every 10 s it samples the zdt process's RSS (VmRSS) and open fds, then
# prints start / end / max and the generator's schedule lag (from the run's
# own report). Not a test: run it by hand, on a quiet machine if possible.
#
#   bench/soak.sh                 # 5000/s for 10m, release build
#   RATE=2000/s DURATION=2m bench/soak.sh attack   # one part, shorter
set -euo pipefail

RATE=${RATE:-5000/s}
DURATION=${DURATION:-10m}
PARTS=${1:-all}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/zdt-soak-XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true' EXIT

if [ -z "${ZDT:-}" ]; then
  (cd "$ROOT" && CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release --bin zdt)
  ZDT="$ROOT/target/release/zdt"
fi

# sample PID LABEL: RSS (kB) and fd count every 10 s until PID exits.
sample() {
  local pid=$1 label=$2 out="$WORK/$2.samples"
  : >"$out"
  while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
    [ -n "$rss" ] && echo "$(date +%s) $rss $fds" >>"$out"
    sleep 10
  done
}

# report LABEL: start/end/max of RSS and fds.
report() {
  awk -v label="$1" '
    NR == 1 { r0 = $2; f0 = $3 }
    { r = $2; f = $3; if ($2 > rmax) rmax = $2; if ($3 > fmax) fmax = $3; n++ }
    END { printf "%s: %d samples  RSS start %.1f MiB end %.1f MiB max %.1f MiB  fds start %d end %d max %d\n",
                 label, n, r0/1024, r/1024, rmax/1024, f0, f, fmax }' "$WORK/$1.samples"
}

attack_part() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$WORK/nginx/logs"
  cat >"$WORK/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 16384; }
http {
  access_log off;
  server { listen 127.0.0.1:$port; location / { return 200 "ok\n"; } }
}
CONF
  /usr/sbin/nginx -p "$WORK/nginx" -c "$WORK/nginx.conf"
  echo "attack: $RATE for $DURATION against nginx on 127.0.0.1:$port"
  "$ZDT" attack "http://127.0.0.1:$port/" --rate "$RATE" --duration "$DURATION" \
    --timeout 10s --keepalive false --format json >"$WORK/attack.json" &
  local pid=$!
  sample "$pid" attack
  wait "$pid" || true
  report attack
  python3 - "$WORK/attack.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
def find(d, key):
    if isinstance(d, dict):
        for k, v in d.items():
            if k == key: return v
            f = find(v, key)
            if f is not None: return f
lag = find(r, "send_lag")
print("attack: requests", r.get("requests"), " success", r.get("success"), " rate", r.get("rate"),
      " send lag", json.dumps(lag))
PY
  kill "$(cat "$WORK/nginx.pid")"
}

run_part() {
  sed -e "s|@RATE@|$RATE|" -e "s|@DURATION@|$DURATION|" -e "s#@MANIFESTS@#$ROOT/manifests/nginx#" >"$WORK/soak.yaml" <<'YAML'
apiVersion: zdt/v1alpha1
kind: Scenario
name: soak
cluster:
  provider: emulator
  kubernetes: "1.31"
  workers: 3
loadBalancer:
  profile: azure
workload:
  manifests: @MANIFESTS@
  service: nginx
  deployment: nginx
  mitigations:
    replicas: 3
    spread: required
    readinessProbe: {path: /, period: 2s, failureThreshold: 2}
traffic:
  rate: @RATE@
  duration: @DURATION@
  timeout: 10s
  keepAlive: false
expect:
  successRatio: 0.99
YAML
  echo "run: emulator + LB, $RATE for $DURATION"
  "$ZDT" run "$WORK/soak.yaml" --out "$WORK/run" &
  local pid=$!
  sample "$pid" run
  wait "$pid" || true
  report run
  python3 - "$WORK/run/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
for v in s["variants"]:
    print(f"run: {v['name']} {v['verdict']} requests {v['requests']} success {v['success_ratio']:.5f}"
          f" achieved {v['rate']['achieved']:.1f}/s schedule lag p99 {v['schedule_lag_ms']['p99']:.1f} ms"
          f" max {v['schedule_lag_ms']['max']:.1f} ms")
PY
}

case "$PARTS" in
  attack) attack_part ;;
  run) run_part ;;
  all) attack_part; run_part ;;
  *) echo "usage: $0 [attack|run|all]" >&2; exit 2 ;;
esac
echo "samples and outputs in $WORK"
