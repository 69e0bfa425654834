//! Stopping the children of `local` mode: each is sent SIGTERM and given [`GRACE`] to exit on
//! its own; only one that outlives it is killed.

use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::Child;

/// How long a child may take to stop after SIGTERM before it is killed.
pub const GRACE: Duration = Duration::from_secs(10);

/// How a child ended.
#[derive(Debug)]
pub enum Ended {
    /// It exited by itself (before or after SIGTERM) with this status.
    Exited(ExitStatus),
    /// It outlived the grace period and was killed.
    Killed,
    /// Its status could not be read.
    Unknown(std::io::Error),
}

/// Sends `child` SIGTERM unless it has exited already, and waits up to `grace` for it.
pub async fn stop(child: &mut Child, grace: Duration) -> Ended {
    match child.try_wait() {
        Ok(Some(status)) => return Ended::Exited(status),
        Ok(None) => {}
        Err(e) => return Ended::Unknown(e),
    }
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill only sends a signal, to our own child, which has not been reaped (the
        // pid is still its own).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => Ended::Exited(status),
        Ok(Err(e)) => Ended::Unknown(e),
        Err(_) => {
            let _ = child.kill().await;
            Ended::Killed
        }
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exited(status) => write!(f, "exited ({status})"),
            Ended::Killed => write!(f, "killed after {} s", GRACE.as_secs()),
            Ended::Unknown(e) => write!(f, "ended ({e})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Child {
        tokio::process::Command::new("sh").args(["-c", script]).kill_on_drop(true).spawn().expect("sh runs")
    }

    #[tokio::test]
    async fn a_child_that_handles_sigterm_exits_by_itself() {
        let mut child = sh("trap 'exit 0' TERM; while :; do sleep 0.05; done");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ended = stop(&mut child, Duration::from_secs(5)).await;
        assert!(matches!(ended, Ended::Exited(s) if s.success()), "{ended}");
    }

    #[tokio::test]
    async fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
        let mut child = sh("trap '' TERM; while :; do sleep 0.05; done");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ended = stop(&mut child, Duration::from_millis(500)).await;
        assert!(matches!(ended, Ended::Killed), "{ended}");
    }

    #[tokio::test]
    async fn a_child_that_already_exited_is_only_reported() {
        let mut child = sh("exit 3");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ended = stop(&mut child, Duration::from_secs(1)).await;
        assert!(matches!(ended, Ended::Exited(s) if s.code() == Some(3)), "{ended}");
    }
}
