//! The relay's Prometheus metrics, served with `--prometheus` on `--prometheus-port` (9641,
//! as coturn). Each core's [`Server`](crate::server::Server) counts in plain integers; its
//! timer task adds the differences to these counters about once a second.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use scrape::metric;

use crate::counters::{Counters, REFUSAL_CODES};

/// Labels of one core.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CoreLabels {
    /// Core index.
    pub core: String,
}

/// Labels of relayed traffic.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowLabels {
    /// Core index.
    pub core: String,
    /// `to_peer` or `to_client`.
    pub direction: &'static str,
}

/// Labels of refused requests.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Core index.
    pub core: String,
    /// The STUN error code (`other` for codes not listed in `REFUSAL_CODES`).
    pub code: String,
}

/// Every metric of the relay.
#[derive(Default)]
pub struct RelayMetrics {
    registry: Registry,
    packets: Family<FlowLabels, Counter>,
    bytes: Family<FlowLabels, Counter>,
    dropped: Family<CoreLabels, Counter>,
    allocations_made: Family<CoreLabels, Counter>,
    allocations: Family<CoreLabels, Gauge>,
    refused: Family<RefusalLabels, Counter>,
}

impl RelayMetrics {
    /// The registry with every family registered.
    pub fn new() -> RelayMetrics {
        let mut m = RelayMetrics { registry: Registry::with_prefix("turn"), ..Default::default() };
        m.registry.register("relayed_packets", "Packets relayed, by core and direction", m.packets.clone());
        m.registry.register("relayed_bytes", "Payload bytes relayed, by core and direction", m.bytes.clone());
        m.registry.register("dropped_datagrams", "Datagrams dropped: malformed, no permission or channel, over --max-bps", m.dropped.clone());
        m.registry.register("allocations_made", "Allocations made", m.allocations_made.clone());
        m.registry.register("allocations", "Allocations now", m.allocations.clone());
        m.registry.register("refused_requests", "Requests refused, by error code (401 includes each client's first challenge; 403: peer address denied)", m.refused.clone());
        m
    }

    /// The handles one core adds to.
    pub fn core(&self, index: usize) -> CoreMetrics {
        let core = index.to_string();
        let flow = |direction| FlowLabels { core: core.clone(), direction };
        let l = CoreLabels { core: core.clone() };
        let refused = REFUSAL_CODES
            .iter()
            .map(|c| c.to_string())
            .chain(std::iter::once("other".to_string()))
            .map(|code| metric(&self.refused, &RefusalLabels { core: core.clone(), code }))
            .collect();
        CoreMetrics {
            to_peer: metric(&self.packets, &flow("to_peer")),
            to_client: metric(&self.packets, &flow("to_client")),
            bytes_to_peer: metric(&self.bytes, &flow("to_peer")),
            bytes_to_client: metric(&self.bytes, &flow("to_client")),
            dropped: metric(&self.dropped, &l),
            allocations_made: metric(&self.allocations_made, &l),
            allocations: metric(&self.allocations, &l),
            refused,
        }
    }
}

impl scrape::Source for RelayMetrics {
    fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// One core's handles.
#[derive(Debug, Clone, Default)]
pub struct CoreMetrics {
    to_peer: Counter,
    to_client: Counter,
    bytes_to_peer: Counter,
    bytes_to_client: Counter,
    dropped: Counter,
    allocations_made: Counter,
    allocations: Gauge,
    refused: Vec<Counter>,
}

impl CoreMetrics {
    /// Adds what the core counted since `since`, and sets its allocations now.
    pub fn report(&self, now: &Counters, since: &Counters, allocations: usize) {
        self.to_peer.inc_by(now.to_peer.saturating_sub(since.to_peer));
        self.to_client.inc_by(now.to_client.saturating_sub(since.to_client));
        self.bytes_to_peer.inc_by(now.bytes_to_peer.saturating_sub(since.bytes_to_peer));
        self.bytes_to_client.inc_by(now.bytes_to_client.saturating_sub(since.bytes_to_client));
        self.dropped.inc_by(now.dropped.saturating_sub(since.dropped));
        self.allocations_made.inc_by(now.allocations.saturating_sub(since.allocations));
        for ((c, n), s) in self.refused.iter().zip(now.refused).zip(since.refused) {
            c.inc_by(n.saturating_sub(s));
        }
        self.allocations.set(i64::try_from(allocations).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_adds_differences_by_direction_and_code() {
        let m = RelayMetrics::new();
        let core = m.core(0);
        let since = Counters { to_peer: 5, ..Counters::default() };
        let mut now = Counters { to_peer: 9, to_client: 3, bytes_to_client: 300, allocations: 2, ..Counters::default() };
        now.refused[crate::counters::refusal_slot(403)] = 2;
        now.refused[crate::counters::refusal_slot(599)] = 1;
        core.report(&now, &since, 2);
        let text = scrape::render(&m);
        for line in [
            "turn_relayed_packets_total{core=\"0\",direction=\"to_peer\"} 4",
            "turn_relayed_bytes_total{core=\"0\",direction=\"to_client\"} 300",
            "turn_allocations_made_total{core=\"0\"} 2",
            "turn_allocations{core=\"0\"} 2",
            "turn_refused_requests_total{core=\"0\",code=\"403\"} 2",
            "turn_refused_requests_total{core=\"0\",code=\"other\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
