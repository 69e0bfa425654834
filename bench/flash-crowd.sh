#!/usr/bin/env bash
# Admission under a flash crowd: one media core (pinned to core 0) with its busy limit, the
# load tester pinned to core 1 so that it does not compete with the server, 4 video
# publishers at 1 Mbit/s, and SUBS subscribers trying to join at JOIN_RATE per second.
# Prints how many got in, the load tester's steady state (rates, CPU per packet on both
# sides, latency, loss), and the busy share the core itself reported over the last seconds.
#
# Usage: bash bench/flash-crowd.sh [subscribers] [seconds] [busy limit %] [joins per second]
set -euo pipefail
cd "$(dirname "$0")/.."
SUBS=${1:-400}; SECS=${2:-25}; LIMIT=${3:-85}; JR=${4:-100}
cargo build --release -q --workspace --bins
D=$(mktemp -d /tmp/flash-crowd.XXXXXX)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
echo "$(date -u +%FT%TZ) $(nproc) cores; limit ${LIMIT} %, ${SUBS} subscribers at ${JR}/s, ${SECS} s"
CAPACITY_PER_CORE=5000 CORE_BUSY_LIMIT=$LIMIT RUST_LOG=warn MEDIA_PLANE_BIN="$PWD/target/release/media-plane" target/release/control-plane local \
  --http-addr 127.0.0.1:9743 --data-dir "$D/data" --public-ip 127.0.0.1 --media-port-base 0 --media-cores 1 --no-relay > "$D/sys.log" 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do grep -q api_secret "$D/data/secrets.toml" 2>/dev/null && curl -skf https://127.0.0.1:9743/healthz | grep -q '"nodes":[1-9]' && break; sleep 0.2; done
KEY=$(grep api_key "$D/data/secrets.toml" | cut -d'"' -f2)
SECRET=$(grep api_secret "$D/data/secrets.toml" | cut -d'"' -f2)
# The core's own load reports, once a second, as the control plane sees them.
( while true; do curl -sk -u "$KEY:$SECRET" https://127.0.0.1:9743/api/nodes >> "$D/nodes.jsonl" 2>/dev/null && echo >> "$D/nodes.jsonl"; sleep 1; done ) & PIDS+=($!)
target/release/loadtest --url https://127.0.0.1:9743 --api-key "$KEY" --api-secret "$SECRET" --ca "$D/data/certs/ca.pem" \
  --video-publishers 4 --subscribers "$SUBS" --duration "$SECS" --video-kbps 1000 --join-rate "$JR" --threads 1 --first-core 1 \
  --server-name media-plane --quiet --json "$D/r.json" > /dev/null 2> "$D/loadtest.err" || true  # refused joins fail its stream check
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
                reports.append(c["busy_permille"] / 10)
busy = reports[-8:-2]
if busy:
    print("core busy share it reported, last seconds: " + ", ".join(f"{b:.0f} %" for b in busy) + f" (mean {sum(busy) / len(busy):.0f} %)")
PY
