//! The process's open-files limit, which bounds how many connections it can hold.

/// Raises the soft open-files limit to the hard limit, as coturn and nginx do at start, and
/// returns the soft limit now in force (1024 if it cannot be read).
pub fn raise() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024)
        }
    }
}
