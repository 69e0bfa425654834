//! The signals that ask a process to stop: SIGINT (Ctrl-C) and SIGTERM (service managers,
//! `kill`, a launcher forwarding its own).

use std::fmt;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT.
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
        })
    }
}

/// Resolves when SIGINT or SIGTERM arrives. Watching starts at the first poll; a signal that
/// cannot be watched (never on Linux) is logged and only the other one counts.
pub async fn requested() -> Stop {
    let watch = |kind| match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, ?kind, "cannot watch a stop signal");
            None
        }
    };
    let (mut int, mut term) = (watch(SignalKind::interrupt()), watch(SignalKind::terminate()));
    tokio::select! {
        _ = next(int.as_mut()) => Stop::Interrupt,
        _ = next(term.as_mut()) => Stop::Terminate,
    }
}

/// The next delivery of `signal`, or never when it is not watched.
async fn next(signal: Option<&mut Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sigterm_to_this_process_is_seen_as_terminate() {
        let waiting = tokio::spawn(requested());
        // Let the task install its handlers before the signal is raised.
        for _ in 0..50 {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // SAFETY: raise only sends a signal to this process, whose handler tokio installed.
        unsafe { libc::raise(libc::SIGTERM) };
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert!(matches!(got, Ok(Ok(Stop::Terminate))), "{got:?}");
    }
}
