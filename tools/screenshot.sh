#!/usr/bin/env bash
# Screenshot a zdt HTML report with headless Chromium, offline.
#
#   tools/screenshot.sh OUT/report.html docs/report-seed-drain.png [WIDTHxHEIGHT]
#
# The report is self-contained, so Chromium is started with background
# networking off: a report that needed the network would render broken
# here, which is the point.
set -euo pipefail

html=${1:?usage: tools/screenshot.sh REPORT.html OUT.png [WIDTHxHEIGHT]}
png=${2:?usage: tools/screenshot.sh REPORT.html OUT.png [WIDTHxHEIGHT]}
size=${3:-1400x2000}

chromium=""
for c in chromium chromium-browser google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then chromium=$c; break; fi
done
if [[ -z $chromium ]]; then
    echo "screenshot.sh: no chromium found; install it (Debian: apt-get install chromium)" >&2
    exit 2
fi
[[ -f $html ]] || { echo "screenshot.sh: $html does not exist; run zdt run or zdt report first" >&2; exit 2; }

abs_html=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
mkdir -p "$(dirname "$png")"
abs_png=$(cd "$(dirname "$png")" && pwd)/$(basename "$png")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

"$chromium" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --no-first-run --no-default-browser-check --hide-scrollbars \
    --user-data-dir="$profile" \
    --screenshot="$abs_png" --window-size="${size/x/,}" \
    "file://$abs_html" >/dev/null 2>&1 || true

if [[ ! -s $abs_png ]]; then
    echo "screenshot.sh: chromium wrote no screenshot to $abs_png" >&2
    exit 1
fi
echo "$abs_png"
