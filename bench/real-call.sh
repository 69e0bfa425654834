#!/usr/bin/env bash
# CPU per forwarded packet at the rate of a real call: one 1 Mbit/s video publisher and N
# subscribers from the load tester against one media core (CPU 0; the load tester on CPU 1).
# The media plane's task-clock and context switches are read with `perf stat` over 10 s of
# the steady state, so the figure is the server's own CPU, wake-ups included.
#
# Usage: bash bench/real-call.sh [BIN_DIR (target/release)] [SUBSCRIBERS (20)] [PUBLISHERS (1)]
# Extra media-plane environment can be passed as usual, e.g. NACK_HISTORY_MS=500.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release}
SUBS=${2:-20}
PUBS=${3:-1}
command -v perf >/dev/null || { echo "needs perf (apt-get install -y linux-perf)"; exit 1; }
source bench/one-core.sh
D=$(mktemp -d /tmp/real-call.XXXXXX)
trap 'kill $SYS_PID 2>/dev/null || true' EXIT
start_one_core "$BIN" 9443 "$D/data"
"$BIN/loadtest" --url "$URL" --api-key "$KEY" --api-secret "$SECRET" --ca "$CA" \
  --video-publishers "$PUBS" --subscribers "$SUBS" --duration 24 --video-kbps 1000 --join-rate 50 \
  --threads 1 --first-core 1 --server-name media-plane --quiet --json "$D/report.json" > /dev/null &
LT=$!
sleep 9
perf stat -e task-clock,context-switches -p "$(pgrep -n -x media-plane)" -o "$D/stat" -- sleep 10 > /dev/null 2>&1
wait $LT
python3 - "$D/report.json" "$D/stat" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1])); st = open(sys.argv[2]).read()
ms = float(re.search(r"([\d.,]+)\s+msec task-clock", st).group(1).replace(",", ""))
cs = int(re.search(r"([\d,]+)\s+context-switches", st).group(1).replace(",", ""))
pps = r["steady_state"]["rx_pps"]
print(f"server us per forwarded packet {ms * 1000 / (pps * 10):.2f}  wake-ups/s {cs / 10:.0f}  forwarded/s {pps:.0f}  loss {r['loss'] * 100:.3f} %  latency p50 {r['latency_ms']['p50']} ms p99 {r['latency_ms']['p99']} ms")
PY
