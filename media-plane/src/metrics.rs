//! The node's Prometheus metrics, served on `--prometheus` (crate `scrape`). Each core keeps
//! its figures in plain integers on its own thread ([`Tally`], the core's [`Counters`]) and
//! adds them to the shared counters once per load report, never per packet, so the data
//! path gains no atomic operation.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use scrape::metric;

use crate::sfu::Counters;

/// Labels of one core.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CoreLabels {
    /// Core index.
    pub core: String,
}

type Counts = Family<CoreLabels, Counter>;
type Seconds = Family<CoreLabels, Counter<f64, AtomicU64>>;
type Levels = Family<CoreLabels, Gauge>;

/// Every metric of the node.
#[derive(Default)]
pub struct NodeMetrics {
    registry: Registry,
    families: Families,
}

#[derive(Default, Clone)]
struct Families {
    rx_datagrams: Counts,
    tx_datagrams: Counts,
    rx_bytes: Counts,
    tx_bytes: Counts,
    syscalls: Counts,
    rx_rtp: Counts,
    tx_rtp: Counts,
    unroutable: Counts,
    unverified_stun: Counts,
    shed: Counts,
    restarts: Counts,
    busy: Seconds,
    sessions: Levels,
    connected: Levels,
}

impl NodeMetrics {
    /// The node's registry with every family registered.
    pub fn new() -> NodeMetrics {
        let f = Families::default();
        let mut r = Registry::with_prefix("media");
        r.register("rx_datagrams", "UDP datagrams received, per core", f.rx_datagrams.clone());
        r.register("tx_datagrams", "UDP datagrams sent, per core", f.tx_datagrams.clone());
        r.register("rx_bytes", "UDP payload bytes received, per core", f.rx_bytes.clone());
        r.register("tx_bytes", "UDP payload bytes sent, per core", f.tx_bytes.clone());
        r.register("syscalls", "Socket system calls (io_uring submissions or recvmmsg/sendmmsg), per core", f.syscalls.clone());
        r.register("rx_rtp_packets", "RTP packets received from publishers and accepted, per core", f.rx_rtp.clone());
        r.register("tx_rtp_packets", "RTP packets handed to subscribers, per core", f.tx_rtp.clone());
        r.register("unroutable_datagrams", "Datagrams from an address no session owns, dropped, per core", f.unroutable.clone());
        r.register("unverified_stun", "STUN from a new address whose integrity did not check out, per core", f.unverified_stun.clone());
        r.register("shed_packets", "Media dropped unread after waiting too long in the kernel (overload), per core", f.shed.clone());
        r.register("core_restarts", "Core state machines restarted after a panic", f.restarts.clone());
        r.register("busy_seconds", "CPU time of each core's thread", f.busy.clone());
        r.register("sessions", "Sessions on each core", f.sessions.clone());
        r.register("connected_sessions", "Sessions past ICE and DTLS on each core", f.connected.clone());
        NodeMetrics { registry: r, families: f }
    }

    /// The handles one core adds to.
    pub fn core(&self, index: u32) -> CoreMetrics {
        let l = CoreLabels { core: index.to_string() };
        let f = &self.families;
        let c = |fam: &Counts| metric(fam, &l);
        CoreMetrics {
            rx_datagrams: c(&f.rx_datagrams),
            tx_datagrams: c(&f.tx_datagrams),
            rx_bytes: c(&f.rx_bytes),
            tx_bytes: c(&f.tx_bytes),
            syscalls: c(&f.syscalls),
            rx_rtp: c(&f.rx_rtp),
            tx_rtp: c(&f.tx_rtp),
            unroutable: c(&f.unroutable),
            unverified_stun: c(&f.unverified_stun),
            shed: c(&f.shed),
            restarts: c(&f.restarts),
            busy: metric(&f.busy, &l),
            sessions: metric(&f.sessions, &l),
            connected: metric(&f.connected, &l),
        }
    }
}

impl scrape::Source for NodeMetrics {
    fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// What the loop counts itself, turn by turn, between two reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Datagrams received.
    pub rx_datagrams: u64,
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes handed to the socket.
    pub tx_bytes: u64,
    /// Socket system calls.
    pub syscalls: u64,
}

/// One core's handles (cheap clones of the node's counters).
#[derive(Debug, Clone, Default)]
pub struct CoreMetrics {
    rx_datagrams: Counter,
    tx_datagrams: Counter,
    rx_bytes: Counter,
    tx_bytes: Counter,
    syscalls: Counter,
    rx_rtp: Counter,
    tx_rtp: Counter,
    unroutable: Counter,
    unverified_stun: Counter,
    shed: Counter,
    restarts: Counter,
    busy: Counter<f64, AtomicU64>,
    sessions: Gauge,
    connected: Gauge,
}

impl CoreMetrics {
    /// Adds one report's worth: the loop's tally, the core's counters since the last
    /// report, its thread's CPU time, and its sessions now.
    pub fn report(&self, tally: Tally, now: Counters, since: Counters, busy: Duration, sessions: u32, connected: u32) {
        self.rx_datagrams.inc_by(tally.rx_datagrams);
        self.tx_datagrams.inc_by(tally.tx_datagrams);
        self.rx_bytes.inc_by(tally.rx_bytes);
        self.tx_bytes.inc_by(tally.tx_bytes);
        self.syscalls.inc_by(tally.syscalls);
        self.rx_rtp.inc_by(now.rx_rtp.saturating_sub(since.rx_rtp));
        self.tx_rtp.inc_by(now.tx_rtp.saturating_sub(since.tx_rtp));
        self.unroutable.inc_by(now.unroutable.saturating_sub(since.unroutable));
        self.unverified_stun.inc_by(now.unverified_stun.saturating_sub(since.unverified_stun));
        self.shed.inc_by(now.shed.saturating_sub(since.shed));
        self.busy.inc_by(busy.as_secs_f64());
        self.sessions.set(i64::from(sessions));
        self.connected.set(i64::from(connected));
    }

    /// Counts a restart after a panic.
    pub fn restarted(&self) {
        self.restarts.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_adds_deltas_under_the_core_label() {
        let node = NodeMetrics::new();
        let core = node.core(1);
        let since = Counters { rx_rtp: 10, tx_rtp: 20, ..Counters::default() };
        let now = Counters { rx_rtp: 15, tx_rtp: 40, shed: 2, ..Counters::default() };
        core.report(Tally { rx_datagrams: 7, tx_datagrams: 21, rx_bytes: 700, tx_bytes: 2100, syscalls: 3 }, now, since, Duration::from_millis(250), 4, 3);
        core.restarted();
        let text = scrape::render(&node);
        for line in [
            "media_rx_rtp_packets_total{core=\"1\"} 5",
            "media_tx_rtp_packets_total{core=\"1\"} 20",
            "media_shed_packets_total{core=\"1\"} 2",
            "media_tx_bytes_total{core=\"1\"} 2100",
            "media_busy_seconds_total{core=\"1\"} 0.25",
            "media_sessions{core=\"1\"} 4",
            "media_connected_sessions{core=\"1\"} 3",
            "media_core_restarts_total{core=\"1\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
