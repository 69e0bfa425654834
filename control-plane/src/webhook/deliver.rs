//! Delivery: each configured URL has its own bounded queue and one task that POSTs its
//! events in order, retrying a failed one as [`retry`](super::retry) says. Emitting never
//! waits: when a receiver falls so far behind that its queue is full, new events for it are
//! dropped and counted.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use signaling::{ParticipantView, TrackInfo};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::mpsc;

use super::event::{Event, Kind, RoomInfo};
use super::{retry, sign};
use crate::metrics::OutcomeLabels;
use crate::secret;
use crate::token::unix_now;

/// Events waiting per URL.
pub const QUEUE: usize = 4096;

/// How long one POST may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// One serialized event, shared by the queues of every URL.
#[derive(Debug)]
struct Delivery {
    id: String,
    body: Vec<u8>,
}

/// What happened to events, per receiver, over the process's life (a metric).
pub type Counts = Family<OutcomeLabels, Counter>;

/// An event a receiver accepted (2xx).
pub const DELIVERED: OutcomeLabels = OutcomeLabels { outcome: "delivered" };
/// An event given up after every try failed.
pub const FAILED: OutcomeLabels = OutcomeLabels { outcome: "failed" };
/// An event dropped because a receiver's queue was full.
pub const DROPPED: OutcomeLabels = OutcomeLabels { outcome: "dropped" };

/// Where events go; cheap to emit into, from under the state lock.
#[derive(Debug, Default)]
pub struct Notifier {
    queues: Vec<mpsc::Sender<Arc<Delivery>>>,
    counts: Counts,
}

impl Notifier {
    /// A notifier that posts to `urls`, signing with `secret` and counting outcomes in
    /// `counts`; with no URL, or outside a Tokio runtime, one that drops everything.
    pub fn start(urls: &[Url], secret: &str, counts: Counts) -> Notifier {
        if urls.is_empty() {
            return Notifier { queues: Vec::new(), counts };
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("webhooks need a Tokio runtime; none will be sent");
            return Notifier { queues: Vec::new(), counts };
        };
        let client = match reqwest::Client::builder().timeout(TIMEOUT).redirect(reqwest::redirect::Policy::none()).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhook HTTP client; none will be sent");
                return Notifier { queues: Vec::new(), counts };
            }
        };
        let queues = urls
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let receiver = Receiver { client: client.clone(), url: url.clone(), secret: secret.to_string(), counts: counts.clone() };
                runtime.spawn(receiver.run(rx));
                tx
            })
            .collect();
        Notifier { queues, counts }
    }

    /// Whether events go anywhere.
    pub fn is_on(&self) -> bool {
        !self.queues.is_empty()
    }

    /// What happened to the events so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Queues one event for every URL, without waiting.
    pub fn emit(&self, event: Kind, room: RoomInfo, participant: Option<ParticipantView>, track: Option<TrackInfo>) {
        if self.queues.is_empty() {
            return;
        }
        let ev = Event { id: format!("EV_{}", secret::random(16)), event, created_at: unix_now(), room, participant, track };
        let body = match serde_json::to_vec(&ev) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "webhook event not serialized");
                return;
            }
        };
        let delivery = Arc::new(Delivery { id: ev.id, body });
        for q in &self.queues {
            if q.try_send(delivery.clone()).is_err() {
                self.counts.get_or_create(&DROPPED).inc();
                tracing::warn!(event = ?event, "webhook queue full: event dropped");
            }
        }
    }
}

/// One URL's sender.
struct Receiver {
    client: reqwest::Client,
    url: Url,
    secret: String,
    counts: Counts,
}

impl Receiver {
    /// Posts each queued event in order until the notifier is gone.
    async fn run(self, mut rx: mpsc::Receiver<Arc<Delivery>>) {
        while let Some(d) = rx.recv().await {
            let mut attempt = 1;
            loop {
                match self.post(&d).await {
                    Ok(()) => {
                        self.counts.get_or_create(&DELIVERED).inc();
                        break;
                    }
                    Err(why) => match retry::after(attempt) {
                        Some(wait) => {
                            tracing::debug!(host = ?self.url.host_str(), attempt, %why, "webhook failed; trying again");
                            tokio::time::sleep(wait).await;
                            attempt += 1;
                        }
                        None => {
                            self.counts.get_or_create(&FAILED).inc();
                            tracing::warn!(host = ?self.url.host_str(), id = %d.id, attempts = attempt, %why, "webhook given up");
                            break;
                        }
                    },
                }
            }
        }
    }

    /// One try, signed at the time of sending.
    async fn post(&self, d: &Delivery) -> Result<(), String> {
        let now = unix_now();
        let res = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(sign::ID_HEADER, &d.id)
            .header(sign::TIMESTAMP_HEADER, now.to_string())
            .header(sign::SIGNATURE_HEADER, sign::signature(&self.secret, &d.id, now, &d.body))
            .body(d.body.clone())
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(format!("status {}", res.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomInfo {
        RoomInfo { name: "r".into(), created_at: 1, num_participants: 1 }
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_costs_dropped_events_not_waiting() {
        // Accepts connections and never answers: each POST waits for its timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/hook", listener.local_addr().unwrap())).unwrap();
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let hooks = Notifier::start(&[url], "secret-secret-secret-secret-secret", Counts::default());
        assert!(hooks.is_on());
        let extra = 1000;
        for _ in 0..QUEUE + extra {
            hooks.emit(Kind::ParticipantJoined, room(), None, None);
        }
        // One event may have left the queue for the stuck POST; the rest of the overflow is dropped.
        let dropped = hooks.counts().get_or_create(&DROPPED).get();
        assert!((extra as u64 - 1..=extra as u64).contains(&dropped), "dropped {dropped}");
        assert_eq!(hooks.counts().get_or_create(&DELIVERED).get(), 0);
    }

    #[test]
    fn with_no_url_nothing_is_queued() {
        let hooks = Notifier::start(&[], "s", Counts::default());
        assert!(!hooks.is_on());
        hooks.emit(Kind::RoomStarted, room(), None, None);
        assert_eq!(hooks.counts().get_or_create(&DROPPED).get(), 0);
    }
}
