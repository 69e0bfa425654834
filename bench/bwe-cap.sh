#!/usr/bin/env bash
# Send-side estimation against a capped subscriber: one three-layer simulcast publisher
# (VP8, l/m/h), two subscribers, the first capped at CAP kbit/s by the load tester's
# receive-side token bucket. Prints, per subscriber, the packets it received at each
# keyframe size, and the capped one's received rate and drops.
#
# Usage: bash bench/bwe-cap.sh [cap kbit/s] [seconds] [initial estimate kbit/s, 0 = off]
# BIN=dir runs that directory's binaries instead of building the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/one-core.sh
CAP=${1:-300}; SECS=${2:-20}; BWE=${3:-1000}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p control-plane -p media-plane -p loadtest
  BIN=$PWD/target/release
fi
D=$(mktemp -d /tmp/bwe-cap.XXXXXX)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
echo "$(date -u +%FT%TZ) cap ${CAP} kbit/s, ${SECS} s, initial estimate ${BWE} kbit/s"
start_one_core "$BIN" 9745 "$D/data" BWE_INITIAL_KBPS="$BWE"
PIDS+=("$SYS_PID")
"$BIN/loadtest" --url "$URL" --api-key "$KEY" --api-secret "$SECRET" --ca "$CA" \
  --video-publishers 1 --subscribers 2 --simulcast true --duration "$SECS" --threads 1 --first-core 1 \
  --subscriber-kbps "$CAP" --capped-subscribers 1 --quiet --json "$D/r.json" > /dev/null 2> "$D/loadtest.err" || true
python3 bench/bwe-cap-report.py "$D/r.json"
