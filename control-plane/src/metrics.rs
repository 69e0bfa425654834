//! Prometheus metrics of the control plane, served as text at `/metrics` behind the API
//! credentials: HTTP requests and latency by route, joins by kind and result, webhook
//! deliveries, and, set from a [`Live`] view of the state at each scrape, rooms, sessions,
//! nodes and each media core's last load report. The route is in `observe`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use signaling::Via;

use crate::error::ApiError;

/// Labels of one HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route template (`/api/rooms/{room}`), or `unmatched`.
    pub route: String,
    /// Method.
    pub method: String,
    /// Status code.
    pub status: u16,
}

/// Labels of one route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route template.
    pub route: String,
}

/// Labels of one join attempt.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JoinLabels {
    /// `ws`, `whip` or `whep`.
    pub via: &'static str,
    /// `ok`, or the error code of the refusal.
    pub result: &'static str,
}

/// Labels of one webhook outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `delivered`, `failed` (every try) or `dropped` (queue full).
    pub outcome: &'static str,
}

/// Labels of one media core.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CoreLabels {
    /// Node id.
    pub node: String,
    /// Core index on the node.
    pub core: String,
}

/// Labels of sessions by connection kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViaLabels {
    /// `ws`, `whip` or `whep`.
    pub via: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric of the process and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP latency.
    pub http_seconds: Family<RouteLabels, Histogram>,
    /// Join attempts.
    pub joins: Family<JoinLabels, Counter>,
    /// Webhook events by outcome.
    pub webhooks: Family<OutcomeLabels, Counter>,
    rooms: Gauge,
    sessions: Family<ViaLabels, Gauge>,
    nodes: Gauge,
    core_sessions: Family<CoreLabels, Gauge>,
    core_rx_pps: Family<CoreLabels, FloatGauge>,
    core_tx_pps: Family<CoreLabels, FloatGauge>,
    core_busy: Family<CoreLabels, FloatGauge>,
    core_tx_packets: Family<CoreLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route, method and status", http_requests.clone());
        let http_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.5, 12)));
        registry.register("http_request_duration_seconds", "HTTP request latency by route (to the response head; a WebSocket's upgrade)", http_seconds.clone());
        let joins = Family::<JoinLabels, Counter>::default();
        registry.register("joins", "Join attempts by kind and result (ok or the refusal's error code)", joins.clone());
        let webhooks = Family::<OutcomeLabels, Counter>::default();
        registry.register("webhook_events", "Webhook events per receiver by outcome", webhooks.clone());
        let rooms = Gauge::default();
        registry.register("rooms", "Rooms", rooms.clone());
        let sessions = Family::<ViaLabels, Gauge>::default();
        registry.register("sessions", "Participant sessions by connection kind", sessions.clone());
        let nodes = Gauge::default();
        registry.register("media_nodes", "Media-plane nodes connected on the control link", nodes.clone());
        let core_sessions = Family::<CoreLabels, Gauge>::default();
        registry.register("media_core_sessions", "Sessions on each media core, as it last reported", core_sessions.clone());
        let core_rx_pps = Family::<CoreLabels, FloatGauge>::default();
        registry.register("media_core_rx_packets_per_second", "RTP packets per second received by each media core, last report", core_rx_pps.clone());
        let core_tx_pps = Family::<CoreLabels, FloatGauge>::default();
        registry.register("media_core_tx_packets_per_second", "RTP packets per second sent by each media core, last report", core_tx_pps.clone());
        let core_busy = Family::<CoreLabels, FloatGauge>::default();
        registry.register("media_core_busy_ratio", "Share of its time each media core was busy, last report", core_busy.clone());
        let core_tx_packets = Family::<CoreLabels, Gauge>::default();
        registry.register("media_core_tx_packets_reported", "RTP packets sent by each media core since this control plane saw it", core_tx_packets.clone());
        Metrics { registry, http_requests, http_seconds, joins, webhooks, rooms, sessions, nodes, core_sessions, core_rx_pps, core_tx_pps, core_busy, core_tx_packets }
    }
}

/// The label of a connection kind.
pub fn via_label(via: Via) -> &'static str {
    match via {
        Via::Websocket => "ws",
        Via::Whip => "whip",
        Via::Whep => "whep",
    }
}

impl Metrics {
    /// Counts one join attempt.
    pub fn join(&self, via: Via, result: Result<(), &ApiError>) {
        let result = match result {
            Ok(()) => "ok",
            Err(e) => e.code().as_str(),
        };
        self.joins.get_or_create(&JoinLabels { via: via_label(via), result }).inc();
    }

    /// Sets the gauges from `live`, then encodes everything.
    pub fn render(&self, live: &Live) -> Result<String, std::fmt::Error> {
        self.rooms.set(live.rooms as i64);
        self.sessions.clear();
        for via in [Via::Websocket, Via::Whip, Via::Whep] {
            self.sessions.get_or_create(&ViaLabels { via: via_label(via) }).set(0);
        }
        for via in &live.sessions {
            self.sessions.get_or_create(&ViaLabels { via: via_label(*via) }).inc();
        }
        self.nodes.set(live.nodes as i64);
        for f in [&self.core_rx_pps, &self.core_tx_pps, &self.core_busy] {
            f.clear();
        }
        self.core_sessions.clear();
        self.core_tx_packets.clear();
        for c in &live.cores {
            let l = CoreLabels { node: c.node.clone(), core: c.core.to_string() };
            self.core_sessions.get_or_create(&l).set(i64::from(c.sessions));
            self.core_rx_pps.get_or_create(&l).set(c.rx_pps);
            self.core_tx_pps.get_or_create(&l).set(c.tx_pps);
            self.core_busy.get_or_create(&l).set(f64::from(c.busy_permille) / 1000.0);
            self.core_tx_packets.get_or_create(&l).set(i64::try_from(c.tx_total).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// What the gauges show, read from the state under its lock.
#[derive(Debug, Default)]
pub struct Live {
    /// Rooms.
    pub rooms: usize,
    /// One entry per session: its connection kind.
    pub sessions: Vec<Via>,
    /// Connected nodes.
    pub nodes: usize,
    /// Every core of every node.
    pub cores: Vec<CoreSample>,
}

/// One media core's last load report.
#[derive(Debug, Clone)]
pub struct CoreSample {
    /// Node id.
    pub node: String,
    /// Core index.
    pub core: usize,
    /// Sessions.
    pub sessions: u32,
    /// RTP packets per second in.
    pub rx_pps: f64,
    /// RTP packets per second out.
    pub tx_pps: f64,
    /// Busy share, thousandths.
    pub busy_permille: u16,
    /// RTP packets sent, summed over reports.
    pub tx_total: u64,
}
