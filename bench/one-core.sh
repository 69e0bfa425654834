# Sourced by the bench scripts: the local system with one media core (pinned to core 0)
# behind its control plane, and the load tester pinned to core 1 so that it never shares
# the server's core.

# start_one_core BIN_DIR PORT DATA_DIR [NAME=VALUE ...]: starts the system from BIN_DIR's
# release binaries (extra environment after the data dir) and waits until its node is up.
# Sets SYS_PID, and URL, KEY, SECRET and CA for load_one_core.
start_one_core() {
  local bin=$1 port=$2 data=$3
  shift 3
  env CAPACITY_PER_CORE=5000 RUST_LOG=warn "$@" MEDIA_PLANE_BIN="$bin/media-plane" "$bin/control-plane" local \
    --http-addr "127.0.0.1:$port" --data-dir "$data" --public-ip 127.0.0.1 --media-port-base 0 --media-cores 1 --no-relay > "$data.log" 2>&1 &
  SYS_PID=$!
  URL="https://127.0.0.1:$port"
  for _ in $(seq 1 100); do grep -q api_secret "$data/secrets.toml" 2>/dev/null && curl -skf "$URL/healthz" | grep -q '"nodes":[1-9]' && break; sleep 0.2; done
  KEY=$(grep api_key "$data/secrets.toml" | cut -d'"' -f2)
  SECRET=$(grep api_secret "$data/secrets.toml" | cut -d'"' -f2)
  CA="$data/certs/ca.pem"
}

# load_one_core BIN_DIR PUBLISHERS SUBSCRIBERS SECONDS JOIN_RATE JSON_OUT: the load tester
# on core 1 against the system started last: video publishers at 1 Mbit/s and subscribers.
load_one_core() {
  "$1/loadtest" --url "$URL" --api-key "$KEY" --api-secret "$SECRET" --ca "$CA" \
    --video-publishers "$2" --subscribers "$3" --duration "$4" --video-kbps 1000 --join-rate "$5" --threads 1 --first-core 1 \
    --server-name media-plane --quiet --json "$6"
}
