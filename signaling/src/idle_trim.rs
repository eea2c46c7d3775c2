//! Give memory back to the OS when the node has gone idle.
//!
//! Why: a soak run (scripts/soak.py, BENCHMARKS.md "Soak") showed every live object going
//! back to 0 after the last participant left (transports, consumers, routes, timers,
//! tasks, fds) while RSS stayed near its peak (13 MiB idle before a 60-participant churn,
//! 64 MiB idle after). That memory is not leaked: it is glibc malloc keeping freed chunks
//! in its per-thread arenas for reuse (the media shards, the tokio workers and the
//! str0m/DTLS buffers allocate and free on different threads). `malloc_trim(0)` on that
//! idle process brought it to 30 MiB. An exam server sits idle between sessions, and
//! memory held by an idle node is memory a co-located node cannot use, so once the node
//! has emptied we trim once.
//!
//! When: the watcher looks every [`CHECK_EVERY`]; it trims on the first look that finds no
//! participant in the room store and no transport in the media core after a look that
//! found some (a transition busy -> idle), so an idle node trims once, and a busy node never
//! pays for a trim (it walks every arena under its lock).
//!
//! What is released and why jemalloc is the allocator: [`crate::heap`].

use std::time::Duration;

use crate::state::AppState;

/// How often the watcher looks at the node's occupancy.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long threads get to flush their allocator caches before the purge.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// Decides when to trim: on the busy -> idle transition, once. Sans-IO: fed occupancy.
#[derive(Debug, Default)]
pub struct IdleTrim {
    was_busy: bool,
}

impl IdleTrim {
    /// Feed one look (`busy`: anything live). Returns true when the caller should trim now.
    pub fn observe(&mut self, busy: bool) -> bool {
        let trim = self.was_busy && !busy;
        self.was_busy = busy;
        trim
    }
}

/// Runs forever: looks every [`CHECK_EVERY`], trims on busy -> idle.
pub async fn run(state: AppState) {
    let mut decide = IdleTrim::default();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        let busy = !state.store().rooms().is_empty() || state.sfu().counts().await.transports > 0;
        if decide.observe(busy) {
            let before = rss_kib();
            crate::heap::flush_caches();
            tokio::time::sleep(FLUSH_WAIT).await;
            let released = crate::heap::purge();
            tracing::info!(
                rss_kib_before = before,
                rss_kib_after = rss_kib(),
                released,
                "node idle: returned freed heap memory to the OS (jemalloc purge, malloc_trim)"
            );
            if tracing::enabled!(target: "studyroom::heap", tracing::Level::DEBUG)
                && let Some(r) = crate::heap::report()
            {
                tracing::debug!(target: "studyroom::heap", "allocator statistics at idle:\n{r}");
            }
        }
    }
}

/// Resident set size from /proc (KiB), for the log line; 0 when unreadable.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::IdleTrim;

    #[test]
    fn trims_once_on_busy_to_idle() {
        let mut d = IdleTrim::default();
        assert!(
            !d.observe(false),
            "a node idle from the start has nothing to give back"
        );
        assert!(!d.observe(true));
        assert!(!d.observe(true));
        assert!(d.observe(false), "the last participant left");
        assert!(!d.observe(false), "once per idle period");
        assert!(!d.observe(true));
        assert!(d.observe(false));
    }
}
