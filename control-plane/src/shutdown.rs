//! Stopping the control plane: every signaling connection is told to reconnect (WebSocket
//! close code [`RECONNECT`], "Service Restart") and gets a moment to send it. Sessions are not
//! removed: media keeps flowing while the control plane is away.

use std::time::Duration;

use tokio::sync::watch;

/// The close code that tells a client to reconnect: 1012, Service Restart (RFC 6455 registry).
pub const RECONNECT: u16 = 1012;

/// The longest the control plane waits for its connections to say goodbye.
pub const DRAIN: Duration = Duration::from_secs(2);

/// The switch that starts a stop; each connection holds a [`Watcher`].
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { tx: watch::Sender::new(false) }
    }
}

impl Shutdown {
    /// A watcher for one connection; it counts as open until dropped.
    pub fn watcher(&self) -> Watcher {
        Watcher(self.tx.subscribe())
    }

    /// Tells every watcher to close, then waits until all are dropped or `within` passes;
    /// returns how many were still open.
    pub async fn stop(&self, within: Duration) -> usize {
        self.tx.send_replace(true);
        let deadline = tokio::time::Instant::now() + within;
        while self.tx.receiver_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.tx.receiver_count()
    }
}

/// One connection's view of the switch.
#[derive(Debug)]
pub struct Watcher(watch::Receiver<bool>);

impl Watcher {
    /// Resolves once the stop has begun (never, if the switch is gone).
    pub async fn begun(&mut self) {
        if self.0.wait_for(|stopping| *stopping).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_wakes_every_watcher_and_waits_for_them_to_go() {
        let shutdown = std::sync::Arc::new(Shutdown::default());
        let mut a = shutdown.watcher();
        let mut b = shutdown.watcher();
        let conn = tokio::spawn(async move {
            a.begun().await;
            // Saying goodbye takes a moment.
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        let s = shutdown.clone();
        let stopping = tokio::spawn(async move { s.stop(Duration::from_secs(5)).await });
        b.begun().await;
        drop(b);
        conn.await.expect("the connection ends");
        assert_eq!(stopping.await.expect("stop returns"), 0, "all gone within the drain");
    }

    #[tokio::test]
    async fn a_connection_that_hangs_is_left_after_the_drain() {
        let shutdown = Shutdown::default();
        let _stuck = shutdown.watcher();
        let within = Duration::from_millis(200);
        let started = tokio::time::Instant::now();
        assert_eq!(shutdown.stop(within).await, 1);
        assert!(started.elapsed() >= within);
    }
}
