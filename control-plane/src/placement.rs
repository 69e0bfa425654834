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
    /// Sessions the core accepts.
    pub capacity: u32,
    /// Share of time the core's thread was busy at its last report, in thousandths.
    pub busy_permille: u16,
    /// Busy share from which the core takes no new session (1000 or more: never).
    pub busy_limit: u16,
}

impl CoreLoad {
    fn load(&self) -> u32 {
        self.assigned.max(self.reported)
    }

    /// Whether one more session fits: under the session capacity, and the core's thread
    /// not busier than the limit (a saturated core queues delay for everyone on it).
    pub fn has_room(&self) -> bool {
        self.load() < self.capacity && (self.busy_limit >= 1000 || self.busy_permille < self.busy_limit)
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
        CoreLoad { node: node.into(), core, assigned, reported, capacity: 10, busy_permille: 0, busy_limit: 850 }
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
    fn picks_least_loaded_and_skips_full() {
        let cores = [c("a", 0, 3, 0), c("a", 1, 1, 2), c("b", 0, 10, 0), c("b", 1, 0, 1)];
        assert_eq!(least_loaded(&cores), Some(("b".into(), 1)));
        assert_eq!(least_loaded(&[c("a", 0, 10, 0)]), None);
        assert_eq!(least_loaded(&[]), None);
    }
}
