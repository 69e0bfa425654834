//! One core's event loop: a plain thread pinned to its CPU that owns the core's socket and
//! [`Core`], with no async runtime on the data path.
//!
//! Each turn: apply control commands, run due timers, hand every produced datagram to
//! [`BatchIo`] (one io_uring submission per turn; GSO per destination), then wait for
//! datagrams, a command (the [`Waker`]) or the next deadline. At most [`WORK_LIMIT`]
//! datagrams are processed per turn, so a receive burst cannot starve timers or commands.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use link::{Command, Event as LinkEvent, JoinError, LeaveReason};
use percore::batch::{BatchIo, Outgoing, Shed, Waker};
use percore::Backend;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::metrics::{CoreMetrics, Tally};
use crate::sfu::CrossMsg;
use crate::sfu::{Core, CoreConfig, Handled};

/// Default interval between two load reports of a core.
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

/// How a core reports: how often, and into which metrics.
#[derive(Debug, Clone)]
pub struct Reporting {
    /// Interval between two load reports.
    pub interval: Duration,
    /// The core's metrics.
    pub metrics: CoreMetrics,
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
    /// Drop media datagrams that waited longer than this in the kernel (overload).
    pub shed_after: Option<Duration>,
    /// Interval between two load reports ([`LOAD_INTERVAL`] by default).
    pub load_interval: Duration,
    /// The core's metrics, added to at each load report.
    pub metrics: CoreMetrics,
}

/// Starts the core on its own pinned thread; returns its inbox and the I/O backend in use.
/// The ring is created on the core's thread (io_uring with SINGLE_ISSUER belongs to it).
pub fn spawn(setup: CoreSetup) -> std::io::Result<(std::thread::JoinHandle<()>, CoreInbox, Backend)> {
    let CoreSetup { config, socket, cpu, events, force_epoll, mesh, shed_after, load_interval, metrics } = setup;
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
            Ok((mut io, backend)) => {
                if let Some(max_age) = shed_after {
                    if let Err(e) = io.set_shed(Shed { max_age, sheddable: is_rtp }) {
                        tracing::warn!(error = %e, "no receive timestamps: overload shedding is off");
                    }
                }
                let _ = ready_tx.send(Ok(backend));
                run(config, io, rx, events, mesh, Reporting { interval: load_interval, metrics });
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
///
/// A panic inside the core's state machine does not end the thread: it is logged, every
/// participant session of the core ends with [`LeaveReason::CoreFailed`] (the control plane
/// tells their clients), the other cores drop what they mirrored of it, and the core starts
/// again empty on the same socket.
pub fn run(config: CoreConfig, mut io: BatchIo, mut commands: UnboundedReceiver<Command>, events: UnboundedSender<LinkEvent>, mesh: Mesh, reporting: Reporting) {
    let Reporting { interval: load_interval, metrics } = reporting;
    let mut tally = Tally::default();
    let index = config.index;
    let Some(cross_rx) = mesh.rx.get(index as usize).cloned() else { return };
    let mut to_wake = vec![false; mesh.tx.len()];
    let mut core = Core::new(config.clone());
    let mut out: Vec<Outgoing> = Vec::with_capacity(1024);
    let mut last_load = Instant::now();
    let mut since = core.counters();
    let mut last_shed_log = Instant::now() - Duration::from_secs(60);
    let mut last_cpu = percore::thread_cpu();
    // Time spent on joins and on datagrams of sessions still in ICE/DTLS since the last report.
    let mut setup = Duration::ZERO;
    // The join being taken, so that a panic while taking it fails it at once rather than
    // leaving the control plane to time out.
    let mut joining: Option<u64> = None;
    loop {
        let now = Instant::now();
        let stepped = catch_unwind(AssertUnwindSafe(|| {
            loop {
                match commands.try_recv() {
                    Ok(cmd) => {
                        let at = Instant::now();
                        joining = if let Command::Join { req, .. } = &cmd { Some(*req) } else { None };
                        core.handle_command(now, cmd);
                        joining = None;
                        setup += at.elapsed();
                    }
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return false,
                }
            }
            for msg in cross_rx.try_iter().take(CROSS_LIMIT) {
                core.handle_cross(now, msg);
            }
            if core.next_timeout().is_some_and(|t| t <= now) {
                core.handle_timeout(now);
            }
            if now >= last_load + load_interval {
                let cpu = percore::thread_cpu();
                let busy = busy_permille(cpu.saturating_sub(last_cpu), now - last_load);
                let load = core.load_event(since, now - last_load, busy, busy_permille(std::mem::take(&mut setup), now - last_load));
                if let LinkEvent::Load { sessions, connected, .. } = &load {
                    metrics.report(std::mem::take(&mut tally), core.counters(), since, cpu.saturating_sub(last_cpu), *sessions, connected.unwrap_or(0));
                }
                let _ = events.send(load);
                since = core.counters();
                last_load = now;
                last_cpu = cpu;
            }
            out.extend(core.take_transmits().map(|t| Outgoing { destination: t.destination, contents: t.contents }));
            for e in core.take_events() {
                let _ = events.send(e);
            }
            flush_cross(&mut core, &mesh, &mut to_wake);
            true
        }));
        match stepped {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(core = index, "command channel closed; core stops");
                return;
            }
            Err(panic) => {
                if let Some(req) = joining.take() {
                    let _ = events.send(LinkEvent::JoinFailed { req, error: JoinError::CoreFailed(index) });
                }
                core = restart(core, &config, panic, &events, &mesh);
                metrics.restarted();
                since = core.counters();
                out.clear();
                continue;
            }
        }
        let deadline = core.next_timeout().unwrap_or(now + load_interval).min(last_load + load_interval);
        // Messages already waiting from other cores: do not sleep on them.
        let deadline = if cross_rx.is_empty() { deadline } else { now };
        // A panic on a datagram is caught here, so that it never unwinds through the ring.
        let mut failed = None;
        tally.tx_bytes += out.iter().map(|o| o.contents.len() as u64).sum::<u64>();
        let mut rx_bytes = 0u64;
        let r = io.turn(&mut out, Some(deadline), WORK_LIMIT, &mut |from, data| {
            rx_bytes += data.len() as u64;
            if failed.is_some() {
                return;
            }
            let at = Instant::now();
            match catch_unwind(AssertUnwindSafe(|| core.handle_datagram(at, from, data))) {
                Ok(Handled::Setup) => setup += at.elapsed(),
                Ok(_) => {}
                Err(panic) => failed = Some(panic),
            }
        });
        if let Some(panic) = failed {
            core = restart(core, &config, panic, &events, &mesh);
            metrics.restarted();
            since = core.counters();
            out.clear();
            continue;
        }
        tally.rx_bytes += rx_bytes;
        if let Ok(st) = &r {
            tally.rx_datagrams += st.received as u64;
            tally.tx_datagrams += st.sent as u64;
            tally.syscalls += st.syscalls as u64;
        }
        match r {
            Ok(st) if st.shed > 0 => {
                core.note_shed(st.shed as u64);
                if now >= last_shed_log + Duration::from_secs(5) {
                    last_shed_log = now;
                    tracing::warn!(core = index, shed_total = core.counters().shed, "core overloaded: dropping media packets that waited too long in the kernel");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(core = index, error = %e, "socket turn failed");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Replaces a core whose state machine panicked: logs the panic, ends its participant sessions
/// with [`LeaveReason::CoreFailed`], tells the other cores, and returns a fresh core.
fn restart(failed: Core, config: &CoreConfig, panic: Box<dyn std::any::Any + Send>, events: &UnboundedSender<LinkEvent>, mesh: &Mesh) -> Core {
    let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
    // Reading the ids may fail too, in a state left half-changed; then the control plane
    // learns of the sessions from their clients' timeouts instead.
    let sessions = catch_unwind(AssertUnwindSafe(|| failed.participant_sessions())).unwrap_or_default();
    tracing::error!(core = config.index, panic = %what, sessions = sessions.len(), "media core panicked; its sessions end and it restarts empty");
    for (room, session) in sessions {
        let _ = events.send(LinkEvent::SessionEnded { room, session, reason: LeaveReason::CoreFailed });
    }
    let _ = catch_unwind(AssertUnwindSafe(move || drop(failed)));
    for (c, tx) in mesh.tx.iter().enumerate() {
        if c as u32 != config.index {
            let _ = tx.send(CrossMsg::CoreRestarted { core: config.index });
            mesh.wakers[c].wake();
        }
    }
    Core::new(config.clone())
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

/// Busy share in thousandths: `cpu` used over `wall` elapsed, at most 1000.
pub fn busy_permille(cpu: Duration, wall: Duration) -> u16 {
    if wall.is_zero() {
        return 0;
    }
    (cpu.as_secs_f64() / wall.as_secs_f64() * 1000.0).round().clamp(0.0, 1000.0) as u16
}

/// An RTP (not RTCP) packet by its first two bytes (RFC 7983, RFC 5761): the datagrams a core
/// may shed under overload. STUN, DTLS and RTCP are never shed.
pub fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && (128..=191).contains(&d[0]) && !(64..=95).contains(&(d[1] & 0x7f))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn busy_share_in_thousandths() {
        assert_eq!(super::busy_permille(Duration::from_millis(500), Duration::from_secs(2)), 250);
        assert_eq!(super::busy_permille(Duration::from_secs(3), Duration::from_secs(2)), 1000);
        assert_eq!(super::busy_permille(Duration::from_secs(1), Duration::ZERO), 0);
    }

    #[test]
    fn only_rtp_is_sheddable() {
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 96;
        assert!(super::is_rtp(&rtp));
        rtp[1] = 0x80 | 111; // marker + PT 111
        assert!(super::is_rtp(&rtp));
        rtp[1] = 200; // RTCP sender report
        assert!(!super::is_rtp(&rtp));
        rtp[1] = 205; // RTCP transport feedback
        assert!(!super::is_rtp(&rtp));
        assert!(!super::is_rtp(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0])); // STUN
        assert!(!super::is_rtp(&[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0])); // DTLS
        assert!(!super::is_rtp(&[0x80, 96])); // too short
    }
}
