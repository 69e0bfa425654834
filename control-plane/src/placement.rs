//! Room placement: pick the least-loaded core among registered media-plane nodes.

/// Load of one core as the control plane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreLoad {
    /// Node id.
    pub node: String,
    /// Core index.
    pub core: u32,
    /// Sessions the control plane placed there.
    pub assigned: u32,
    /// Sessions the node last reported.
    pub reported: u32,
    /// Of those, sessions whose media was connected (the ones the busy share is from);
    /// `None` from a node that does not say.
    pub connected: Option<u32>,
    /// Sessions the core accepts.
    pub capacity: u32,
    /// Share of time the core's thread was busy at its last report, in thousandths.
    pub busy_permille: u16,
    /// Of that, the share spent on joins and ICE/DTLS handshakes (0: the node does not say).
    pub setup_permille: u16,
    /// Busy share that the sessions placed here will cost once their media flows, from the
    /// tracks they receive and the measured cost of one forwarded track (0: not known yet).
    pub committed_permille: u32,
    /// Busy share from which the core takes no new session (1000 or more: never).
    pub busy_limit: u16,
}

impl CoreLoad {
    fn load(&self) -> u32 {
        self.assigned.max(self.reported)
    }

    /// The busy share expected once every placed session has media: the last report's
    /// forwarding share (handshakes end) plus, for each session not yet connected then
    /// (placed since, or still in ICE/DTLS), the average share of a connected one. Reports
    /// come once a second, so without this a burst of joins would all land on a core before
    /// it reports being busy.
    pub fn busy_projected(&self) -> u32 {
        let busy = u32::from(self.busy_permille.saturating_sub(self.setup_permille));
        // A node that does not say how many are connected: take all reported sessions.
        // One that says none: no connected session to average over, so the last report
        // stands alone (the committed cost covers the rest).
        let base = self.connected.unwrap_or(self.reported);
        let pending = self.assigned.saturating_sub(base);
        if base == 0 || pending == 0 {
            return busy;
        }
        busy.saturating_add((u64::from(pending) * u64::from(busy) / u64::from(base)).min(u64::from(u32::MAX)) as u32)
    }

    /// Whether one more session fits: under the session capacity, the core's thread not
    /// expected busier than the limit (a saturated core queues delay for everyone on it),
    /// and not at the limit right now either. The projection leaves handshakes out because
    /// they end; but while the core says it is at the limit, handshakes included, one more
    /// join only adds to them.
    pub fn has_room(&self) -> bool {
        let busy = self.busy_projected().max(self.committed_permille).max(u32::from(self.busy_permille));
        self.load() < self.capacity && (self.busy_limit >= 1000 || busy < u32::from(self.busy_limit))
    }
}

/// A core's cost per forwarded packet, in busy thousandths per packet/s, over its last few
/// reports: their median when the node splits out the time spent on joins and handshakes,
/// else their lowest (a burst of handshakes inflates single reports; steady forwarding does
/// not).
#[derive(Debug, Default, Clone)]
pub struct PacketCost {
    recent: std::collections::VecDeque<f64>,
    /// The node says how much of its busy share was setup work.
    split: bool,
}

impl PacketCost {
    /// Reports remembered.
    pub const WINDOW: usize = 5;
    /// Below this many forwarded packets/s a report says too little about the cost.
    pub const MIN_PPS: f64 = 100.0;

    /// Takes one load report: its busy share, of which `setup_permille` went to joins and
    /// handshakes (`None` from a node that does not say), and its forwarded packets/s.
    pub fn record(&mut self, busy_permille: u16, setup_permille: Option<u16>, tx_pps: f64) {
        if tx_pps < Self::MIN_PPS {
            return;
        }
        let forwarding = busy_permille.saturating_sub(setup_permille.unwrap_or(0));
        self.split = setup_permille.is_some();
        self.recent.push_back(f64::from(forwarding) / tx_pps);
        if self.recent.len() > Self::WINDOW {
            self.recent.pop_front();
        }
    }

    /// What forwarding one track to one subscriber costs, in busy thousandths: the cost per
    /// packet times the packets one published track brings (`pps_per_track`). Both hold
    /// while subscribers are still ramping up, unlike the busy share per session. `None`
    /// until the core has forwarded enough to tell.
    pub fn permille_per_track(&self, pps_per_track: f64) -> Option<f64> {
        let per_packet = if self.split {
            let mut sorted: Vec<f64> = self.recent.iter().copied().collect();
            sorted.sort_by(f64::total_cmp);
            *sorted.get(sorted.len() / 2)?
        } else {
            self.recent.iter().copied().reduce(f64::min)?
        };
        (pps_per_track > 0.0).then_some(per_packet * pps_per_track)
    }
}

/// Packets one published track brings into a node, as placement prices it: the highest
/// rate over the last [`TrackRate::WINDOW`]. A publisher's rate dips for a while (its
/// uplink congested, its camera muted, its own machine busy with a crowd of joins, which is
/// what the load tester shows) and then comes back; pricing the dip lets a crowd in that
/// the core cannot carry once the rate recovers.
#[derive(Debug, Default, Clone)]
pub struct TrackRate {
    recent: std::collections::VecDeque<(std::time::Instant, f64)>,
}

impl TrackRate {
    /// How long a rate is remembered.
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

    /// Takes the node's packets per published track per second, measured at `now`. Every
    /// core's report brings one; those within a report interval of the last kept sample
    /// only raise it, so the window holds about one sample per second however many cores
    /// the node has.
    pub fn record(&mut self, now: std::time::Instant, pps_per_track: f64) {
        while self.recent.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > Self::WINDOW) {
            self.recent.pop_front();
        }
        if !(pps_per_track.is_finite() && pps_per_track > 0.0) {
            return;
        }
        match self.recent.back_mut() {
            Some((t, r)) if now.saturating_duration_since(*t) < std::time::Duration::from_secs(link::LOAD_INTERVAL_SECS) => *r = r.max(pps_per_track),
            _ => self.recent.push_back((now, pps_per_track)),
        }
    }

    /// The rate to price a forwarded track at: the highest remembered, or `current` if
    /// higher (0 when nothing is known).
    pub fn priced(&self, current: f64) -> f64 {
        self.recent.iter().map(|(_, r)| *r).fold(current.max(0.0), f64::max)
    }
}

/// Seconds one load report covers: what the core measured, else the nominal interval (a
/// node that does not say, or says 0). A saturated core reports late, and dividing its
/// counts by the nominal second would overstate its packet rates.
pub fn report_secs(interval_ms: Option<u32>) -> f64 {
    match interval_ms {
        Some(ms) if ms > 0 => f64::from(ms) / 1000.0,
        _ => link::LOAD_INTERVAL_SECS as f64,
    }
}

/// The core with the lowest load that still has room, ties broken by node id then core index.
pub fn least_loaded(cores: &[CoreLoad]) -> Option<(String, u32)> {
    cores
        .iter()
        .filter(|c| c.has_room())
        .min_by(|a, b| a.load().cmp(&b.load()).then_with(|| a.node.cmp(&b.node)).then(a.core.cmp(&b.core)))
        .map(|c| (c.node.clone(), c.core))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(node: &str, core: u32, assigned: u32, reported: u32) -> CoreLoad {
        CoreLoad { node: node.into(), core, assigned, reported, connected: None, capacity: 10, busy_permille: 0, setup_permille: 0, committed_permille: 0, busy_limit: 850 }
    }

    #[test]
    fn a_busy_core_takes_no_new_session() {
        let busy = CoreLoad { busy_permille: 900, ..c("a", 0, 0, 0) };
        let idle = CoreLoad { busy_permille: 100, ..c("a", 1, 5, 5) };
        assert!(!busy.has_room());
        assert_eq!(least_loaded(&[busy.clone(), idle]), Some(("a".into(), 1)));
        assert_eq!(least_loaded(std::slice::from_ref(&busy)), None);
        // A limit of 100 % turns the check off.
        assert!(CoreLoad { busy_limit: 1000, ..busy }.has_room());
    }

    #[test]
    fn sessions_placed_since_the_last_report_count_at_the_reported_average() {
        // 100 sessions reported at 70 %: 0.7 % each. 20 more placed since: 84 %, still room.
        let core = CoreLoad { capacity: 1000, busy_permille: 700, ..c("a", 0, 120, 100) };
        assert_eq!(core.busy_projected(), 840);
        assert!(core.has_room());
        // 22 more: 85.4 %, past the limit before the core has said so.
        let core = CoreLoad { assigned: 122, ..core };
        assert_eq!(core.busy_projected(), 854);
        assert!(!core.has_room());
        // Sessions that left since do not make it look idler; an empty report projects nothing.
        assert_eq!(CoreLoad { assigned: 50, ..core.clone() }.busy_projected(), 700);
        assert_eq!(CoreLoad { reported: 0, ..core.clone() }.busy_projected(), 700);
        assert!(CoreLoad { busy_limit: 1000, ..core }.has_room());
    }

    #[test]
    fn sessions_still_connecting_count_at_the_connected_average() {
        // 100 sessions reported, only 50 with media, at 40 %: 0.8 % each. All 100 placed
        // will cost 80 %; 10 more placed since make 88 %, past the limit.
        let core = CoreLoad { capacity: 1000, busy_permille: 400, connected: Some(50), ..c("a", 0, 100, 100) };
        assert_eq!(core.busy_projected(), 800);
        assert!(core.has_room());
        let core = CoreLoad { assigned: 110, ..core };
        assert_eq!(core.busy_projected(), 880);
        assert!(!core.has_room());
    }

    #[test]
    fn a_node_that_says_none_are_connected_projects_nothing_per_session() {
        // 100 sessions all still in ICE/DTLS at 30 %: handshakes, not a per-session share
        // to multiply. One that does not say is averaged over all it reported.
        let core = CoreLoad { capacity: 1000, busy_permille: 300, connected: Some(0), ..c("a", 0, 150, 100) };
        assert_eq!(core.busy_projected(), 300);
        assert_eq!(CoreLoad { connected: None, ..core }.busy_projected(), 450);
    }

    #[test]
    fn rates_are_read_over_the_interval_the_core_measured() {
        assert_eq!(report_secs(Some(1500)), 1.5);
        assert_eq!(report_secs(None), link::LOAD_INTERVAL_SECS as f64);
        assert_eq!(report_secs(Some(0)), link::LOAD_INTERVAL_SECS as f64);
    }

    #[test]
    fn committed_forwarding_counts_before_the_media_flows() {
        // 50 % busy forwarding 10,000 pkt/s: 0.05 ‰ per packet/s. Tracks of 100 pkt/s:
        // 5 ‰ per forwarded track.
        let mut cost = PacketCost::default();
        assert_eq!(cost.permille_per_track(100.0), None);
        cost.record(500, None, 10_000.0);
        assert!((cost.permille_per_track(100.0).unwrap() - 5.0).abs() < 1e-9);
        assert_eq!(cost.permille_per_track(0.0), None);
        // A report during a burst of handshakes (same forwarding, twice the busy share) and
        // one with almost nothing forwarded change nothing; the calm one stands.
        cost.record(1000, None, 10_000.0);
        cost.record(300, None, 10.0);
        assert!((cost.permille_per_track(100.0).unwrap() - 5.0).abs() < 1e-9);
        // It is forgotten after WINDOW newer reports.
        for _ in 0..PacketCost::WINDOW {
            cost.record(800, None, 10_000.0);
        }
        assert!((cost.permille_per_track(100.0).unwrap() - 8.0).abs() < 1e-9);
        // The report says 20 % (most sessions still connecting), but 180 forwarded tracks
        // at 5 ‰ are committed: 90 %, past the limit.
        let core = CoreLoad { capacity: 1000, busy_permille: 200, connected: Some(200), committed_permille: 900, ..c("a", 0, 200, 200) };
        assert!(!core.has_room());
        assert!(CoreLoad { committed_permille: 800, ..core }.has_room());
    }

    #[test]
    fn handshake_time_the_node_reports_is_not_charged_to_forwarding() {
        // 50 % busy, of which 20 % handshakes, forwarding 10,000 pkt/s: 0.03 ‰ per packet/s.
        let mut cost = PacketCost::default();
        cost.record(500, Some(200), 10_000.0);
        assert!((cost.permille_per_track(100.0).unwrap() - 3.0).abs() < 1e-9);
        // With the split known, the middle report stands: one low outlier does not make
        // every later session look cheap, as the lowest would.
        cost.record(200, Some(0), 10_000.0);
        cost.record(400, Some(100), 10_000.0);
        assert!((cost.permille_per_track(100.0).unwrap() - 3.0).abs() < 1e-9);
        // The projection starts from the forwarding share: handshakes end once connected.
        // 60 % busy, 20 % of it handshakes, 100 connected, 150 placed: 40 % + 50 × 0.4 %.
        let core = CoreLoad { capacity: 1000, busy_permille: 600, setup_permille: 200, connected: Some(100), ..c("a", 0, 150, 120) };
        assert_eq!(core.busy_projected(), 600);
        assert!(core.has_room());
        assert_eq!(CoreLoad { setup_permille: 0, ..core }.busy_projected(), 900);
    }

    #[test]
    fn a_core_at_the_limit_with_handshakes_takes_no_join_until_it_reports_less() {
        // 90 % busy, 30 % of it handshakes, all placed sessions connected: forwarding will
        // cost 60 %, but right now the core is past the limit, and a join adds handshakes.
        let core = CoreLoad { capacity: 1000, busy_permille: 900, setup_permille: 300, connected: Some(100), ..c("a", 0, 100, 100) };
        assert_eq!(core.busy_projected(), 600);
        assert!(!core.has_room());
        // Once the handshakes are over and it says so, it takes joins again.
        assert!(CoreLoad { busy_permille: 620, setup_permille: 20, ..core.clone() }.has_room());
        assert!(CoreLoad { busy_limit: 1000, ..core }.has_room());
    }

    #[test]
    fn a_track_is_priced_at_its_rate_before_a_dip_until_the_window_forgets_it() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        let mut rate = TrackRate::default();
        assert_eq!(rate.priced(0.0), 0.0);
        // 150 pkt/s per track, then a crowd joins and the publishers' rate reads 50-80.
        rate.record(at(0), 150.0);
        rate.record(at(1), 80.0);
        rate.record(at(2), 50.0);
        assert_eq!(rate.priced(50.0), 150.0);
        // A higher current rate wins at once; nonsense is not remembered.
        assert_eq!(rate.priced(170.0), 170.0);
        rate.record(at(3), f64::NAN);
        rate.record(at(3), -1.0);
        assert_eq!(rate.priced(0.0), 150.0);
        // Past the window, the dip is the new rate (the publishers really slowed down).
        rate.record(at(11), 60.0);
        assert_eq!(rate.priced(60.0), 80.0);
        rate.record(at(13), 60.0);
        assert_eq!(rate.priced(60.0), 60.0);
        // Other cores' reports in the same second raise that second's sample, no more.
        let later = at(13) + std::time::Duration::from_millis(400);
        rate.record(later, 90.0);
        rate.record(later, 70.0);
        assert_eq!(rate.priced(0.0), 90.0);
        assert_eq!(rate.recent.len(), 2);
    }

    #[test]
    fn picks_least_loaded_and_skips_full() {
        let cores = [c("a", 0, 3, 0), c("a", 1, 1, 2), c("b", 0, 10, 0), c("b", 1, 0, 1)];
        assert_eq!(least_loaded(&cores), Some(("b".into(), 1)));
        assert_eq!(least_loaded(&[c("a", 0, 10, 0)]), None);
        assert_eq!(least_loaded(&[]), None);
    }
}
