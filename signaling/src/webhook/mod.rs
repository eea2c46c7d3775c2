//! The audit-log webhook: every focus event is POSTed, signed, to the platform's audit
//! service (`--audit-webhook-url`, several allowed), beside the JetStream stream.
//!
//! Why a webhook as well as NATS: the platform's audit log is an HTTP service; it should
//! not need a JetStream consumer to learn that a learner left the exam tab.
//!
//! Layers: [`queue`] decides (which event goes where next, in order per room, when a failed
//! one is retried; sans-IO, time passed in), [`spool`] remembers (an append-only file, so
//! a restart loses nothing), and this module drives: [`Webhook::push`] writes a new event
//! to the spool *before* the learner's `focus` ack, and [`Webhook::run`] sends what the
//! queue says is due with reqwest, reports results back and marks finished events in the
//! spool. One `std::sync::Mutex` guards queue and spool; it is held for a few
//! microseconds (one `write` call at most), never across an await.
//!
//! Wire contract (docs/events.md, "Audit-log webhook"): body = the NATS focus JSON plus
//! `id`; headers `X-Studyroom-Event-Id`, `X-Studyroom-Timestamp` (unix seconds of this
//! attempt) and `X-Studyroom-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.

pub mod queue;
pub mod spool;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use queue::{Attempt, Backoff, DeliveryQueue, Outcome, Pending, Resolution};
use spool::Spool;

/// Requests in flight per endpoint at most (one per room at a time).
const MAX_IN_FLIGHT: usize = 16;
/// Delay after the first failed try.
const BACKOFF_BASE_MS: u64 = 500;
/// Events kept in memory when no spool file is configured.
const MEMORY_MAX_EVENTS: usize = 100_000;

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No or a too short secret.
    #[error(
        "--audit-webhook-secret (STUDYROOM_AUDIT_WEBHOOK_SECRET) of at least 16 characters is required with --audit-webhook-url"
    )]
    Secret,
    /// A URL that is not http(s).
    #[error("--audit-webhook-url {0}: expected an http:// or https:// URL")]
    Url(String),
    /// The spool file could not be opened or rewritten.
    #[error("audit webhook spool {path}: {source}")]
    Spool {
        /// The spool file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("audit webhook HTTP client: {0}")]
    Client(String),
}

/// Settings (from the `--audit-webhook-*` flags).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Receivers; each gets every event.
    pub urls: Vec<String>,
    /// HMAC key.
    pub secret: String,
    /// Spool file (None: memory only, lost on restart).
    pub spool: Option<PathBuf>,
    /// Spool bound in bytes.
    pub spool_max_bytes: u64,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Largest retry delay.
    pub max_backoff: Duration,
}

/// Delivery counters (`studyroom_webhook_deliveries_total{result}`).
#[derive(Default)]
pub struct Counters {
    /// 2xx.
    pub delivered: AtomicU64,
    /// Refused (4xx): given up.
    pub rejected: AtomicU64,
    /// Failed tries that will be retried (5xx, timeouts, connection errors).
    pub retried: AtomicU64,
    /// Dropped because the spool bound was reached.
    pub dropped: AtomicU64,
}

struct Core {
    queue: DeliveryQueue,
    spool: Option<Spool>,
    next_seq: u64,
    /// Memory-only mode: events in order, for the bound.
    memory: std::collections::VecDeque<Arc<Pending>>,
}

/// The webhook sink of one node.
pub struct Webhook {
    core: Mutex<Core>,
    notify: Notify,
    urls: Vec<String>,
    secret: Vec<u8>,
    timeout: Duration,
    /// Delivery counters.
    pub counters: Counters,
}

/// Unix milliseconds now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The signature header value for `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256=");
    for b in tag {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A new event id: `fe_` and 128 random bits in hex (unique without coordination between
/// nodes or restarts).
fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        b = fastrand::u128(..).to_le_bytes();
    }
    let mut s = String::from("fe_");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

impl Webhook {
    /// Check the settings, open the spool and queue what it still owes.
    pub fn new(cfg: WebhookConfig) -> Result<Webhook, WebhookError> {
        if cfg.secret.len() < 16 {
            return Err(WebhookError::Secret);
        }
        for u in &cfg.urls {
            match reqwest::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") && p.has_host() => {}
                _ => return Err(WebhookError::Url(u.clone())),
            }
        }
        let backoff = Backoff {
            base_ms: BACKOFF_BASE_MS,
            cap_ms: (cfg.max_backoff.as_millis() as u64).max(BACKOFF_BASE_MS),
        };
        let mut queue = DeliveryQueue::new(cfg.urls.len(), backoff, MAX_IN_FLIGHT);
        let mut next_seq = 0;
        let spool = match &cfg.spool {
            Some(path) => {
                let keys = cfg.urls.iter().map(|u| spool::endpoint_key(u)).collect();
                let (s, loaded) =
                    Spool::open(path, keys, cfg.spool_max_bytes, 0).map_err(|source| {
                        WebhookError::Spool {
                            path: path.clone(),
                            source,
                        }
                    })?;
                if loaded.unreadable_lines > 0 {
                    warn!(
                        lines = loaded.unreadable_lines,
                        "audit webhook spool: unreadable lines skipped (a write cut short by a crash)"
                    );
                }
                info!(
                    pending = loaded.events.len(),
                    path = %path.display(),
                    "audit webhook spool opened"
                );
                for (ev, eps) in loaded.events {
                    next_seq = next_seq.max(ev.seq + 1);
                    queue.push(ev, eps);
                }
                Some(s)
            }
            None => {
                warn!(
                    "audit webhook without --audit-webhook-spool: events waiting for delivery are lost on restart"
                );
                None
            }
        };
        // Fail at startup, not at the first event.
        Self::client(cfg.timeout)?;
        Ok(Webhook {
            core: Mutex::new(Core {
                queue,
                spool,
                next_seq,
                memory: Default::default(),
            }),
            notify: Notify::new(),
            urls: cfg.urls,
            secret: cfg.secret.into_bytes(),
            timeout: cfg.timeout,
            counters: Counters::default(),
        })
    }

    fn client(timeout: Duration) -> Result<reqwest::Client, WebhookError> {
        // rustls without a built-in provider: use ring, the provider the TURN relay
        // already uses (an error means one is installed already, which is as good).
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("studyroom/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))
    }

    /// Queue one event of `room`: `fields` (a JSON object) plus a new `id`. On disk before
    /// it returns (when a spool is configured). Returns the id.
    pub fn push(&self, room: &str, created_ms: u64, fields: serde_json::Value) -> String {
        let id = new_id();
        let mut body = serde_json::Map::new();
        body.insert("id".into(), id.clone().into());
        if let serde_json::Value::Object(f) = fields {
            body.extend(f);
        }
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut g = self.core.lock().expect("webhook lock");
        let core = &mut *g;
        let ev = Arc::new(Pending {
            seq: core.next_seq,
            id: id.clone(),
            room: room.to_owned(),
            created_ms,
            body: Arc::from(body),
        });
        core.next_seq += 1;
        let mut dropped = Vec::new();
        match core.spool.as_mut() {
            Some(s) => match s.append_event(&ev) {
                Ok(d) => dropped = d,
                Err(e) => warn!(id = %id, "audit webhook spool write failed (kept in memory): {e}"),
            },
            None => {
                core.memory.push_back(ev.clone());
                if core.memory.len() > MEMORY_MAX_EVENTS
                    && let Some(old) = core.memory.pop_front()
                {
                    dropped.push(old);
                }
            }
        }
        for old in &dropped {
            core.queue.drop_event(old);
        }
        core.queue.push(ev, 0..self.urls.len());
        drop(g);
        if !dropped.is_empty() {
            let n = self
                .counters
                .dropped
                .fetch_add(dropped.len() as u64, Ordering::Relaxed)
                + dropped.len() as u64;
            warn!(
                dropped = dropped.len(),
                dropped_total = n,
                "audit webhook spool full: oldest undelivered events dropped (--audit-webhook-spool-max-bytes)"
            );
        }
        self.notify.notify_one();
        id
    }

    /// Deliveries waiting (per endpoint).
    pub fn pending(&self) -> usize {
        self.core.lock().expect("webhook lock").queue.pending()
    }

    /// Age of the oldest waiting event, in seconds.
    pub fn oldest_pending_secs(&self) -> f64 {
        let oldest = self
            .core
            .lock()
            .expect("webhook lock")
            .queue
            .oldest_created_ms();
        oldest.map_or(0.0, |t| now_ms().saturating_sub(t) as f64 / 1000.0)
    }

    /// Deliver forever: send what is due, sleep until the next retry or a new event.
    pub async fn run(self: Arc<Self>) {
        let client = match Self::client(self.timeout) {
            Ok(c) => c,
            Err(e) => {
                warn!("{e}");
                return;
            }
        };
        let mut last_sync = tokio::time::Instant::now();
        loop {
            let now = now_ms();
            let (attempts, wake_at) = {
                let mut g = self.core.lock().expect("webhook lock");
                let a = g.queue.poll_attempts(now);
                (a, g.queue.poll_timeout())
            };
            for a in attempts {
                let me = self.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let outcome = me.send(&client, &a).await;
                    me.finish(&a, outcome);
                });
            }
            if last_sync.elapsed() >= Duration::from_secs(1) {
                let mut g = self.core.lock().expect("webhook lock");
                if let Some(s) = g.spool.as_mut()
                    && let Err(e) = s.sync()
                {
                    warn!("audit webhook spool fsync: {e}");
                }
                last_sync = tokio::time::Instant::now();
            }
            let sleep_ms = wake_at.map_or(1_000, |t| t.saturating_sub(now_ms()).clamp(1, 1_000));
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
            }
        }
    }

    async fn send(&self, client: &reqwest::Client, a: &Attempt) -> Outcome {
        let ts = now_ms() / 1000;
        let url = &self.urls[a.endpoint];
        let r = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-studyroom-event-id", &a.event.id)
            .header("x-studyroom-timestamp", ts.to_string())
            .header(
                "x-studyroom-signature",
                signature(&self.secret, ts, &a.event.body),
            )
            .header("x-studyroom-attempt", a.try_no.to_string())
            .body(a.event.body.to_vec())
            .send()
            .await;
        match r {
            Ok(resp) => {
                let status = resp.status();
                let outcome = classify(status.as_u16());
                match outcome {
                    Outcome::Delivered => {
                        debug!(id = %a.event.id, endpoint = a.endpoint, "audit webhook delivered")
                    }
                    Outcome::Rejected => warn!(
                        id = %a.event.id,
                        room = %a.event.room,
                        endpoint = a.endpoint,
                        status = status.as_u16(),
                        "audit webhook refused the event: given up (not retried)"
                    ),
                    Outcome::Retry => warn!(
                        id = %a.event.id,
                        room = %a.event.room,
                        endpoint = a.endpoint,
                        status = status.as_u16(),
                        attempt = a.try_no,
                        "audit webhook failed: will retry"
                    ),
                }
                outcome
            }
            Err(e) => {
                // Connection refused and timeouts repeat every backoff while a receiver is
                // down: warn on the first failure of an event, then quietly.
                if a.try_no == 1 {
                    warn!(id = %a.event.id, room = %a.event.room, endpoint = a.endpoint, "audit webhook unreachable, will retry: {e}");
                } else {
                    debug!(id = %a.event.id, attempt = a.try_no, "audit webhook unreachable: {e}");
                }
                Outcome::Retry
            }
        }
    }

    fn finish(&self, a: &Attempt, outcome: Outcome) {
        let c = match outcome {
            Outcome::Delivered => &self.counters.delivered,
            Outcome::Rejected => &self.counters.rejected,
            Outcome::Retry => &self.counters.retried,
        };
        c.fetch_add(1, Ordering::Relaxed);
        let mut g = self.core.lock().expect("webhook lock");
        let core = &mut *g;
        let r = core.queue.handle_result(a, outcome, now_ms());
        if let Resolution::Done { all } = r {
            if a.try_no > 1 {
                info!(id = %a.event.id, attempts = a.try_no, "audit webhook delivered after retries");
            }
            match core.spool.as_mut() {
                Some(s) => {
                    if let Err(e) = s.mark_done(&a.event.id, a.endpoint, all) {
                        warn!(id = %a.event.id, "audit webhook spool write failed: {e}");
                    }
                }
                None if all => core.memory.retain(|e| e.id != a.event.id),
                None => {}
            }
        }
        drop(g);
        self.notify.notify_one();
    }
}

/// What an HTTP status means for delivery: 2xx delivered; 408, 429 and 5xx retried (the
/// receiver is overloaded or broken, not the event); everything else refused for good.
pub fn classify(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry,
        _ => Outcome::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Checked against `printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret`.
        assert_eq!(
            signature(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "sha256=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(204), Outcome::Delivered);
        assert_eq!(classify(400), Outcome::Rejected);
        assert_eq!(classify(401), Outcome::Rejected);
        assert_eq!(classify(302), Outcome::Rejected);
        assert_eq!(classify(408), Outcome::Retry);
        assert_eq!(classify(429), Outcome::Retry);
        assert_eq!(classify(503), Outcome::Retry);
    }

    #[test]
    fn ids_are_unique() {
        let a = new_id();
        assert!(a.starts_with("fe_") && a.len() == 35);
        assert_ne!(a, new_id());
    }
}
