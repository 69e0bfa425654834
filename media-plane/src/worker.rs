//! One core's event loop: a plain thread pinned to its CPU that owns the core's socket and
//! [`Core`], with no async runtime on the data path.
//!
//! Each turn: apply control commands, run due timers, hand every produced datagram to
//! [`BatchIo`] (one io_uring submission per turn; GSO per destination), then wait for
//! datagrams, a command (the [`Waker`]) or the next deadline. At most [`WORK_LIMIT`]
//! datagrams are processed per turn, so a receive burst cannot starve timers or commands.

use std::sync::Arc;
use std::time::{Duration, Instant};

use link::{Command, Event as LinkEvent};
use percore::batch::{BatchIo, Outgoing, Waker};
use percore::Backend;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::cross::CrossMsg;
use crate::sfu::{Core, CoreConfig};

/// Interval between two load reports of a core.
pub const LOAD_INTERVAL: Duration = Duration::from_secs(link::LOAD_INTERVAL_SECS);

/// Most datagrams handled in one turn before timers and commands get a look.
pub const WORK_LIMIT: usize = 256;

/// The channels between the cores of a node: core *i* reads `rx[i]`; anyone may send to
/// `tx[i]` and then wake `wakers[i]`.
#[derive(Clone)]
pub struct Mesh {
    tx: Vec<crossbeam_channel::Sender<CrossMsg>>,
    rx: Vec<crossbeam_channel::Receiver<CrossMsg>>,
    wakers: Vec<Arc<Waker>>,
}

impl Mesh {
    /// Channels and wakers for `n` cores.
    pub fn new(n: usize) -> std::io::Result<Self> {
        let (tx, rx) = (0..n).map(|_| crossbeam_channel::unbounded()).unzip();
        let wakers = (0..n).map(|_| Waker::new()).collect::<std::io::Result<_>>()?;
        Ok(Self { tx, rx, wakers })
    }
}

/// Most cross-core messages applied in one turn.
pub const CROSS_LIMIT: usize = 1024;

/// Sends commands to one core and wakes it.
#[derive(Clone)]
pub struct CoreInbox {
    tx: UnboundedSender<Command>,
    waker: Arc<Waker>,
}

impl CoreInbox {
    /// Queues a command and wakes the core; false if the core has stopped.
    pub fn send(&self, cmd: Command) -> bool {
        let ok = self.tx.send(cmd).is_ok();
        self.waker.wake();
        ok
    }
}

/// Everything a core thread needs.
pub struct CoreSetup {
    /// State machine configuration.
    pub config: CoreConfig,
    /// The core's bound UDP socket.
    pub socket: std::net::UdpSocket,
    /// CPU to pin the thread to.
    pub cpu: usize,
    /// Events to the control link.
    pub events: UnboundedSender<LinkEvent>,
    /// Skip io_uring and use recvmmsg/sendmmsg on epoll.
    pub force_epoll: bool,
    /// Channels to and from the node's other cores.
    pub mesh: Mesh,
}

/// Starts the core on its own pinned thread; returns its inbox and the I/O backend in use.
/// The ring is created on the core's thread (io_uring with SINGLE_ISSUER belongs to it).
pub fn spawn(setup: CoreSetup) -> std::io::Result<(std::thread::JoinHandle<()>, CoreInbox, Backend)> {
    let CoreSetup { config, socket, cpu, events, force_epoll, mesh } = setup;
    let waker = mesh.wakers.get(config.index as usize).cloned().ok_or_else(|| std::io::Error::other("core index outside the mesh"))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let name = format!("core-{}", config.index);
    let w = waker.clone();
    let handle = std::thread::Builder::new().name(name).spawn(move || {
        if !percore::pin(cpu) {
            tracing::warn!(cpu, "could not pin the core thread");
        }
        match BatchIo::new(socket, w, force_epoll) {
            Ok((io, backend)) => {
                let _ = ready_tx.send(Ok(backend));
                run(config, io, rx, events, mesh);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    })?;
    let backend = ready_rx.recv().map_err(|_| std::io::Error::other("core thread died while starting"))??;
    Ok((handle, CoreInbox { tx, waker }, backend))
}

/// The core's loop; returns when the command channel closes.
pub fn run(config: CoreConfig, mut io: BatchIo, mut commands: UnboundedReceiver<Command>, events: UnboundedSender<LinkEvent>, mesh: Mesh) {
    let index = config.index;
    let Some(cross_rx) = mesh.rx.get(index as usize).cloned() else { return };
    let mut to_wake = vec![false; mesh.tx.len()];
    let mut core = Core::new(config);
    let mut out: Vec<Outgoing> = Vec::with_capacity(1024);
    let mut last_load = Instant::now();
    let mut since = core.counters();
    loop {
        let now = Instant::now();
        loop {
            match commands.try_recv() {
                Ok(cmd) => core.handle_command(now, cmd),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    tracing::info!(core = index, "command channel closed; core stops");
                    return;
                }
            }
        }
        for msg in cross_rx.try_iter().take(CROSS_LIMIT) {
            core.handle_cross(now, msg);
        }
        if core.next_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
        }
        if now >= last_load + LOAD_INTERVAL {
            let _ = events.send(core.load_event(since));
            since = core.counters();
            last_load = now;
        }
        out.extend(core.take_transmits().map(|t| Outgoing { destination: t.destination, contents: t.contents }));
        for e in core.take_events() {
            let _ = events.send(e);
        }
        flush_cross(&mut core, &mesh, &mut to_wake);
        let deadline = core.next_timeout().unwrap_or(now + LOAD_INTERVAL).min(last_load + LOAD_INTERVAL);
        // Messages already waiting from other cores: do not sleep on them.
        let deadline = if cross_rx.is_empty() { deadline } else { now };
        let r = io.turn(&mut out, Some(deadline), WORK_LIMIT, &mut |from, data| {
            core.handle_datagram(Instant::now(), from, data);
        });
        if let Err(e) = r {
            tracing::warn!(core = index, error = %e, "socket turn failed");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Sends what the core produced for other cores and wakes each receiving core once.
fn flush_cross(core: &mut Core, mesh: &Mesh, to_wake: &mut [bool]) {
    for (c, msg) in core.take_cross() {
        if let Some(tx) = mesh.tx.get(c as usize) {
            let _ = tx.send(msg);
            to_wake[c as usize] = true;
        }
    }
    for (c, wake) in to_wake.iter_mut().enumerate() {
        if std::mem::take(wake) {
            mesh.wakers[c].wake();
        }
    }
}
