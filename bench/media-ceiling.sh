#!/usr/bin/env bash
# One run: the machine's raw UDP send ceiling on one core, then our media plane on that core
# (pinned to core 0) forwarding a load from the load tester (pinned to core 1), so the SFU's
# egress can be read as a ratio to the ceiling measured minutes apart on the same machine.
#
# Usage: bash bench/media-ceiling.sh [subscribers] [seconds]   (4 video publishers at 1 Mbit/s)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/one-core.sh
SUBS=${1:-300}
SECS=${2:-12}
cargo build --release -q --workspace --bins
D=$(mktemp -d /tmp/media-ceiling.XXXXXX)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
echo "$(date -u +%FT%TZ) $(nproc) cores, kernel $(uname -r)"
target/release/ceiling --seconds 3 --core 0 --json > "$D/ceiling.json"
target/release/ceiling --seconds 3 --core 0 | tail -n +2

start_one_core "$PWD/target/release" 9543 "$D/data" CORE_BUSY_LIMIT=100
PIDS+=("$SYS_PID")
load_one_core "$PWD/target/release" 4 "$SUBS" "$SECS" 100 "$D/sfu.json" | grep -E "streams|packets|latency|steady"
python3 - "$D/ceiling.json" "$D/sfu.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); r = json.load(open(sys.argv[2]))
ss = r["steady_state"]; pps = ss["rx_pps"]; us = ss["server_us_per_packet"]
peak = max(s["rx_pps"] for s in r["series"])
print(f"SFU on one core: steady {pps:.0f} pkt/s (peak second {peak:.0f}), {us:.2f} µs CPU per forwarded packet, loss {r['loss']:.4%}")
for x in c["results"]:
    cost = x["cpu_s"] * 1e6 / (x["pps"] * c["seconds"])
    print(f"  vs {x['path']:<46} {x['pps']:>9.0f}/s: SFU egress ratio {pps / x['pps']:.2f}, per-packet CPU ratio {us / cost:.2f}")
PY
