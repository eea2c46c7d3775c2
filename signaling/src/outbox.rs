//! An ordered, bounded, at-least-once outbox to a JetStream stream.
//!
//! Used for everything studyroom publishes to NATS (focus events, room lifecycle events).
//! Why a queue of our own instead of firing `publish` and forgetting: async-nats buffers
//! while disconnected, but silently and without a bound we control, and a fire-and-forget
//! publish cannot tell us whether the server stored the message. Here every message is
//! published in order and its JetStream acknowledgement awaited; it leaves the queue only
//! once acknowledged, so a NATS restart delays messages but loses none. Past the bound the
//! oldest message is dropped, counted and logged — media and signaling never wait on NATS.
//! Each message carries a `Nats-Msg-Id`, so a retry after a lost ack is not stored twice
//! (the stream's duplicate window).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{info, warn};

/// One message waiting for NATS.
#[derive(Debug, Clone)]
pub struct Message {
    /// Subject.
    pub subject: String,
    /// `Nats-Msg-Id` header (unique per message; used for de-duplication).
    pub msg_id: String,
    /// JSON body.
    pub body: Vec<u8>,
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
    queue: Mutex<VecDeque<Message>>,
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
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queue a message; drops (and counts) the oldest when full.
    pub fn push(&self, m: Message) {
        let mut q = self.queue.lock().expect("outbox lock");
        if q.len() >= self.max {
            q.pop_front();
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(
                what = self.what,
                dropped_total = n,
                "NATS outbox full: oldest message dropped"
            );
        }
        q.push_back(m);
        drop(q);
        self.notify.notify_one();
    }

    /// Messages waiting for NATS.
    pub fn pending(&self) -> usize {
        self.queue.lock().expect("outbox lock").len()
    }

    /// The queued messages, oldest first.
    #[cfg(test)]
    pub fn snapshot(&self) -> Vec<Message> {
        self.queue
            .lock()
            .expect("outbox lock")
            .iter()
            .cloned()
            .collect()
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
            let next = self.queue.lock().expect("outbox lock").front().cloned();
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
                Ok(Ok(_)) => {
                    let mut q = self.queue.lock().expect("outbox lock");
                    // Only remove what was published (overflow may have dropped it already).
                    if q.front().is_some_and(|f| f.msg_id == m.msg_id) {
                        q.pop_front();
                    }
                    drop(q);
                    self.published.fetch_add(1, Ordering::Relaxed);
                }
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

    #[test]
    fn room_names_become_one_subject_token() {
        assert_eq!(subject_token("exam-1"), "exam-1");
        assert_eq!(subject_token("math.101"), "math%2E101");
        assert!(!subject_token("a.b.c").contains('.'));
    }
}
