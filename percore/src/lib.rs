//! Thread-per-core runtime: [`spawn`] starts a thread pinned to one CPU that runs a
//! [`CoreTask`] on glommio (io_uring), or on a tokio current-thread runtime (epoll) when
//! io_uring cannot be set up or is refused on purpose. Tasks are written once against the
//! small [`Driver`] trait and run on either.

pub mod batch;
mod driver;
pub mod heap;

pub use driver::{Driver, Epoll, Glommio};

use std::future::Future;

/// Which executor a core ended up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// glommio on io_uring.
    IoUring,
    /// tokio on epoll (fallback).
    Epoll,
}

/// The work of one core, generic over the executor it lands on.
pub trait CoreTask: Send + 'static {
    /// Runs the core until it is done.
    fn run<D: Driver>(self) -> impl Future<Output = ()>;
}

/// Pins the calling thread to CPU `cpu` (modulo the CPUs available); false if it could not.
pub fn pin(cpu: usize) -> bool {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => core_affinity::set_for_current(ids[cpu % ids.len()]),
        _ => false,
    }
}

/// Number of CPUs this process may be pinned to.
pub fn cpu_count() -> usize {
    core_affinity::get_core_ids().map(|v| v.len()).unwrap_or(1).max(1)
}

/// Starts `task` on its own thread pinned to `cpu` and reports the backend it runs on.
///
/// Without `force_epoll`, glommio is tried first; if it cannot start (seccomp, old kernel)
/// one warning line is logged and the thread falls back to epoll.
pub fn spawn<T: CoreTask>(name: String, cpu: usize, force_epoll: bool, task: T) -> std::io::Result<(std::thread::JoinHandle<()>, Backend)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread_name = name.clone();
    let handle = std::thread::Builder::new().name(thread_name).spawn(move || {
        if !force_epoll {
            match glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu)).name(&name).make() {
                Ok(ex) => {
                    let _ = tx.send(Backend::IoUring);
                    ex.run(task.run::<Glommio>());
                    return;
                }
                Err(e) => tracing::warn!(
                    thread = %name,
                    error = %e,
                    "io_uring is not available here (blocked by seccomp or an old kernel); falling back to epoll"
                ),
            }
        }
        let _ = tx.send(Backend::Epoll);
        if let Some(id) = core_affinity::get_core_ids().and_then(|ids| ids.get(cpu).copied()) {
            core_affinity::set_for_current(id);
        }
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(thread = %name, error = %e, "cannot start the epoll runtime");
                return;
            }
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, task.run::<Epoll>());
    })?;
    let backend = rx.recv().unwrap_or(Backend::Epoll);
    Ok((handle, backend))
}

/// CPU time the calling thread has used (its share of a core, read against wall time).
pub fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer for clock_gettime.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}
