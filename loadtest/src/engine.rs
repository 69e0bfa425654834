//! Thread-per-core execution: one pinned thread per core, each with a current-thread tokio
//! runtime that owns its share of the connections, its counters and its histograms. Threads
//! share nothing on the media path; only signaling state (Janus feed ids) is behind a lock.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::peer::{Ctx, PeerError};
use crate::stats::{Counters, Sink};

/// What a worker thread returns: its measurements and the errors of its jobs.
pub struct ThreadResult {
    /// Measurements.
    pub sink: Sink,
    /// Failed jobs, as "name: error".
    pub errors: Vec<String>,
}

/// A running set of worker threads.
pub struct Workers {
    /// Live counters, one per thread.
    pub counters: Vec<Arc<Counters>>,
    handles: Vec<JoinHandle<ThreadResult>>,
}

impl Workers {
    /// Starts `threads` workers pinned to cores `first_core..` and gives job `i` to thread `i % threads`. `run` turns a job
    /// into a future on its thread's runtime.
    pub fn start<J, F, Fut>(threads: usize, first_core: usize, jobs: Vec<(String, J)>, epoch: Instant, run: F) -> std::io::Result<Self>
    where
        J: Send + 'static,
        F: Fn(J, Rc<Ctx>) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = Result<(), PeerError>> + 'static,
    {
        let threads = threads.max(1);
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let mut per: Vec<Vec<(String, J)>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, j) in jobs.into_iter().enumerate() {
            per[i % threads].push(j);
        }
        let mut counters = Vec::new();
        let mut handles = Vec::new();
        for (i, jobs) in per.into_iter().enumerate() {
            let c = Arc::new(Counters::default());
            counters.push(c.clone());
            let core = cores.get((first_core + i) % cores.len().max(1)).copied();
            let run = run.clone();
            let h = std::thread::Builder::new().name(format!("loadtest-{i}")).spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                let ctx = Rc::new(Ctx { counters: c, sink: RefCell::new(Sink::default()), epoch });
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return ThreadResult { sink: Sink::default(), errors: vec![format!("runtime: {e}")] },
                };
                let local = tokio::task::LocalSet::new();
                let errors = local.block_on(&rt, async {
                    let tasks: Vec<_> = jobs
                        .into_iter()
                        .map(|(name, job)| {
                            let fut = run(job, ctx.clone());
                            tokio::task::spawn_local(async move { fut.await.map_err(|e| format!("{name}: {e}")) })
                        })
                        .collect();
                    let mut errors = Vec::new();
                    for t in tasks {
                        match t.await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => errors.push(e),
                            Err(e) => errors.push(format!("task: {e}")),
                        }
                    }
                    errors
                });
                drop(local);
                let sink = std::mem::take(&mut *ctx.sink.borrow_mut());
                ThreadResult { sink, errors }
            })?;
            handles.push(h);
        }
        Ok(Self { counters, handles })
    }

    /// Whether every worker has finished.
    pub fn finished(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }

    /// Waits for the workers and merges their results.
    pub fn join(self) -> ThreadResult {
        let mut all = ThreadResult { sink: Sink::default(), errors: Vec::new() };
        for h in self.handles {
            match h.join() {
                Ok(r) => {
                    all.sink.merge(r.sink);
                    all.errors.extend(r.errors);
                }
                Err(_) => all.errors.push("a worker thread panicked".into()),
            }
        }
        all
    }
}
