//! The process's heap: jemalloc as the allocator, its figures for `/metrics`, and giving
//! freed memory back to the OS when the node goes idle.
//!
//! Why jemalloc and not glibc's malloc: the 1-hour soak (BENCHMARKS.md, "Soak") left the
//! node at 55 MiB once everyone had gone, against 15.5 MiB before, with every live object
//! back at 0 and `malloc_trim(0)` already run. glibc keeps per-thread arenas whose freed
//! chunks sit between long-lived ones (the media shards, the tokio workers and str0m's
//! buffers allocate on one thread and free on another), and trimming can only return the
//! top of each heap and whole free pages it can find. jemalloc groups allocations by size
//! class in small slabs, returns unused pages on its own after a decay time, and can be
//! asked to purge everything it does not use; it also counts what the application holds
//! (`stats.allocated`), which splits "live data" from "allocator retention" without a heap
//! profiler. The crate (`tikv-jemallocator`) is the one TiKV and many servers ship with.
//!
//! C code in the process (aws-lc's DTLS and SRTP contexts) still allocates with glibc's
//! malloc, so the idle release trims that too.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the allocator reports, in bytes; `None` where jemalloc is not the allocator.
#[derive(Debug, Clone, Copy)]
pub struct HeapStats {
    /// Bytes the application holds (live allocations).
    pub allocated: u64,
    /// Bytes in pages jemalloc has resident (live data, its metadata and dirty pages).
    pub resident: u64,
    /// Bytes in the pages that hold live allocations (active - allocated: fragmentation).
    pub active: u64,
    /// Bytes of jemalloc's own metadata.
    pub metadata: u64,
}

/// Reads jemalloc's counters (refreshing them first).
#[cfg(feature = "jemalloc")]
pub fn stats() -> Option<HeapStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some(HeapStats {
        allocated: stats::allocated::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
        active: stats::active::read().ok()? as u64,
        metadata: stats::metadata::read().ok()? as u64,
    })
}

/// jemalloc's full statistics as text (`malloc_stats_print`), for the debug log of an
/// idle node: where its resident memory sits, per size class.
#[cfg(feature = "jemalloc")]
pub fn report() -> Option<String> {
    let mut out = Vec::new();
    let mut opts = tikv_jemalloc_ctl::stats_print::Options::default();
    opts.skip_per_arena = true;
    opts.skip_mutex_statistics = true;
    tikv_jemalloc_ctl::stats_print::stats_print(&mut out, opts).ok()?;
    String::from_utf8(out).ok()
}

/// No jemalloc, no report.
#[cfg(not(feature = "jemalloc"))]
pub fn report() -> Option<String> {
    None
}

/// Reads jemalloc's counters; none without the `jemalloc` feature.
#[cfg(not(feature = "jemalloc"))]
pub fn stats() -> Option<HeapStats> {
    None
}

/// Bumped each time the node goes idle: every thread flushes its allocator cache once per
/// value it has not seen (see [`on_thread_idle`]).
static IDLE_GENERATION: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The last [`IDLE_GENERATION`] this thread flushed its cache for.
    static FLUSHED: Cell<u64> = const { Cell::new(0) };
}

/// Called by threads at rest (tokio workers when they park, media shards every 100 ms
/// while empty): after the node went idle, the first call on each thread returns the
/// thread's allocator cache to the arenas; every other call is an atomic load.
///
/// Why: jemalloc keeps a per-thread cache of freed objects. On an idle node after a
/// 200-participant churn those caches held 7.3 of the 8.6 MB the allocator counted as in
/// use, and pinned 20 MB of pages that purging could not return. Only the owning thread
/// can flush its cache, so each one does it on its way to sleep.
pub fn on_thread_idle() {
    let generation = IDLE_GENERATION.load(Ordering::Relaxed);
    if generation == 0 {
        return;
    }
    FLUSHED.with(|f| {
        if f.get() != generation {
            f.set(generation);
            flush_thread_cache();
        }
    });
}

/// First step of giving memory back once the node is idle: asks every thread to flush its
/// allocator cache as it next rests ([`on_thread_idle`]), this one now. Then, once they
/// have (a second is plenty: shards rest every 100 ms, tokio workers park at once), call
/// [`purge`].
pub fn flush_caches() {
    IDLE_GENERATION.fetch_add(1, Ordering::Relaxed);
    on_thread_idle();
}

/// Gives freed heap memory back to the OS: every jemalloc arena's unused pages, then
/// glibc's free chunks (C libraries). Returns whether anything was asked of an allocator.
pub fn purge() -> bool {
    let je = purge_jemalloc();
    let glibc = trim_glibc();
    je || glibc
}

#[cfg(feature = "jemalloc")]
#[allow(unsafe_code)]
fn flush_thread_cache() {
    const FLUSH: &[u8] = b"thread.tcache.flush\0";
    // SAFETY: as for the purge below: a NUL-terminated name and no buffers; it acts on
    // the calling thread's cache only.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            FLUSH.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

#[cfg(not(feature = "jemalloc"))]
fn flush_thread_cache() {}

#[cfg(feature = "jemalloc")]
#[allow(unsafe_code)]
fn purge_jemalloc() -> bool {
    // "arena.<MALLCTL_ARENAS_ALL>.purge" takes neither an old nor a new value, so the safe
    // wrappers (which always pass a value) cannot call it: jemalloc refuses a non-null
    // pointer for it with EPERM.
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: the name is NUL-terminated; no buffers are passed (all null, length 0), as
    // jemalloc's mallctl documents for this control; it takes the arenas' own locks.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        tracing::warn!(errno = rc, "jemalloc purge refused");
    }
    rc == 0
}

#[cfg(not(feature = "jemalloc"))]
fn purge_jemalloc() -> bool {
    false
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_glibc() -> bool {
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it takes no
    // pointer from us and is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_glibc() -> bool {
    false
}
