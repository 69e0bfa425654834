//! Batched UDP I/O for one core's socket, without an async runtime.
//!
//! [`BatchIo::turn`] sends every queued datagram and receives up to a work limit, with one
//! `io_uring_enter` per turn on io_uring. Sends to one destination are coalesced with UDP GSO.
//! Receives use one multishot `recvmsg` fed from a ring of provided buffers (one poll entry
//! on the socket however many datagrams are in flight; buffers recycled in place). A [`Waker`]
//! (eventfd) interrupts a waiting turn from other threads (control commands, cross-core
//! packets). Where io_uring is refused, the same interface runs on `recvmmsg`/`sendmmsg` and
//! `ppoll`: one syscall per batch, never one per packet.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, types, IoUring};

use crate::Backend;

/// Largest datagram received.
pub const MAX_DATAGRAM: usize = 2048;
/// The `recvmmsg` batch size of the fallback.
pub const RECV_SLOTS: usize = 64;
/// Provided receive buffers in the io_uring buffer ring (a power of two).
const RING_BUFFERS: u16 = 512;
/// Buffer group id of that ring.
const RING_GROUP: u16 = 0;
/// Source address room in each provided buffer (fits IPv4 and IPv6; padded to 8 bytes so
/// the control messages after it are aligned).
const NAME_LEN: usize = (std::mem::size_of::<libc::sockaddr_in6>() + 7) & !7;
/// Control-message room per received datagram: one `SCM_TIMESTAMPNS` (CMSG_SPACE(16)).
const CONTROL_LEN: usize = 32;
/// Each provided buffer: the kernel's `io_uring_recvmsg_out` header, the name, the control
/// messages, the datagram.
const RING_BUF_LEN: usize = 16 + NAME_LEN + CONTROL_LEN + MAX_DATAGRAM;
/// Most segments in one GSO send (the kernel allows 64).
const MAX_GSO_SEGMENTS: usize = 64;
/// Most bytes in one GSO send.
const MAX_GSO_BYTES: usize = 65_000;

/// Wakes a core's waiting turn from any thread (an eventfd).
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// A new waker.
    pub fn new() -> io::Result<Arc<Self>> {
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Arc::new(Self { fd: unsafe { OwnedFd::from_raw_fd(fd) } }))
    }

    /// Makes the core's current or next turn return promptly.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// A datagram to send.
#[derive(Debug)]
pub struct Outgoing {
    /// Destination.
    pub destination: SocketAddr,
    /// Bytes (kept alive until the kernel has them).
    pub contents: Vec<u8>,
}

/// What one turn did.
#[derive(Debug, Default, Clone, Copy)]
pub struct TurnStats {
    /// Datagrams received.
    pub received: usize,
    /// Datagrams handed to the kernel.
    pub sent: usize,
    /// Send operations (GSO groups count once).
    pub send_ops: usize,
    /// Syscalls made.
    pub syscalls: usize,
    /// Whether the waker fired.
    pub woken: bool,
    /// Datagrams dropped unread because they waited in the kernel longer than the shed age.
    pub shed: usize,
}

/// Drops datagrams that waited in the kernel's receive queue too long, when the caller
/// says they may be dropped (media, not signalling): under overload the queue then stays
/// short instead of growing seconds of delay.
#[derive(Clone, Copy)]
pub struct Shed {
    /// Oldest a sheddable datagram may be when it is read.
    pub max_age: std::time::Duration,
    /// Whether a datagram may be shed.
    pub sheddable: fn(&[u8]) -> bool,
}

impl Shed {
    /// True when `data`, received at `at` (kernel time) and read at `now`, is to be dropped.
    fn drops(&self, now: std::time::SystemTime, at: Option<std::time::SystemTime>, data: &[u8]) -> bool {
        let Some(at) = at else { return false };
        match now.duration_since(at) {
            // A clock step can make ages absurd; only trust plausible ones.
            Ok(age) => age > self.max_age && age < std::time::Duration::from_secs(60) && (self.sheddable)(data),
            Err(_) => false,
        }
    }
}

/// Kernel receive time from a `SCM_TIMESTAMPNS` control message, if there is one. The
/// control bytes may sit at any alignment (inside a provided buffer), so headers are read
/// unaligned rather than through the CMSG macros.
fn rx_time(control: &[u8]) -> Option<std::time::SystemTime> {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    let mut off = 0;
    while off + HDR <= control.len() {
        // SAFETY: HDR bytes at `off` are inside `control`; read unaligned.
        let c: libc::cmsghdr = unsafe { std::ptr::read_unaligned(control.as_ptr().add(off).cast()) };
        let len = c.cmsg_len as usize;
        if len < HDR || off + len > control.len() {
            break;
        }
        if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_TIMESTAMPNS && len >= HDR + std::mem::size_of::<libc::timespec>() {
            // SAFETY: the length check above keeps the timespec inside `control`.
            let ts: libc::timespec = unsafe { std::ptr::read_unaligned(control.as_ptr().add(off + HDR).cast()) };
            return Some(std::time::UNIX_EPOCH + std::time::Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32));
        }
        off += (len + 7) & !7;
    }
    None
}

/// Batched I/O on io_uring or, as a fallback, `recvmmsg`/`sendmmsg`.
pub enum BatchIo {
    /// io_uring.
    Uring(Box<Uring>),
    /// recvmmsg/sendmmsg + ppoll.
    Mmsg(Box<Mmsg>),
}

impl BatchIo {
    /// Wraps `socket`. Tries io_uring unless `force_fallback`; logs one line when it falls back.
    pub fn new(socket: std::net::UdpSocket, waker: Arc<Waker>, force_fallback: bool) -> io::Result<(Self, Backend)> {
        let gso = gso_supported(&socket);
        if !force_fallback {
            match Uring::new(&socket, waker.clone(), gso) {
                Ok(u) => return Ok((BatchIo::Uring(Box::new(u.with_socket(socket))), Backend::IoUring)),
                Err(e) => tracing::warn!(error = %e, "io_uring is not available here (blocked by seccomp or an old kernel); falling back to recvmmsg/sendmmsg on epoll"),
            }
        }
        socket.set_nonblocking(true)?;
        Ok((BatchIo::Mmsg(Box::new(Mmsg::new(socket, waker, gso))), Backend::Epoll))
    }

    /// Sends everything in `out` (emptying it), then waits until datagrams arrive, the
    /// waker fires or `deadline` passes, and hands at most `limit` received datagrams to
    /// `on_recv`. Datagrams beyond the limit wait for the next turn.
    pub fn turn(&mut self, out: &mut Vec<Outgoing>, deadline: Option<Instant>, limit: usize, on_recv: &mut dyn FnMut(SocketAddr, &mut [u8])) -> io::Result<TurnStats> {
        match self {
            BatchIo::Uring(u) => u.turn(out, deadline, limit, on_recv),
            BatchIo::Mmsg(m) => m.turn(out, deadline, limit, on_recv),
        }
    }

    /// Starts dropping datagrams older than `shed.max_age` that `shed.sheddable` accepts
    /// (the kernel then timestamps every datagram on this socket; it turns that on through
    /// deferred work, so datagrams in the first moments may be stamped when read).
    pub fn set_shed(&mut self, shed: Shed) -> io::Result<()> {
        let fd = match self {
            BatchIo::Uring(u) => u.fd,
            BatchIo::Mmsg(m) => m.socket.as_raw_fd(),
        };
        let on: libc::c_int = 1;
        // SAFETY: plain setsockopt with a valid int.
        let r = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, (&on as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        match self {
            BatchIo::Uring(u) => u.shed = Some(shed),
            BatchIo::Mmsg(m) => m.shed = Some(shed),
        }
        Ok(())
    }

    /// Local address of the socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            BatchIo::Uring(u) => u.socket.as_ref().map(|s| s.local_addr()).unwrap_or_else(|| Err(io::ErrorKind::NotConnected.into())),
            BatchIo::Mmsg(m) => m.socket.local_addr(),
        }
    }
}

/// Asks for `bytes` of kernel receive and send buffer on a socket. As root the system
/// limits (`net.core.rmem_max`) are bypassed with the `*FORCE` options; otherwise the kernel
/// caps the size. Returns the receive buffer size the kernel granted.
pub fn set_buffers(socket: &impl AsRawFd, bytes: usize) -> usize {
    let fd = socket.as_raw_fd();
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        // SAFETY: setsockopt reads one c_int.
        let r = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, force, (&v as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t) };
        if r != 0 {
            // SAFETY: as above.
            unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, plain, (&v as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t) };
        }
    }
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `got`.
    unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, (&mut got as *mut libc::c_int).cast(), &mut len) };
    got.max(0) as usize
}

fn gso_supported(socket: &std::net::UdpSocket) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`.
    let r = unsafe { libc::getsockopt(socket.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, (&mut v as *mut libc::c_int).cast(), &mut len) };
    r == 0
}

/// Writes `addr` as a C socket address.
fn to_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads a C socket address.
fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), sin6.sin6_flowinfo, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}

/// Source, kernel receive time and datagram of one multishot `recvmsg` buffer; `None` when
/// truncated or malformed.
fn parse_recv<'a>(buf: &'a mut [u8], msg: &libc::msghdr) -> Option<(SocketAddr, Option<std::time::SystemTime>, &'a mut [u8])> {
    let (name, at, payload_len, truncated) = {
        let out = types::RecvMsgOut::parse(buf, msg).ok()?;
        let at = rx_time(out.control_data());
        let mut addr: libc::sockaddr_storage = zeroed();
        let name = out.name_data();
        let n = name.len().min(out.incoming_name_len() as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
        // SAFETY: copies at most the storage's size of plain bytes into it.
        unsafe { std::ptr::copy_nonoverlapping(name.as_ptr(), (&mut addr as *mut libc::sockaddr_storage).cast::<u8>(), n) };
        (from_sockaddr(&addr)?, at, out.payload_data().len(), out.is_payload_truncated())
    };
    if truncated {
        return None;
    }
    let start = 16 + msg.msg_namelen as usize + msg.msg_controllen;
    buf.get_mut(start..start + payload_len).map(|d| (name, at, d))
}

/// Splits `out` into send groups: runs to one destination, equal-sized except the last,
/// within the GSO limits. Returns (start, end, segment size) per group.
fn gso_groups(out: &[Outgoing], gso: bool, groups: &mut Vec<(usize, usize, usize)>) {
    groups.clear();
    let mut i = 0;
    while i < out.len() {
        let size = out[i].contents.len();
        let mut j = i + 1;
        let mut bytes = size;
        if gso && size > 0 {
            while j < out.len()
                && j - i < MAX_GSO_SEGMENTS
                && out[j].destination == out[i].destination
                && out[j].contents.len() <= size
                && bytes + out[j].contents.len() <= MAX_GSO_BYTES
            {
                bytes += out[j].contents.len();
                let last = out[j].contents.len() < size;
                j += 1;
                if last {
                    break;
                }
            }
        }
        groups.push((i, j, size));
        i = j;
    }
}

/// Sorts a send queue by destination, keeping each destination's order, so that GSO can
/// coalesce; its buffers are reused, so a turn allocates nothing (std's stable sort would
/// allocate a scratch buffer each time).
#[derive(Default)]
pub struct GsoOrder {
    keys: Vec<(SocketAddr, u32)>,
    spare: Vec<Outgoing>,
}

impl GsoOrder {
    /// Orders `out` by destination, each destination's datagrams in their original order.
    pub fn apply(&mut self, out: &mut Vec<Outgoing>) {
        if out.windows(2).all(|w| w[0].destination <= w[1].destination) {
            return;
        }
        self.keys.clear();
        self.keys.extend(out.iter().enumerate().map(|(i, o)| (o.destination, i as u32)));
        // The index in the key makes the unstable sort keep each destination's order.
        self.keys.sort_unstable();
        self.spare.clear();
        self.spare.extend(self.keys.iter().map(|&(destination, i)| Outgoing { destination, contents: std::mem::take(&mut out[i as usize].contents) }));
        // Both vectors keep their own capacity: nothing grows in later turns.
        out.clear();
        out.append(&mut self.spare);
    }
}

// ---------------------------------------------------------------------------------------
// io_uring

const KIND_RECV: u64 = 1 << 60;
const KIND_SEND: u64 = 2 << 60;
const KIND_WAKE: u64 = 3 << 60;
const KIND_MASK: u64 = 0xF << 60;

/// Provided buffers for the multishot receive: a page-aligned ring of entries the kernel
/// takes buffers from, and the buffers themselves.
struct BufRing {
    entries: *mut types::BufRingEntry,
    layout: std::alloc::Layout,
    data: Vec<u8>,
    /// Local tail; published to the kernel by [`BufRing::publish`].
    tail: u16,
}

impl BufRing {
    fn new() -> io::Result<Self> {
        let layout = std::alloc::Layout::from_size_align(RING_BUFFERS as usize * std::mem::size_of::<types::BufRingEntry>(), 4096)
            .map_err(|e| io::Error::other(e.to_string()))?;
        // SAFETY: the layout has a non-zero size.
        let entries = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<types::BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer ring"));
        }
        let mut ring = BufRing { entries, layout, data: vec![0; RING_BUFFERS as usize * RING_BUF_LEN], tail: 0 };
        for bid in 0..RING_BUFFERS {
            ring.give(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// Hands buffer `bid` back to the kernel (visible after [`BufRing::publish`]).
    fn give(&mut self, bid: u16) {
        let addr = self.data.as_ptr() as u64 + bid as u64 * RING_BUF_LEN as u64;
        let idx = (self.tail & (RING_BUFFERS - 1)) as usize;
        // SAFETY: idx < RING_BUFFERS, inside the allocation.
        let e = unsafe { &mut *self.entries.add(idx) };
        e.set_addr(addr);
        e.set_len(RING_BUF_LEN as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the local tail to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of our page-aligned ring, and the
        // kernel reads it with acquire semantics.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries).cast_mut();
            (*(tail as *const std::sync::atomic::AtomicU16)).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    /// Buffer `bid` as the kernel filled it (`len` bytes).
    fn buffer(&mut self, bid: u16, len: usize) -> Option<&mut [u8]> {
        let start = bid as usize * RING_BUF_LEN;
        self.data.get_mut(start..start + len.min(RING_BUF_LEN))
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.entries.cast(), self.layout) };
    }
}

struct SendSlot {
    bufs: Vec<Vec<u8>>,
    iovs: Vec<libc::iovec>,
    msg: libc::msghdr,
    addr: libc::sockaddr_storage,
    cmsg: [u64; 4],
    datagrams: usize,
}

/// io_uring backend; see [`BatchIo`].
pub struct Uring {
    ring: IoUring,
    socket: Option<std::net::UdpSocket>,
    fd: RawFd,
    waker: Arc<Waker>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// Buffers for the multishot receive; dropped after the ring has let go of them.
    bufs: BufRing,
    /// The multishot receive's template (only its name and control lengths are read).
    recv_msg: Box<libc::msghdr>,
    /// The multishot receive is in flight.
    recv_armed: bool,
    /// Age-based dropping, when set.
    shed: Option<Shed>,
    sends: Vec<Option<Box<SendSlot>>>,
    free_sends: Vec<usize>,
    groups: Vec<(usize, usize, usize)>,
    order: GsoOrder,
    gso: bool,
}

fn zeroed<T>() -> T {
    // SAFETY: only used for plain C structs (msghdr, iovec, sockaddr_storage) where all-zero is valid.
    unsafe { MaybeUninit::<T>::zeroed().assume_init() }
}

impl Uring {
    fn new(socket: &std::net::UdpSocket, waker: Arc<Waker>, gso: bool) -> io::Result<Self> {
        let ring = IoUring::builder().setup_coop_taskrun().setup_single_issuer().build(1024).or_else(|_| IoUring::new(1024))?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "io_uring without EXT_ARG (kernel older than 5.11)"));
        }
        let bufs = BufRing::new()?;
        // SAFETY: the ring memory stays allocated until after it is unregistered (Drop).
        unsafe { ring.submitter().register_buf_ring_with_flags(bufs.entries as u64, RING_BUFFERS, RING_GROUP, 0) }
            .map_err(|e| io::Error::new(e.kind(), format!("io_uring provided-buffer ring (kernel 5.19+): {e}")))?;
        let mut recv_msg: Box<libc::msghdr> = Box::new(zeroed());
        recv_msg.msg_namelen = NAME_LEN as libc::socklen_t;
        recv_msg.msg_controllen = CONTROL_LEN;
        let mut u = Self {
            ring,
            socket: None,
            fd: socket.as_raw_fd(),
            waker,
            wake_buf: Box::new(0),
            wake_armed: false,
            bufs,
            recv_msg,
            recv_armed: false,
            shed: None,
            sends: Vec::new(),
            free_sends: Vec::new(),
            groups: Vec::new(),
            order: GsoOrder::default(),
            gso,
        };
        u.probe_multishot()?;
        Ok(u)
    }

    /// Arms the multishot receive alone (the waker's read is armed by the first turn) and
    /// checks that the kernel took it (6.0+): an old kernel refuses it at once with EINVAL.
    /// A datagram that already arrived is dropped here, its buffer handed back.
    fn probe_multishot(&mut self) -> io::Result<()> {
        self.recv_armed = true;
        let e = opcode::RecvMsgMulti::new(types::Fd(self.fd), &*self.recv_msg, RING_GROUP).build().user_data(KIND_RECV);
        self.push(&e, &mut TurnStats::default())?;
        self.ring.submit()?;
        let mut cq = self.ring.completion();
        for cqe in cq.by_ref() {
            if cqe.result() == -libc::EINVAL {
                return Err(io::Error::new(io::ErrorKind::Unsupported, "io_uring without multishot recvmsg (kernel older than 6.0)"));
            }
            if !io_uring::cqueue::more(cqe.flags()) {
                self.recv_armed = false;
            }
            if let Some(bid) = io_uring::cqueue::buffer_select(cqe.flags()) {
                self.bufs.give(bid);
            }
        }
        cq.sync();
        self.bufs.publish();
        Ok(())
    }

    fn with_socket(mut self, socket: std::net::UdpSocket) -> Self {
        self.fd = socket.as_raw_fd();
        self.socket = Some(socket);
        self
    }

    fn push(&mut self, e: &io_uring::squeue::Entry, stats: &mut TurnStats) -> io::Result<()> {
        // SAFETY: every entry points into boxed slots that live until their completion.
        while unsafe { self.ring.submission().push(e) }.is_err() {
            self.ring.submit()?;
            stats.syscalls += 1;
        }
        Ok(())
    }

    fn queue_sends(&mut self, out: &mut Vec<Outgoing>, stats: &mut TurnStats) -> io::Result<()> {
        if self.gso {
            self.order.apply(out);
        }
        gso_groups(out, self.gso, &mut self.groups);
        let mut items = out.drain(..);
        let groups = std::mem::take(&mut self.groups);
        for &(start, end, size) in &groups {
            let idx = match self.free_sends.pop() {
                Some(i) => i,
                None => {
                    self.sends.push(None);
                    self.sends.len() - 1
                }
            };
            let mut slot = self.sends[idx].take().unwrap_or_else(|| {
                Box::new(SendSlot { bufs: Vec::new(), iovs: Vec::new(), msg: zeroed(), addr: zeroed(), cmsg: [0; 4], datagrams: 0 })
            });
            slot.bufs.clear();
            slot.iovs.clear();
            let mut dest = None;
            for o in items.by_ref().take(end - start) {
                dest = Some(o.destination);
                slot.bufs.push(o.contents);
            }
            let Some(dest) = dest else { continue };
            for b in &slot.bufs {
                slot.iovs.push(libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() });
            }
            let len = to_sockaddr(dest, &mut slot.addr);
            slot.msg = zeroed();
            slot.msg.msg_name = (&mut slot.addr as *mut libc::sockaddr_storage).cast();
            slot.msg.msg_namelen = len;
            slot.msg.msg_iov = slot.iovs.as_mut_ptr();
            slot.msg.msg_iovlen = slot.iovs.len();
            slot.datagrams = slot.bufs.len();
            if slot.bufs.len() > 1 {
                set_gso_cmsg(&mut slot.msg, &mut slot.cmsg, size as u16);
            }
            stats.sent += slot.datagrams;
            stats.send_ops += 1;
            let e = opcode::SendMsg::new(types::Fd(self.fd), &slot.msg).build().user_data(KIND_SEND | idx as u64);
            self.sends[idx] = Some(slot);
            self.push(&e, stats)?;
        }
        self.groups = groups;
        Ok(())
    }

    fn arm_receives(&mut self, stats: &mut TurnStats) -> io::Result<()> {
        if !self.recv_armed {
            self.recv_armed = true;
            let e = opcode::RecvMsgMulti::new(types::Fd(self.fd), &*self.recv_msg, RING_GROUP).build().user_data(KIND_RECV);
            self.push(&e, stats)?;
        }
        if !self.wake_armed {
            self.wake_armed = true;
            let e = opcode::Read::new(types::Fd(self.waker.fd.as_raw_fd()), (&mut *self.wake_buf as *mut u64).cast(), 8).build().user_data(KIND_WAKE);
            self.push(&e, stats)?;
        }
        Ok(())
    }

    fn turn(&mut self, out: &mut Vec<Outgoing>, deadline: Option<Instant>, limit: usize, on_recv: &mut dyn FnMut(SocketAddr, &mut [u8])) -> io::Result<TurnStats> {
        let mut stats = TurnStats::default();
        self.queue_sends(out, &mut stats)?;
        self.arm_receives(&mut stats)?;
        let ready = !self.ring.completion().is_empty();
        let now = Instant::now();
        let r = match deadline {
            _ if ready => self.ring.submit(),
            Some(d) if d <= now => self.ring.submit(),
            Some(d) => {
                let ts = types::Timespec::from(d - now);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        stats.syscalls += 1;
        match r {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) || e.raw_os_error() == Some(libc::EINTR) || e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        let mut recycled = false;
        // Wall time only matters for shedding (kernel timestamps are wall-clock).
        let wall = if self.shed.is_some() { std::time::SystemTime::now() } else { std::time::UNIX_EPOCH };
        let mut cq = self.ring.completion();
        while stats.received < limit {
            let Some(cqe) = cq.next() else { break };
            let data = cqe.user_data();
            let idx = (data & !KIND_MASK) as usize;
            let res = cqe.result();
            match data & KIND_MASK {
                KIND_RECV => {
                    // The multishot receive goes on while the kernel says "more"; otherwise
                    // (out of buffers, or an error) it is armed again next turn.
                    if !io_uring::cqueue::more(cqe.flags()) {
                        self.recv_armed = false;
                    }
                    if res < 0 {
                        if res != -libc::ENOBUFS {
                            tracing::debug!(error = %io::Error::from_raw_os_error(-res), "recvmsg failed");
                        }
                        continue;
                    }
                    let Some(bid) = io_uring::cqueue::buffer_select(cqe.flags()) else { continue };
                    if let Some(buf) = self.bufs.buffer(bid, res as usize) {
                        if let Some((from, at, data)) = parse_recv(buf, &self.recv_msg) {
                            if self.shed.is_some_and(|s| s.drops(wall, at, data)) {
                                stats.shed += 1;
                            } else {
                                stats.received += 1;
                                on_recv(from, data);
                            }
                        }
                    }
                    self.bufs.give(bid);
                    recycled = true;
                }
                KIND_SEND => {
                    if res < 0 {
                        tracing::debug!(error = %io::Error::from_raw_os_error(-res), "sendmsg failed");
                    }
                    if let Some(Some(slot)) = self.sends.get_mut(idx) {
                        slot.bufs.clear();
                        self.free_sends.push(idx);
                    }
                }
                KIND_WAKE => {
                    self.wake_armed = false;
                    stats.woken = true;
                }
                _ => {}
            }
        }
        cq.sync();
        if recycled {
            self.bufs.publish();
        }
        Ok(stats)
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // In-flight operations point into our slots: cancel them and wait before freeing.
        let _ = self.ring.submitter().register_sync_cancel(None, io_uring::types::CancelBuilder::any());
        let _ = self.ring.submit_and_wait(0);
        // The buffers (freed after this) are no longer the kernel's.
        let _ = self.ring.submitter().unregister_buf_ring(RING_GROUP);
    }
}

fn set_gso_cmsg(msg: &mut libc::msghdr, cmsg_buf: &mut [u64; 4], segment: u16) {
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
    // SAFETY: msg_control points at a buffer of at least CMSG_SPACE(2) bytes (32 bytes).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
    }
}

// ---------------------------------------------------------------------------------------
// recvmmsg / sendmmsg fallback

/// `recvmmsg`/`sendmmsg` backend; see [`BatchIo`].
pub struct Mmsg {
    socket: std::net::UdpSocket,
    waker: Arc<Waker>,
    bufs: Vec<[u8; MAX_DATAGRAM]>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    hdrs: Vec<libc::mmsghdr>,
    send_iovs: Vec<libc::iovec>,
    send_addrs: Vec<libc::sockaddr_storage>,
    send_hdrs: Vec<libc::mmsghdr>,
    cmsgs: Vec<[u64; 4]>,
    groups: Vec<(usize, usize, usize)>,
    order: GsoOrder,
    gso: bool,
    /// Receive control buffers (kernel timestamps), one per slot.
    controls: Vec<[u64; CONTROL_LEN / 8]>,
    /// Age-based dropping, when set.
    shed: Option<Shed>,
}

impl Mmsg {
    fn new(socket: std::net::UdpSocket, waker: Arc<Waker>, gso: bool) -> Self {
        Self {
            socket,
            waker,
            bufs: vec![[0; MAX_DATAGRAM]; RECV_SLOTS],
            iovs: vec![zeroed(); RECV_SLOTS],
            addrs: vec![zeroed(); RECV_SLOTS],
            hdrs: vec![zeroed(); RECV_SLOTS],
            send_iovs: Vec::new(),
            send_addrs: Vec::new(),
            send_hdrs: Vec::new(),
            cmsgs: Vec::new(),
            controls: vec![[0; CONTROL_LEN / 8]; RECV_SLOTS],
            shed: None,
            groups: Vec::new(),
            order: GsoOrder::default(),
            gso,
        }
    }

    fn send(&mut self, out: &mut Vec<Outgoing>, stats: &mut TurnStats) {
        if out.is_empty() {
            return;
        }
        if self.gso {
            self.order.apply(out);
        }
        gso_groups(out, self.gso, &mut self.groups);
        let n = self.groups.len();
        self.send_iovs.clear();
        self.send_iovs.extend(out.iter().map(|o| libc::iovec { iov_base: o.contents.as_ptr() as *mut libc::c_void, iov_len: o.contents.len() }));
        self.send_addrs.resize(n, zeroed());
        self.send_hdrs.resize(n, zeroed());
        self.cmsgs.resize(n, [0; 4]);
        for (g, &(start, end, size)) in self.groups.iter().enumerate() {
            let len = to_sockaddr(out[start].destination, &mut self.send_addrs[g]);
            let h = &mut self.send_hdrs[g];
            h.msg_hdr = zeroed();
            h.msg_hdr.msg_name = (&mut self.send_addrs[g] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = len;
            h.msg_hdr.msg_iov = self.send_iovs[start..].as_mut_ptr();
            h.msg_hdr.msg_iovlen = end - start;
            if end - start > 1 {
                set_gso_cmsg(&mut h.msg_hdr, &mut self.cmsgs[g], size as u16);
            }
        }
        let mut done = 0;
        while done < n {
            let want = (n - done).min(1024) as libc::c_uint;
            // SAFETY: headers, iovecs and addresses stay alive and unmoved during the call.
            let r = unsafe { libc::sendmmsg(self.socket.as_raw_fd(), self.send_hdrs[done..].as_mut_ptr(), want, 0) };
            stats.syscalls += 1;
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    let mut p = libc::pollfd { fd: self.socket.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, 10) };
                    continue;
                }
                tracing::debug!(error = %e, "sendmmsg failed");
                done += 1;
                continue;
            }
            for &(s, e, _) in &self.groups[done..done + r as usize] {
                stats.sent += e - s;
            }
            stats.send_ops += r as usize;
            done += r as usize;
        }
        out.clear();
    }

    fn recv(&mut self, limit: usize, stats: &mut TurnStats, on_recv: &mut dyn FnMut(SocketAddr, &mut [u8])) -> io::Result<usize> {
        let want = limit.clamp(1, RECV_SLOTS);
        for i in 0..want {
            self.iovs[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: MAX_DATAGRAM };
            let h = &mut self.hdrs[i];
            h.msg_hdr = zeroed();
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CONTROL_LEN;
        }
        // SAFETY: `want` headers with buffers that stay alive during the call.
        let r = unsafe { libc::recvmmsg(self.socket.as_raw_fd(), self.hdrs.as_mut_ptr(), want as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        stats.syscalls += 1;
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
        }
        let wall = if self.shed.is_some() { std::time::SystemTime::now() } else { std::time::UNIX_EPOCH };
        for i in 0..r as usize {
            let n = (self.hdrs[i].msg_len as usize).min(MAX_DATAGRAM);
            // A datagram larger than any media packet is dropped rather than handed on cut.
            if self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                continue;
            }
            if let Some(shed) = self.shed {
                let control_len = self.hdrs[i].msg_hdr.msg_controllen.min(CONTROL_LEN);
                // SAFETY: the control buffer is CONTROL_LEN bytes of plain u64s.
                let control = unsafe { std::slice::from_raw_parts(self.controls[i].as_ptr().cast::<u8>(), control_len) };
                if shed.drops(wall, rx_time(control), &self.bufs[i][..n]) {
                    stats.shed += 1;
                    continue;
                }
            }
            if let Some(from) = from_sockaddr(&self.addrs[i]) {
                stats.received += 1;
                on_recv(from, &mut self.bufs[i][..n]);
            }
        }
        Ok(r as usize)
    }

    fn turn(&mut self, out: &mut Vec<Outgoing>, deadline: Option<Instant>, limit: usize, on_recv: &mut dyn FnMut(SocketAddr, &mut [u8])) -> io::Result<TurnStats> {
        let mut stats = TurnStats::default();
        self.send(out, &mut stats);
        if self.recv(limit, &mut stats, on_recv)? > 0 {
            return Ok(stats);
        }
        let timeout = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            libc::timespec { tv_sec: left.as_secs() as libc::time_t, tv_nsec: left.subsec_nanos() as libc::c_long }
        });
        let mut fds = [
            libc::pollfd { fd: self.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.waker.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        let ts = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: two valid pollfds; ts is null or points at a live timespec.
        let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, ts, std::ptr::null()) };
        stats.syscalls += 1;
        if r > 0 {
            if fds[1].revents != 0 {
                self.waker.drain();
                stats.syscalls += 1;
                stats.woken = true;
            }
            if fds[0].revents != 0 {
                self.recv(limit, &mut stats, on_recv)?;
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn gso_order_groups_destinations_and_keeps_each_ones_order() {
        let a: SocketAddr = "10.0.0.2:9".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:9".parse().unwrap();
        let mut order = GsoOrder::default();
        for _ in 0..2 {
            let mut out: Vec<Outgoing> = [(a, 1), (b, 2), (a, 3), (b, 4), (a, 5)].iter().map(|&(d, n)| Outgoing { destination: d, contents: vec![n] }).collect();
            order.apply(&mut out);
            let got: Vec<(SocketAddr, u8)> = out.iter().map(|o| (o.destination, o.contents[0])).collect();
            assert_eq!(got, [(b, 2), (b, 4), (a, 1), (a, 3), (a, 5)]);
        }
        let mut sorted = vec![Outgoing { destination: b, contents: vec![1] }, Outgoing { destination: a, contents: vec![2] }];
        order.apply(&mut sorted);
        assert_eq!(sorted[0].contents, [1]);
    }

    fn pair(force: bool) -> (BatchIo, std::net::UdpSocket, Arc<Waker>) {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let waker = Waker::new().unwrap();
        let (io, backend) = BatchIo::new(s, waker.clone(), force).unwrap();
        assert_eq!(backend, if force { Backend::Epoll } else { Backend::IoUring });
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (io, peer, waker)
    }

    fn exercise(force: bool) {
        let (mut io, peer, waker) = pair(force);
        let me = io.local_addr().unwrap();
        // Receive: 10 datagrams arrive, a limit of 4 per turn spreads them over turns.
        for i in 0..10u8 {
            peer.send_to(&[i; 100], me).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut got = Vec::new();
        let mut out = Vec::new();
        for _ in 0..10 {
            let st = io.turn(&mut out, Some(Instant::now() + Duration::from_millis(50)), 4, &mut |from, d| {
                assert_eq!(from, peer.local_addr().unwrap());
                got.push(d[0]);
            }).unwrap();
            assert!(st.received <= 4);
            if got.len() == 10 {
                break;
            }
        }
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
        // Send: 5 equal datagrams to the peer (one GSO send where supported) and 1 elsewhere.
        let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            out.push(Outgoing { destination: peer.local_addr().unwrap(), contents: vec![i; 1200] });
        }
        out.push(Outgoing { destination: other.local_addr().unwrap(), contents: vec![9; 50] });
        let st = io.turn(&mut out, Some(Instant::now()), 64, &mut |_, _| {}).unwrap();
        assert!(out.is_empty());
        let mut buf = [0u8; 2048];
        for i in 0..5u8 {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!((n, from, buf[0]), (1200, me, i));
        }
        other.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(other.recv_from(&mut buf).unwrap().0, 50);
        assert_eq!(st.sent, 6);
        // GSO: the five datagrams to the peer leave in one send operation.
        assert_eq!(st.send_ops, 2);
        // The waker ends a wait long before its deadline.
        let w = waker.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            w.wake();
        });
        let start = Instant::now();
        let mut woken = false;
        while !woken && start.elapsed() < Duration::from_secs(5) {
            woken |= io.turn(&mut out, Some(Instant::now() + Duration::from_secs(10)), 64, &mut |_, _| {}).unwrap().woken;
        }
        assert!(woken);
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }

    #[test]
    fn io_uring_batches_receives_sends_with_gso_and_wakes() {
        exercise(false);
    }

    /// More datagrams queued than the receive has buffers for (the io_uring multishot receive
    /// runs out and is re-armed), one oversized datagram among them: every other datagram
    /// arrives once and in order, the oversized one is dropped.
    fn burst(force: bool) {
        let (mut io, peer, _waker) = pair(force);
        if let BatchIo::Uring(u) = &io {
            set_buffers(u.socket.as_ref().unwrap(), 8 << 20);
        } else if let BatchIo::Mmsg(m) = &io {
            set_buffers(&m.socket, 8 << 20);
        }
        let me = io.local_addr().unwrap();
        let n = 3 * RING_BUFFERS as u32;
        for i in 0..n {
            if i == 100 {
                peer.send_to(&[0xEE; MAX_DATAGRAM + 500], me).unwrap();
            }
            peer.send_to(&i.to_be_bytes(), me).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut got = Vec::new();
        let mut out = Vec::new();
        let start = Instant::now();
        while got.len() < n as usize && start.elapsed() < Duration::from_secs(5) {
            io.turn(&mut out, Some(Instant::now() + Duration::from_millis(20)), 256, &mut |_, d| {
                got.push(d.try_into().map(u32::from_be_bytes).unwrap_or(u32::MAX));
            })
            .unwrap();
        }
        assert_eq!(got, (0..n).collect::<Vec<u32>>());
    }

    /// Stale sheddable datagrams are dropped unread; stale others and fresh ones arrive.
    fn shed(force: bool) {
        let (mut io, peer, _waker) = pair(force);
        io.set_shed(Shed { max_age: Duration::from_millis(30), sheddable: |d| d.first() == Some(&1) }).unwrap();
        // The kernel turns receive timestamps on through deferred work: a datagram that
        // arrives before that is stamped when read instead.
        std::thread::sleep(Duration::from_millis(100));
        let me = io.local_addr().unwrap();
        for _ in 0..5 {
            peer.send_to(&[1, 0], me).unwrap();
            peer.send_to(&[2, 0], me).unwrap();
        }
        std::thread::sleep(Duration::from_millis(80));
        for _ in 0..3 {
            peer.send_to(&[1, 1], me).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
        let (mut got, mut shed) = (Vec::new(), 0);
        let mut out = Vec::new();
        let start = Instant::now();
        while got.len() + shed < 13 && start.elapsed() < Duration::from_secs(5) {
            let st = io.turn(&mut out, Some(Instant::now() + Duration::from_millis(20)), 256, &mut |_, d| got.push((d[0], d[1]))).unwrap();
            shed += st.shed;
        }
        assert_eq!(shed, 5, "stale sheddable datagrams dropped");
        assert_eq!(got, [vec![(2, 0); 5], vec![(1, 1); 3]].concat());
    }

    #[test]
    fn io_uring_sheds_stale_media_only() {
        shed(false);
    }

    #[test]
    fn fallback_sheds_stale_media_only() {
        shed(true);
    }

    #[test]
    fn io_uring_receive_survives_running_out_of_buffers_and_drops_oversized() {
        burst(false);
    }

    #[test]
    fn fallback_receive_drops_oversized() {
        burst(true);
    }

    #[test]
    fn fallback_batches_receives_sends_and_wakes() {
        exercise(true);
    }

    #[test]
    fn gso_groups_split_by_destination_size_and_limits() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mk = |d, n| Outgoing { destination: d, contents: vec![0; n] };
        let out = vec![mk(a, 100), mk(a, 100), mk(a, 50), mk(a, 100), mk(b, 100)];
        let mut g = Vec::new();
        gso_groups(&out, true, &mut g);
        assert_eq!(g, vec![(0, 3, 100), (3, 4, 100), (4, 5, 100)]);
        gso_groups(&out, false, &mut g);
        assert_eq!(g.len(), 5);
    }
}
