#!/usr/bin/env bash
# Admission under a flash crowd: one media core (pinned to core 0) with its busy limit, the
# load tester pinned to core 1 so that it does not compete with the server, 4 video
# publishers at 1 Mbit/s, and SUBS subscribers trying to join at JOIN_RATE per second.
# Prints how many got in, the load tester's steady state (rates, CPU per packet on both
# sides, latency, loss), and the busy share the core itself reported over the last seconds
# (and how much of it went to joins and handshakes).
#
# Usage: bash bench/flash-crowd.sh [subscribers] [seconds] [busy limit %] [joins per second]
# BIN=dir runs that directory's binaries instead of building the tree (A/B of two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/one-core.sh
SUBS=${1:-400}; SECS=${2:-25}; LIMIT=${3:-85}; JR=${4:-100}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q --workspace --bins
  BIN=$PWD/target/release
fi
D=$(mktemp -d /tmp/flash-crowd.XXXXXX)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
echo "$(date -u +%FT%TZ) $(nproc) cores; limit ${LIMIT} %, ${SUBS} subscribers at ${JR}/s, ${SECS} s"
start_one_core "$BIN" 9743 "$D/data" CORE_BUSY_LIMIT="$LIMIT"
PIDS+=("$SYS_PID")
# The core's own load reports, once a second, as the control plane sees them.
( while true; do curl -sk -u "$KEY:$SECRET" "$URL/api/nodes" >> "$D/nodes.jsonl" 2>/dev/null && echo >> "$D/nodes.jsonl"; sleep 1; done ) & PIDS+=($!)
# Refused joins fail the load tester's stream check, hence `|| true`.
load_one_core "$BIN" 4 "$SUBS" "$SECS" "$JR" "$D/r.json" > /dev/null 2> "$D/loadtest.err" || true
python3 - "$D/r.json" "$D/nodes.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); ss = r["steady_state"]; lat = r["latency_ms"]
print(f"admitted {r['connected']} of {r['peers']} ({r['failed']} refused or failed); loss {r['loss']:.4%}; latency p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms")
print(f"steady: {ss['rx_pps']:.0f} pkt/s received; server {ss['server_us_per_packet']:.2f} µs and load tester {ss['loadtest_us_per_packet']:.2f} µs per packet")
tail = [s for s in r["series"] if s["rx_pps"] > 0][-6:-1]
print("last seconds, process CPU %: server " + ", ".join(f"{s['server_cpu_pct']:.0f}" for s in tail) + "; load tester " + ", ".join(f"{s['loadtest_cpu_pct']:.0f}" for s in tail))
reports = []
for line in open(sys.argv[2]):
    line = line.strip()
    if not line:
        continue
    try:
        nodes = json.loads(line)
    except ValueError:
        continue
    nodes = nodes if isinstance(nodes, list) else nodes.get("nodes", [nodes])
    for n in nodes:
        for c in n.get("cores", []):
            if c.get("tx_pps", 0) > 0:
                reports.append((c["busy_permille"] / 10, (c.get("setup_permille") or 0) / 10))
busy = [b for b, _ in reports[-8:-2]]
if busy:
    print("core busy share it reported, last seconds: " + ", ".join(f"{b:.0f} %" for b in busy) + f" (mean {sum(busy) / len(busy):.0f} %)")
setup = [s for _, s in reports]
if setup:
    print(f"of which joins and handshakes: at most {max(setup):.0f} % in any report, {setup[-3]:.0f} % at the end")
PY
