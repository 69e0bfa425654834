#!/usr/bin/env bash
# Relayed packets per server CPU-second: our relay against coturn (Debian's turnserver), with
# the same client (coturn's turnutils_uclient), packet size, rate and peer, in one run.
# Usage: bash bench/relay-vs-coturn.sh [clients] [messages-per-client] [bytes] [interval-ms]
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-40}
MSGS=${2:-2000}
BYTES=${3:-1000}
INTERVAL=${4:-5}
command -v turnserver >/dev/null || { echo "needs coturn: apt-get install -y coturn"; exit 1; }
cargo build --release -q -p relay
RELAY=target/release/relay

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; }
PIDS=()
trap cleanup EXIT

# turnutils_peer listens on its port and the next one (with SO_REUSEPORT): keep relays clear of both.
turnutils_peer -p 3590 -L 127.0.0.1 >/dev/null 2>&1 & PIDS+=($!)

"$RELAY" --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 -p 3600 --no-tls --allow-loopback-peers \
  --user bench:bench --realm bench --min-port 30000 --max-port 31999 --user-quota 0 --total-quota 0 ${RELAY_FLAGS:-} >/dev/null 2>&1 & OURS=$!; PIDS+=($OURS)
turnserver -n --no-cli --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 -p 3610 --no-tls --no-dtls \
  --allow-loopback-peers --user bench:bench --realm bench -a -f --min-port 32000 --max-port 33999 \
  --log-file stdout --simple-log >/dev/null 2>&1 & COTURN=$!; PIDS+=($COTURN)
sleep 1

run() { # name pid port
  local t0 t1 out recv
  t0=$(cpu_ticks "$2")
  out=$(turnutils_uclient -u bench -w bench -e 127.0.0.1 -r 3590 -n "$MSGS" -m "$CLIENTS" -l "$BYTES" -z "$INTERVAL" -c -p "$3" 127.0.0.1 2>&1)
  t1=$(cpu_ticks "$2")
  recv=$(echo "$out" | grep -o 'tot_recv_msgs=[0-9]*' | tail -1 | cut -d= -f2)
  lost=$(echo "$out" | grep -o 'Total lost packets [0-9]*' | tail -1 | awk '{print $4}')
  # Each echoed message crosses the relay twice: client -> peer and peer -> client.
  awk -v n="$1" -v r="$recv" -v l="$lost" -v c="$((t1 - t0))" 'BEGIN {
    cpu = c / 100.0; pk = 2 * r;
    printf "%-8s relayed=%d lost=%s server_cpu_s=%.2f packets_per_cpu_s=%.0f\n", n, pk, l, cpu, (cpu > 0 ? pk / cpu : 0) }'
}

echo "clients=$CLIENTS messages=$MSGS bytes=$BYTES interval_ms=$INTERVAL $(date -u +%FT%TZ) $(nproc) cores"
for round in 1 2; do
  A=$(run ours "$OURS" 3600)
  B=$(run coturn "$COTURN" 3610)
  echo "$A"; echo "$B"
  echo "$A" "$B" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^packets_per_cpu_s=/) { split($i, v, "="); x[++k] = v[2] } }
    END { if (x[2] > 0) printf "round ratio ours/coturn = %.2f\n", x[1] / x[2] }'
done
