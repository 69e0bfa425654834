//! UDP echo server on one pinned core, driven by a blocking client on the other core.
//! Prints echoed packets per second and server CPU-microseconds per echoed packet
//! for glommio, tokio-uring and tokio's epoll driver, all in one run.
use std::net::{SocketAddr, UdpSocket};
use tokio_uring::buf::BoundedBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PKT: usize = 1200;
const WINDOW: usize = 32;
const SECS: u64 = 4;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn pin(core: usize) {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    if let Some(id) = ids.get(core % ids.len().max(1)) {
        core_affinity::set_for_current(*id);
    }
}

/// Runs the client for SECS and returns echoed packets.
fn client(server: SocketAddr, stop: &AtomicBool) -> u64 {
    pin(0);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s.connect(server).unwrap();
    let buf = [7u8; PKT];
    let mut rb = [0u8; 2048];
    for _ in 0..WINDOW {
        s.send(&buf).unwrap();
    }
    let end = Instant::now() + Duration::from_secs(SECS);
    let mut n = 0;
    while Instant::now() < end {
        match s.recv(&mut rb) {
            Ok(_) => {
                n += 1;
                s.send(&buf).unwrap();
            }
            Err(_) => {
                for _ in 0..WINDOW {
                    s.send(&buf).unwrap();
                }
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    // Wake the server so it sees the stop flag.
    for _ in 0..4 {
        let _ = s.send(&buf);
    }
    n
}

fn measure(name: &str, server: impl FnOnce(std::net::UdpSocket, Arc<AtomicBool>) -> Duration + Send + 'static) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let h = std::thread::spawn(move || {
        pin(1);
        server(sock, st)
    });
    let n = client(addr, &stop);
    let cpu = h.join().unwrap();
    println!(
        "{name:12} {:>9.0} echoes/s  {:>6.2} server CPU-us per echo",
        n as f64 / SECS as f64,
        cpu.as_secs_f64() * 1e6 / n.max(1) as f64
    );
}

fn main() {
    for _ in 0..2 {
        measure("glommio", |sock, stop| {
            let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(1)).make().unwrap();
            ex.run(async move {
                let s = glommio::net::UdpSocket::from(socket2::Socket::from(sock));
                let start = thread_cpu();
                let mut buf = vec![0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let (n, from) = s.recv_from(&mut buf).await.unwrap();
                    s.send_to(&buf[..n], from).await.unwrap();
                }
                thread_cpu() - start
            })
        });
        measure("tokio-uring", |sock, stop| {
            tokio_uring::start(async move {
                let s = tokio_uring::net::UdpSocket::from_std(sock);
                let start = thread_cpu();
                let mut buf = vec![0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let (r, b) = s.recv_from(buf).await;
                    let (n, from) = r.unwrap();
                    let (r, b) = s.send_to(b.slice(..n), from).await;
                    r.unwrap();
                    buf = b.into_inner();
                }
                thread_cpu() - start
            })
        });
        measure("tokio-epoll", |sock, stop| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
            rt.block_on(async move {
                sock.set_nonblocking(true).unwrap();
                let s = tokio::net::UdpSocket::from_std(sock).unwrap();
                let start = thread_cpu();
                let mut buf = vec![0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let (n, from) = s.recv_from(&mut buf).await.unwrap();
                    s.send_to(&buf[..n], from).await.unwrap();
                }
                thread_cpu() - start
            })
        });
    }
}
