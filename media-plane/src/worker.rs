//! One core's event loop: owns the core's socket and [`Core`], pinned to its CPU.
//!
//! Three tasks share the core state on one thread (no locks): the receive loop, the
//! command loop (control-link commands arriving over a channel) and the timer loop. Each
//! turn ends with a flush of the datagrams and events the core produced.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};
use link::{Command, Event as LinkEvent};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

use percore::{Backend, CoreTask, Driver};
use crate::sfu::{Core, CoreConfig, Transmit};

/// Interval between two load reports of a core.
pub const LOAD_INTERVAL: Duration = Duration::from_secs(link::LOAD_INTERVAL_SECS);

/// Everything a core thread needs.
pub struct CoreSetup {
    /// State machine configuration.
    pub config: CoreConfig,
    /// The core's bound UDP socket.
    pub socket: std::net::UdpSocket,
    /// CPU to pin the thread to.
    pub cpu: usize,
    /// Commands for this core.
    pub commands: UnboundedReceiver<Command>,
    /// Events to the control link.
    pub events: UnboundedSender<LinkEvent>,
    /// Skip io_uring and use epoll.
    pub force_epoll: bool,
}

struct SfuTask {
    config: CoreConfig,
    socket: std::net::UdpSocket,
    commands: UnboundedReceiver<Command>,
    events: UnboundedSender<LinkEvent>,
}

impl CoreTask for SfuTask {
    fn run<D: Driver>(self) -> impl std::future::Future<Output = ()> {
        run::<D>(self.config, self.socket, self.commands, self.events)
    }
}

/// Starts the core on its own pinned thread and reports the backend it runs on.
pub fn spawn(setup: CoreSetup) -> std::io::Result<(std::thread::JoinHandle<()>, Backend)> {
    let CoreSetup { config, socket, cpu, commands, events, force_epoll } = setup;
    let name = format!("core-{}", config.index);
    percore::spawn(name, cpu, force_epoll, SfuTask { config, socket, commands, events })
}

struct Shared<D: Driver> {
    core: RefCell<Core>,
    socket: D::Socket,
    events: UnboundedSender<LinkEvent>,
    wake_timer: Notify,
    armed: Cell<Option<Instant>>,
}

impl<D: Driver> Shared<D> {
    /// Sends what the core produced and re-arms the timer if the deadline moved earlier.
    async fn flush(&self, batch: &mut Vec<Transmit>) {
        {
            let mut core = self.core.borrow_mut();
            batch.extend(core.take_transmits());
            for e in core.take_events() {
                let _ = self.events.send(e);
            }
            let next = core.next_timeout();
            if let (Some(n), armed) = (next, self.armed.get()) {
                if armed.is_none_or(|a| n < a) {
                    self.wake_timer.notify_one();
                }
            }
        }
        for t in batch.drain(..) {
            if let Err(e) = D::send_to(&self.socket, &t.contents, t.destination).await {
                tracing::debug!(dest = %t.destination, error = %e, "send failed");
            }
        }
    }
}

/// The core's loop; returns when the command channel closes.
pub async fn run<D: Driver>(
    config: CoreConfig,
    socket: std::net::UdpSocket,
    mut commands: UnboundedReceiver<Command>,
    events: UnboundedSender<LinkEvent>,
) {
    let index = config.index;
    let socket = match D::socket(socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(core = index, error = %e, "cannot use the core's socket");
            return;
        }
    };
    let shared = Rc::new(Shared::<D> {
        core: RefCell::new(Core::new(config)),
        socket,
        events,
        wake_timer: Notify::new(),
        armed: Cell::new(None),
    });

    let rx = shared.clone();
    D::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut batch = Vec::new();
        loop {
            match D::recv_from(&rx.socket, &mut buf).await {
                Ok((n, from)) => {
                    rx.core.borrow_mut().handle_datagram(Instant::now(), from, &buf[..n]);
                    rx.flush(&mut batch).await;
                }
                Err(e) => {
                    tracing::debug!(core = index, error = %e, "recv failed");
                    D::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    });

    let timer = shared.clone();
    D::spawn(async move {
        let mut batch = Vec::new();
        let mut last_load = Instant::now();
        let mut since = timer.core.borrow().counters();
        loop {
            let now = Instant::now();
            let deadline = timer.core.borrow().next_timeout().unwrap_or(now + LOAD_INTERVAL).min(last_load + LOAD_INTERVAL);
            timer.armed.set(Some(deadline));
            if deadline > now {
                let sleep = std::pin::pin!(D::sleep(deadline - now));
                let woken = std::pin::pin!(timer.wake_timer.notified());
                if let Either::Right(_) = select(sleep, woken).await {
                    continue;
                }
            }
            let now = Instant::now();
            timer.core.borrow_mut().handle_timeout(now);
            if now >= last_load + LOAD_INTERVAL {
                let core = timer.core.borrow();
                let _ = timer.events.send(core.load_event(since));
                since = core.counters();
                last_load = now;
            }
            timer.flush(&mut batch).await;
        }
    });

    let mut batch = Vec::new();
    while let Some(cmd) = commands.recv().await {
        shared.core.borrow_mut().handle_command(Instant::now(), cmd);
        shared.flush(&mut batch).await;
    }
    tracing::info!(core = index, "command channel closed; core stops");
}
