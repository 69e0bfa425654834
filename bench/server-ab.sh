#!/usr/bin/env bash
# A/B of two builds of the media plane, alternating in the same session so that the host's
# drift hits both: each run starts the local system from one build's binaries (media plane
# on one core, pinned to core 0), drives it with the load tester pinned to core 1, and
# prints the server's CPU per forwarded packet, peak RSS, page faults and loss.
#
# Usage: bash bench/server-ab.sh A_DIR B_DIR [subscribers] [seconds] [pairs] [video publishers]
#   A_DIR, B_DIR: directories holding media-plane, control-plane and loadtest release
#   binaries (copy them out of target/release after building each tree).
set -euo pipefail
. "$(dirname "$0")/one-core.sh"
A=$(realpath "$1"); B=$(realpath "$2")
SUBS=${3:-200}; SECS=${4:-12}; PAIRS=${5:-5}; PUBS=${6:-4}
for d in "$A" "$B"; do
  for b in media-plane control-plane loadtest; do [ -x "$d/$b" ] || { echo "missing $d/$b" >&2; exit 2; }; done
done
D=$(mktemp -d /tmp/server-ab.XXXXXX)
CP=""
cleanup() { [ -n "$CP" ] && kill "$CP" 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT
echo "$(date -u +%FT%TZ) $(nproc) cores, kernel $(uname -r); $PUBS publishers at 1 Mbit/s, $SUBS subscribers, ${SECS} s"

one() { # build-dir label
  local bin=$1 label=$2
  local data="$D/data-$label"
  rm -rf "$data"
  start_one_core "$bin" 9643 "$data" CORE_BUSY_LIMIT=100
  CP=$SYS_PID
  local mp faults
  load_one_core "$bin" "$PUBS" "$SUBS" "$SECS" 100 "$D/r.json" > /dev/null
  mp=$(pgrep -f "^$bin/media-plane" | head -1)
  faults=$(awk '{print $10}' "/proc/$mp/stat")
  kill "$CP"; wait "$CP" 2>/dev/null || true; CP=""
  python3 - "$D/r.json" "$label" "$faults" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); label, faults = sys.argv[2], int(sys.argv[3])
fwd = r["packets_received"]
print(f"{label}: {r['server_cpu_s_per_million_forwarded']:.2f} CPU-s per M forwarded, peak RSS {r['server_peak_rss_kb']/1024:.1f} MiB, "
      f"{faults / max(fwd, 1):.4f} page faults (whole process) per forwarded packet, loss {r['loss']:.4%}, {fwd} forwarded")
print("JSON " + json.dumps({"label": label, "cpu": r["server_cpu_s_per_million_forwarded"], "rss_kb": r["server_peak_rss_kb"], "faults": faults, "forwarded": fwd, "loss": r["loss"]}))
PY
}

for _ in $(seq 1 "$PAIRS"); do
  one "$A" A
  one "$B" B
done | tee "$D/runs.txt" | grep -v '^JSON '
python3 - "$D/runs.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l[5:]) for l in open(sys.argv[1]) if l.startswith("JSON ")]
a = [r for r in rows if r["label"] == "A"]; b = [r for r in rows if r["label"] == "B"]
ratios = [x["cpu"] / y["cpu"] for x, y in zip(a, b)]
print(f"CPU per forwarded packet, A / B per pair: {', '.join(f'{v:.3f}' for v in ratios)}; median {statistics.median(ratios):.3f}")
PY
