#!/usr/bin/env bash
# Run Janus (Debian package `janus`, 1.1.2) VideoRoom inside a network
# namespace, reachable from the root namespace over a veth pair.
#
#   janus.sh start <workdir>   -> prints the Janus API base URL as the last stdout line
#   janus.sh stop  <workdir>   -> idempotent teardown (janus, veth, netns)
#
# Why a netns: Janus never offers loopback ICE candidates, so a client in the
# root namespace cannot reach it over 127.0.0.1; a veth pair gives both sides a
# real (non-loopback) address on one point-to-point link.
#
# Environment overrides (start; stop re-reads what start saved in <workdir>/state.env):
#   JANUS_NS          netns name                       (default ltjanus)
#   JANUS_HOST_IP     root-side veth address           (default 10.77.0.1)
#   JANUS_NS_IP       netns-side veth address (Janus)  (default 10.77.0.2)
#   JANUS_PREFIX      prefix length                    (default 24)
#   JANUS_VETH_HOST   root-side veth name              (default <ns>-h, <=15 chars)
#   JANUS_VETH_NS     netns-side veth name             (default <ns>-n, <=15 chars)
#   JANUS_HTTP_PORT   HTTP API port                    (default 8088)
#   JANUS_RTP_RANGE   media port range                 (default 20000-40000)
#   JANUS_ROOM        VideoRoom room id                (default 1234)
#   JANUS_PUBLISHERS  max publishers in the room       (default 100)
#   JANUS_BITRATE     publisher video bitrate cap, 0 = none (default 2000000)
#   JANUS_SESSION_TIMEOUT  Janus session timeout in s  (default 60)
#   JANUS_DEBUG_LEVEL Janus log level 0-7              (default 4)
#   JANUS_START_TIMEOUT seconds to wait for /info      (default 20)
set -euo pipefail

usage() {
    echo "usage: $0 start|stop <workdir>" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
cmd=$1
wd=$2

log() { echo "janus.sh: $*" >&2; }

load_settings() {
    NS=${JANUS_NS:-ltjanus}
    HOST_IP=${JANUS_HOST_IP:-10.77.0.1}
    NS_IP=${JANUS_NS_IP:-10.77.0.2}
    PREFIX=${JANUS_PREFIX:-24}
    VETH_HOST=${JANUS_VETH_HOST:-${NS:0:13}-h}
    VETH_NS=${JANUS_VETH_NS:-${NS:0:13}-n}
    HTTP_PORT=${JANUS_HTTP_PORT:-8088}
    RTP_RANGE=${JANUS_RTP_RANGE:-20000-40000}
    ROOM=${JANUS_ROOM:-1234}
    PUBLISHERS=${JANUS_PUBLISHERS:-100}
    BITRATE=${JANUS_BITRATE:-2000000}
    SESSION_TIMEOUT=${JANUS_SESSION_TIMEOUT:-60}
    DEBUG_LEVEL=${JANUS_DEBUG_LEVEL:-4}
    START_TIMEOUT=${JANUS_START_TIMEOUT:-20}
}

# Janus library folders as shipped by the Debian package (multiarch path).
find_libdir() {
    local d
    for d in /usr/lib/x86_64-linux-gnu/janus /usr/lib/*-linux-gnu/janus /usr/lib/janus /opt/janus/lib/janus; do
        if compgen -G "$d/plugins/libjanus_videoroom.so*" >/dev/null; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

write_configs() {
    local etc=$1 libdir=$2
    mkdir -p "$etc" "$wd/lib/plugins" "$wd/lib/transports" "$wd/lib/events" "$wd/lib/loggers"
    # Private plugin/transport folders holding only what we want loaded: Janus
    # loads every *.so* it finds in a folder, so this is stricter than 'disable'.
    rm -f "$wd"/lib/plugins/* "$wd"/lib/transports/* "$wd"/lib/events/* "$wd"/lib/loggers/*
    local f
    for f in "$libdir"/plugins/libjanus_videoroom.so*; do ln -s "$f" "$wd/lib/plugins/"; done
    for f in "$libdir"/transports/libjanus_http.so*; do ln -s "$f" "$wd/lib/transports/"; done

    cat >"$etc/janus.jcfg" <<EOF
general: {
	configs_folder = "$etc"
	plugins_folder = "$wd/lib/plugins"
	transports_folder = "$wd/lib/transports"
	events_folder = "$wd/lib/events"
	loggers_folder = "$wd/lib/loggers"
	debug_level = $DEBUG_LEVEL
	debug_timestamps = true
	debug_colors = false
	interface = "$NS_IP"
	server_name = "ltjanus"
	session_timeout = $SESSION_TIMEOUT
	protected_folders = [ "/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/sbin", "/sys", "/usr", "/var" ]
}
certificates: {
	# none configured: Janus generates a self-signed DTLS certificate at startup
}
media: {
	ipv6 = false
	rtp_port_range = "$RTP_RANGE"
}
nat: {
	nice_debug = false
	full_trickle = false
	ice_lite = false
	ice_tcp = false
	ignore_mdns = true
	ice_enforce_list = "$NS_IP"
}
plugins: {
	disable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so"
}
transports: {
	disable = "libjanus_websockets.so,libjanus_rabbitmq.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so"
}
loggers: {
	disable = "libjanus_jsonlog.so"
}
events: {
	broadcast = false
}
EOF

    cat >"$etc/janus.transport.http.jcfg" <<EOF
general: {
	events = false
	json = "plain"
	base_path = "/janus"
	http = true
	port = $HTTP_PORT
	ip = "$NS_IP"
	https = false
	mhd_connection_limit = 4000
}
admin: {
	admin_http = false
	admin_https = false
}
cors: {
}
EOF

    cat >"$etc/janus.plugin.videoroom.jcfg" <<EOF
general: {
	events = false
}
room-$ROOM: {
	description = "loadtest"
	publishers = $PUBLISHERS
	bitrate = $BITRATE
	fir_freq = 10
	audiocodec = "opus"
	videocodec = "vp8"
	record = false
}
EOF
}

ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$NS"; }

teardown() {
    local pid
    if [[ -f "$wd/janus.pid" ]]; then
        pid=$(cat "$wd/janus.pid" 2>/dev/null || true)
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$wd/janus.pid"
    fi
    # Deleting one end of a veth deletes its peer too.
    ip link del "$VETH_HOST" 2>/dev/null || true
    if ns_exists; then
        # Anything still running in the namespace (only our janus) must go first.
        local p
        for p in $(ip netns pids "$NS" 2>/dev/null || true); do
            kill -KILL "$p" 2>/dev/null || true
        done
        ip netns del "$NS" 2>/dev/null || true
    fi
}

start() {
    load_settings
    mkdir -p "$wd"
    wd=$(cd "$wd" && pwd)

    if ! command -v janus >/dev/null 2>&1; then
        log "installing janus via apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y janus >&2 || { apt-get update >&2 && apt-get install -y janus >&2; }
    fi
    local libdir
    libdir=$(find_libdir) || { log "janus videoroom plugin not found"; exit 1; }

    # Stale leftovers from an earlier run with the same names.
    teardown

    ip netns add "$NS"
    ip link add "$VETH_HOST" type veth peer name "$VETH_NS"
    ip link set "$VETH_NS" netns "$NS"
    ip addr add "$HOST_IP/$PREFIX" dev "$VETH_HOST"
    ip link set "$VETH_HOST" up
    ip netns exec "$NS" ip link set lo up
    ip netns exec "$NS" ip addr add "$NS_IP/$PREFIX" dev "$VETH_NS"
    ip netns exec "$NS" ip link set "$VETH_NS" up
    # Direct link, no routing: forwarding is not needed. rp_filter only drops
    # packets whose source would route out another interface, which cannot
    # happen on a connected /24, but relax it on the veth anyway.
    sysctl -qw "net.ipv4.conf.$VETH_HOST.rp_filter=0" >/dev/null 2>&1 || true
    ip netns exec "$NS" sysctl -qw "net.ipv4.conf.$VETH_NS.rp_filter=0" >/dev/null 2>&1 || true
    ip netns exec "$NS" sysctl -qw "net.ipv4.conf.all.rp_filter=0" >/dev/null 2>&1 || true

    cat >"$wd/state.env" <<EOF
JANUS_NS=$NS
JANUS_VETH_HOST=$VETH_HOST
JANUS_VETH_NS=$VETH_NS
JANUS_HOST_IP=$HOST_IP
JANUS_NS_IP=$NS_IP
JANUS_HTTP_PORT=$HTTP_PORT
EOF

    write_configs "$wd/etc" "$libdir"

    : >"$wd/janus.log"
    # `ip netns exec` and `setsid` (not a group leader here) both exec, so $!
    # is janus's own pid.
    ip netns exec "$NS" setsid janus -F "$wd/etc" -C "$wd/etc/janus.jcfg" \
        </dev/null >>"$wd/janus.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$wd/janus.pid"

    local base="http://$NS_IP:$HTTP_PORT/janus"
    local deadline=$((SECONDS + START_TIMEOUT))
    until curl -fsS --max-time 2 "$base/info" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "janus exited during startup; last log lines:"
            tail -n 30 "$wd/janus.log" >&2 || true
            teardown
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "janus did not answer $base/info within ${START_TIMEOUT}s; last log lines:"
            tail -n 30 "$wd/janus.log" >&2 || true
            teardown
            exit 1
        fi
        sleep 0.2
    done
    log "janus pid $pid in netns $NS, log $wd/janus.log"
    echo "$base"
}

stop() {
    if [[ -f "$wd/state.env" ]]; then
        # shellcheck disable=SC1091
        set -a; . "$wd/state.env"; set +a
    fi
    load_settings
    teardown
}

case "$cmd" in
start) start ;;
stop) stop ;;
*) usage ;;
esac
