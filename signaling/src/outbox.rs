//! An ordered, bounded, at-least-once outbox to a JetStream stream.
//!
//! Used for everything studyroom publishes to NATS (focus events, room lifecycle events).
//! Why a queue of our own instead of firing `publish` and forgetting: async-nats buffers
//! while disconnected, but silently and without a bound we control, and a fire-and-forget
//! publish cannot tell us whether the server stored the message. Here every message is
//! published in order and its JetStream acknowledgement awaited; it leaves the queue only
//! once acknowledged, so a NATS restart delays messages but loses none. Past the bound the
//! oldest message is dropped, counted and logged — media and signaling never wait on NATS —
//! unless the outbox has a spill file (`spill.rs`, the focus events' outbox): then messages
//! past the bound are appended to the file and taken back, in order, as memory drains, so a
//! long outage costs disk, not events. Only a full spill file (`--focus-spill-max-bytes`)
//! drops, and then the newest message (the file is append-only).
//! Each message carries a `Nats-Msg-Id`, so a retry after a lost ack is not stored twice
//! (the stream's duplicate window).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::spill::{SYNC_AFTER, SpillFile};

/// One message waiting for NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Subject.
    pub subject: String,
    /// `Nats-Msg-Id` header (unique per message; used for de-duplication).
    pub msg_id: String,
    /// JSON body.
    pub body: Vec<u8>,
}

/// Memory first, then the spill file (every spilled message is newer than every one in memory).
#[derive(Default)]
struct Queue {
    mem: VecDeque<Message>,
    spill: Option<SpillFile>,
}

impl Queue {
    /// Memory empty: take the next batch back from the spill file.
    fn refill(&mut self, max: usize, what: &str) {
        if !self.mem.is_empty() {
            return;
        }
        let Some(spill) = self.spill.as_mut().filter(|s| !s.is_empty()) else {
            return;
        };
        match spill.take(max) {
            Ok(batch) => {
                self.mem.extend(batch);
                if spill.is_empty() {
                    info!(what, "NATS outbox: spill file replayed to the end");
                }
            }
            Err(e) => error!(what, "NATS outbox: cannot read back the spill file: {e}"),
        }
    }
}

/// The queue of one stream.
pub struct Outbox {
    /// What the queue carries (for logs).
    what: &'static str,
    /// Stream name.
    stream: &'static str,
    /// Stream subjects (wildcards).
    subjects: &'static str,
    max: usize,
    queue: Mutex<Queue>,
    notify: Notify,
    /// Messages acknowledged by JetStream.
    pub published: AtomicU64,
    /// Messages dropped because the queue was full.
    pub dropped: AtomicU64,
}

impl Outbox {
    /// A queue for stream `stream` (subjects `subjects`) holding at most `max` messages.
    pub fn new(
        what: &'static str,
        stream: &'static str,
        subjects: &'static str,
        max: usize,
    ) -> Self {
        Outbox {
            what,
            stream,
            subjects,
            max: max.max(1),
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Adds a spill file (and what it already holds: a previous run's backlog goes first).
    pub fn with_spill(self, spill: SpillFile) -> Self {
        if !spill.is_empty() {
            info!(
                what = self.what,
                path = %spill.path().display(),
                messages = spill.len(),
                "NATS outbox: replaying the spill file left by the previous run"
            );
        }
        self.queue.lock().expect("outbox lock").spill = Some(spill);
        self
    }

    /// Queue a message. Memory full: appended to the spill file if there is one (dropped,
    /// counted and logged when that is full too), else the oldest is dropped and counted.
    pub fn push(&self, m: Message) {
        self.push_at(m, Instant::now());
    }

    fn push_at(&self, m: Message, now: Instant) {
        let mut q = self.queue.lock().expect("outbox lock");
        let q = &mut *q;
        let spilling = q.spill.as_ref().is_some_and(|s| !s.is_empty());
        if !spilling && q.mem.len() < self.max {
            q.mem.push_back(m);
        } else if let Some(spill) = q.spill.as_mut() {
            match spill.append(&m, now) {
                Ok(()) => {
                    if !spilling {
                        warn!(
                            what = self.what,
                            max = self.max,
                            path = %spill.path().display(),
                            "NATS outbox: memory bound reached, spilling to file"
                        );
                    }
                    if let Err(e) = spill.sync_due(now, false) {
                        error!(what = self.what, "NATS outbox: {e}");
                    }
                }
                Err(e) => {
                    let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    warn!(
                        what = self.what,
                        dropped_total = n,
                        "NATS outbox: {e}: newest message dropped"
                    );
                }
            }
        } else {
            q.mem.pop_front();
            q.mem.push_back(m);
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(
                what = self.what,
                dropped_total = n,
                "NATS outbox full: oldest message dropped"
            );
        }
        self.notify.notify_one();
    }

    /// Messages waiting for NATS (memory and spill file).
    pub fn pending(&self) -> usize {
        let q = self.queue.lock().expect("outbox lock");
        q.mem.len() + q.spill.as_ref().map_or(0, SpillFile::len)
    }

    /// Messages waiting in the spill file, and its size in bytes.
    pub fn spilled(&self) -> (usize, u64) {
        let q = self.queue.lock().expect("outbox lock");
        q.spill.as_ref().map_or((0, 0), |s| (s.len(), s.bytes()))
    }

    /// Fsync the spill file's unsynced tail once it is due; call every [`SYNC_AFTER`].
    pub fn sync_spill(&self, now: Instant) {
        let mut q = self.queue.lock().expect("outbox lock");
        if let Some(Err(e)) = q.spill.as_mut().map(|s| s.sync_due(now, false)) {
            error!(what = self.what, "NATS outbox: {e}");
        }
    }

    /// Runs [`Outbox::sync_spill`] forever (a no-op without a spill file).
    pub async fn sync_loop(&self) {
        let mut tick = tokio::time::interval(SYNC_AFTER);
        loop {
            tick.tick().await;
            self.sync_spill(Instant::now());
        }
    }

    /// Graceful shutdown: what is still in memory is written to the front of the spill
    /// file (synced), so the next run replays everything pending, in order.
    pub fn persist(&self) {
        let mut q = self.queue.lock().expect("outbox lock");
        let q = &mut *q;
        let Some(spill) = q.spill.as_mut() else {
            return;
        };
        let front: Vec<Message> = q.mem.drain(..).collect();
        let n = front.len() + spill.len();
        match spill.rewrite_with_front(&front) {
            Ok(()) if n > 0 => info!(
                what = self.what,
                messages = n,
                path = %spill.path().display(),
                "NATS outbox: pending messages kept in the spill file for the next run"
            ),
            Ok(()) => {}
            Err(e) => error!(what = self.what, "NATS outbox: {e}: pending messages lost"),
        }
    }

    /// The queued messages, oldest first.
    #[cfg(test)]
    pub fn snapshot(&self) -> Vec<Message> {
        self.queue
            .lock()
            .expect("outbox lock")
            .mem
            .iter()
            .cloned()
            .collect()
    }

    /// The oldest pending message (taken back from the spill file when memory is empty).
    fn next_to_publish(&self) -> Option<Message> {
        let mut q = self.queue.lock().expect("outbox lock");
        q.refill(self.max, self.what);
        q.mem.front().cloned()
    }

    /// JetStream stored the message `msg_id` (the one [`Outbox::next_to_publish`] gave).
    fn acknowledged(&self, msg_id: &str) {
        let mut q = self.queue.lock().expect("outbox lock");
        // Only remove what was published (overflow may have dropped it already).
        if q.mem.front().is_some_and(|f| f.msg_id == msg_id) {
            q.mem.pop_front();
        }
        drop(q);
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    /// Publish queued messages to JetStream, in order, each acknowledged, forever.
    pub async fn run(&self, client: async_nats::Client) {
        let js = async_nats::jetstream::new(client);
        let mut stream_ready = false;
        loop {
            if !stream_ready {
                let cfg = async_nats::jetstream::stream::Config {
                    name: self.stream.into(),
                    subjects: vec![self.subjects.into()],
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                };
                match tokio::time::timeout(Duration::from_secs(5), js.get_or_create_stream(cfg))
                    .await
                {
                    Ok(Ok(_)) => {
                        stream_ready = true;
                        info!(what = self.what, "JetStream stream {} ready", self.stream);
                    }
                    Ok(Err(e)) => {
                        warn!(what = self.what, "stream {}: {e}", self.stream);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            let next = self.next_to_publish();
            let Some(m) = next else {
                self.notify.notified().await;
                continue;
            };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", m.msg_id.as_str());
            let acked = async {
                let ack = js
                    .publish_with_headers(m.subject.clone(), headers, m.body.clone().into())
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map_err(|e| e.to_string())
            };
            match tokio::time::timeout(Duration::from_secs(5), acked).await {
                Ok(Ok(_)) => self.acknowledged(&m.msg_id),
                Ok(Err(e)) => {
                    warn!(what = self.what, "not acknowledged, retrying: {e}");
                    stream_ready = !e.contains("no responders") && !e.contains("stream");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(_) => {
                    warn!(what = self.what, "acknowledgement timed out, retrying");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
}

/// A room name as one NATS subject token: room names may contain `.` (the subject
/// separator), which is written `%2E`; `%` itself is `%25`. Other room characters
/// (`[A-Za-z0-9_-]`) are valid in subjects as they are.
pub fn subject_token(room: &str) -> String {
    let mut s = String::with_capacity(room.len());
    for c in room.chars() {
        match c {
            '.' => s.push_str("%2E"),
            '%' => s.push_str("%25"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: usize) -> Message {
        Message {
            subject: "s".into(),
            msg_id: i.to_string(),
            body: vec![],
        }
    }

    #[test]
    fn bounded_drops_oldest_and_counts() {
        let o = Outbox::new("test", "S", "s.>", 3);
        for i in 0..5 {
            o.push(msg(i));
        }
        assert_eq!(o.pending(), 3);
        assert_eq!(o.dropped.load(Ordering::Relaxed), 2);
        let ids: Vec<_> = o.snapshot().into_iter().map(|m| m.msg_id).collect();
        assert_eq!(ids, ["2", "3", "4"]);
    }

    fn temp_spill(name: &str, max_bytes: u64) -> (std::path::PathBuf, SpillFile) {
        let p = std::env::temp_dir().join(format!(
            "studyroom-outbox-test-{}-{name}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let f = SpillFile::open(&p, max_bytes).unwrap();
        (p, f)
    }

    /// Publishes everything pending as the run loop does; returns the ids in order.
    fn drain(o: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(m) = o.next_to_publish() {
            o.acknowledged(&m.msg_id);
            out.push(m.msg_id);
        }
        out
    }

    #[test]
    fn past_the_bound_messages_spill_and_come_back_in_order() {
        let (p, f) = temp_spill("order", 1 << 20);
        let o = Outbox::new("test", "S", "s.>", 3).with_spill(f);
        let t0 = Instant::now();
        for i in 0..10 {
            o.push_at(msg(i), t0);
        }
        assert_eq!(o.pending(), 10);
        assert_eq!(o.spilled().0, 7);
        assert_eq!(o.dropped.load(Ordering::Relaxed), 0);
        // Two published, then more arrive while the spill still holds some: they queue
        // behind it, not in the free memory slots.
        for _ in 0..2 {
            let m = o.next_to_publish().unwrap();
            o.acknowledged(&m.msg_id);
        }
        o.push_at(msg(10), t0);
        let want: Vec<String> = (2..11).map(|i| i.to_string()).collect();
        assert_eq!(drain(&o), want);
        assert_eq!(o.pending(), 0);
        assert_eq!(o.spilled(), (0, 0));
        // Drained: new messages use memory again.
        o.push_at(msg(11), t0);
        assert_eq!(o.spilled().0, 0);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_full_spill_drops_the_newest_and_counts() {
        let (p, f) = temp_spill("full", 40);
        let o = Outbox::new("test", "S", "s.>", 2).with_spill(f);
        let t0 = Instant::now();
        for i in 0..6 {
            o.push_at(msg(i), t0);
        }
        // Each record is 12 + 1 + 1 bytes: two fit in 40 bytes.
        assert_eq!(o.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(drain(&o), ["0", "1", "2", "3"]);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn persist_then_reopen_replays_everything_pending_in_order() {
        let (p, f) = temp_spill("restart", 1 << 20);
        let o = Outbox::new("test", "S", "s.>", 4).with_spill(f);
        let t0 = Instant::now();
        for i in 0..9 {
            o.push_at(msg(i), t0);
        }
        let m = o.next_to_publish().unwrap();
        o.acknowledged(&m.msg_id);
        o.persist();
        drop(o);
        // The next run.
        let o =
            Outbox::new("test", "S", "s.>", 4).with_spill(SpillFile::open(&p, 1 << 20).unwrap());
        assert_eq!(o.pending(), 8);
        o.push_at(msg(9), t0);
        let want: Vec<String> = (1..10).map(|i| i.to_string()).collect();
        assert_eq!(drain(&o), want);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn room_names_become_one_subject_token() {
        assert_eq!(subject_token("exam-1"), "exam-1");
        assert_eq!(subject_token("math.101"), "math%2E101");
        assert!(!subject_token("a.b.c").contains('.'));
    }
}
