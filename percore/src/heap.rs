//! The C heap's trimming, tuned for loops that free a whole turn's datagrams at once.
//!
//! A core frees its datagrams (str0m allocates each one, about 1.1 KB) once the kernel has
//! them. When a run of such frees reaches the top of the heap, glibc's default (keep at most
//! 128 KiB free there) hands those pages back to the kernel, and the next turn faults them in
//! again, zero-filled. `bench --bin allocs`, whose loop frees in allocation order, measured
//! 0.11 page faults per forwarded packet that way and 0.001 with [`keep_freed_memory`].

/// Free bytes the heap may keep at its top (and at the top of each thread's arena) before
/// giving any back to the kernel.
pub const TRIM_THRESHOLD: usize = 64 << 20;

/// Makes the C heap keep up to [`TRIM_THRESHOLD`] of freed memory rather than return it to
/// the kernel after every turn. True if the allocator took the setting (glibc); false with
/// other C libraries. A Rust global allocator such as mimalloc is not affected.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let value = libc::c_int::try_from(TRIM_THRESHOLD).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes a malloc parameter; it is called before the cores
        // start, and glibc serialises it with its own arena locks in any case.
        unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, value) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Minor page faults of the whole process so far (pages the kernel had to map and zero).
pub fn minor_faults() -> u64 {
    faults_of(libc::RUSAGE_SELF)
}

/// Minor page faults of `who` (`RUSAGE_SELF` or `RUSAGE_THREAD`) so far.
fn faults_of(who: libc::c_int) -> u64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: r is a valid out-pointer.
    if unsafe { libc::getrusage(who, &mut r) } != 0 {
        return 0;
    }
    u64::try_from(r.ru_minflt).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread only (other tests run in parallel threads).
    fn thread_faults() -> u64 {
        faults_of(libc::RUSAGE_THREAD)
    }

    #[test]
    fn freed_batches_are_kept_rather_than_faulted_back_in() {
        assert!(keep_freed_memory(), "glibc takes the setting");
        // A turn's worth of datagram buffers, freed together, four times over.
        let turn = |n: usize| (0..n).map(|i| vec![i as u8; 1100]).collect::<Vec<_>>();
        drop(turn(2000));
        let before = thread_faults();
        for _ in 0..4 {
            drop(turn(2000));
        }
        // 2,000 buffers span about 540 pages; trimmed, each turn would fault them in again.
        let faults = thread_faults() - before;
        assert!(faults < 100, "{faults} page faults for four turns of freed buffers");
    }
}
