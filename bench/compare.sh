#!/usr/bin/env bash
# One run, side by side: the same SFU scenario against our server and against Janus 1.1.2
# (both inside one network namespace, reached over the same veth), and the same TURN
# scenario against our relay and coturn 4.6.1 (both on loopback). Prints `loadtest compare`
# tables with ratios; the JSON reports and SVG plots stay in $OUT.
#
# Usage: bash bench/compare.sh [video-publishers] [subscribers] [seconds] [video-kbps] [turn-allocations] [turn-pps]
# SFU_FLAGS adds load-tester flags to both SFU runs, e.g. SFU_FLAGS="--simulcast true".
set -euo pipefail
cd "$(dirname "$0")/.."
PUBS=${1:-4}
SUBS=${2:-8}
SECS=${3:-15}
KBPS=${4:-1000}
ALLOCS=${5:-100}
TPPS=${6:-100}
OUT=${OUT:-$(mktemp -d /tmp/compare.XXXXXX)}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespace)"; exit 1; }
command -v turnserver >/dev/null || { echo "needs coturn: apt-get install -y coturn"; exit 1; }
cargo build --release -q --workspace --bins
LT=target/release/loadtest
export JANUS_NS=ltcmp JANUS_HOST_IP=10.79.0.1 JANUS_NS_IP=10.79.0.2 JANUS_HTTP_PORT=8088
PIDS=()
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  bash tests/janus/janus.sh stop "$OUT/janus" >/dev/null 2>&1 || true
}
trap cleanup EXIT
mkdir -p "$OUT/janus" "$OUT/data"
JANUS_URL=$(bash tests/janus/janus.sh start "$OUT/janus" | tail -1)

# Our system in the same namespace as Janus, on its veth address.
ip netns exec "$JANUS_NS" env RUST_LOG=warn CORE_BUSY_LIMIT=100 MEDIA_PLANE_BIN="$PWD/target/release/media-plane" RELAY_BIN="$PWD/target/release/relay" \
  target/release/control-plane local --http-addr 10.79.0.2:9443 --data-dir "$OUT/data" --public-ip 10.79.0.2 --no-relay \
  > "$OUT/ours.log" 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do
  grep -q api_secret "$OUT/data/secrets.toml" 2>/dev/null && curl -skf https://10.79.0.2:9443/healthz | grep -q '"nodes":[1-9]' && break
  sleep 0.2
done
KEY=$(grep api_key "$OUT/data/secrets.toml" | cut -d'"' -f2)
SECRET=$(grep api_secret "$OUT/data/secrets.toml" | cut -d'"' -f2)

SCEN=(--video-publishers "$PUBS" --subscribers "$SUBS" --duration "$SECS" --video-kbps "$KBPS" --join-rate 10 --quiet ${SFU_FLAGS:-})
echo "scenario: 1 room, $PUBS video publishers, $SUBS subscribers, $KBPS kbit/s, ${SECS} s ${SFU_FLAGS:-}; $(date -u +%FT%TZ); $(nproc) cores"
"$LT" "${SCEN[@]}" --url https://10.79.0.2:9443 --api-key "$KEY" --api-secret "$SECRET" --ca "$OUT/data/certs/ca.pem" \
  --server-name media-plane --json "$OUT/ours.json" --plots "$OUT/plots-ours" > "$OUT/ours.txt" || true
"$LT" "${SCEN[@]}" --target janus --janus-url "$JANUS_URL" --server-name janus --json "$OUT/janus.json" --plots "$OUT/plots-janus" > "$OUT/janus.txt" || true
"$LT" compare ours="$OUT/ours.json" janus="$OUT/janus.json"

# TURN: the same allocations, rate and size through our relay and through coturn.
target/release/relay --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 -p 3600 --no-tls --allow-loopback-peers \
  --use-auth-secret --static-auth-secret benchsecret --realm bench --min-port 30000 --max-port 31999 ${RELAY_FLAGS:-} >/dev/null 2>&1 & PIDS+=($!)
turnserver -n --no-cli --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 -p 3610 --no-tls --no-dtls --allow-loopback-peers \
  --use-auth-secret --static-auth-secret benchsecret --realm bench -f --min-port 32000 --max-port 33999 \
  --log-file stdout --simple-log >/dev/null 2>&1 & PIDS+=($!)
sleep 1
TURN=(--target turn --turn-secret benchsecret --turn-allocations "$ALLOCS" --turn-rate "$TPPS" --turn-packet-size 1000 --duration "$SECS" --join-rate 200 --quiet)
echo "TURN: $ALLOCS allocations, $TPPS pkt/s each way, 1000 bytes, ${SECS} s"
"$LT" "${TURN[@]}" --turn-server 127.0.0.1:3600 --server-name relay --json "$OUT/relay.json" > "$OUT/relay.txt" || true
"$LT" "${TURN[@]}" --turn-server 127.0.0.1:3610 --server-name turnserver --json "$OUT/coturn.json" > "$OUT/coturn.txt" || true
"$LT" compare relay="$OUT/relay.json" coturn="$OUT/coturn.json"
echo "reports and plots: $OUT"
