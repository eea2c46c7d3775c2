//! Room chat: a participant's `message` is checked (a string, trimmed, at most
//! [`TEXT_MAX_CHARS`] characters, control characters removed, rate-limited), HTML-escaped
//! once here so that every consumer (the join ack's history, the room push, NATS, the
//! store) carries the same display-safe text, then pushed to the room with its sender and
//! the server's time.
//!
//! Where things live (ARCHITECTURE.md, "Room chat"): the last 100 messages of a room are in
//! the node's `MemoryStore` (read by every join ack without waiting on anything); with
//! Redis they are also appended to the room's capped Redis list in the background, and a
//! node that starts hosting a room without local history reads that list once. Chat is
//! per token: the `chat` grant (default on) set to `false` means that participant neither
//! sends nor receives messages (the platform turns chat off for an exam by minting the
//! room's tokens so).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Longest message, in characters (Unicode scalar values) after trimming.
pub const TEXT_MAX_CHARS: usize = 2000;
/// Rate limit: at most this many messages per participant per window.
const RATE_MAX: usize = 5;
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Why a message was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `text` missing or not a string.
    NotText,
    /// Nothing left after trimming.
    Empty,
    /// Longer than [`TEXT_MAX_CHARS`] (the length given).
    TooLong(usize),
    /// Past the rate limit.
    RateLimited,
}

/// `&`, `<`, `>`, `"` and `'` as entities: safe as HTML text and inside attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The display text of a message payload's `text`: trimmed, control characters other
/// than newline and tab removed, checked for length, then escaped.
pub fn clean_text(text: Option<&Value>) -> Result<String, Refused> {
    let Some(Value::String(raw)) = text else {
        return Err(Refused::NotText);
    };
    let kept: String = raw
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    let t = kept.trim();
    if t.is_empty() {
        return Err(Refused::Empty);
    }
    let n = t.chars().count();
    if n > TEXT_MAX_CHARS {
        return Err(Refused::TooLong(n));
    }
    Ok(escape_html(t))
}

/// Chat bookkeeping of a node: rate limits and counters.
pub struct Chat {
    recent: Mutex<HashMap<(String, String), VecDeque<Instant>>>,
    next_id: AtomicU64,
    /// Messages accepted.
    pub sent: AtomicU64,
    /// Messages refused (bad input, too long, rate limit, chat off).
    pub refused: AtomicU64,
}

impl Default for Chat {
    fn default() -> Self {
        Chat {
            recent: Mutex::default(),
            // Random start: ids stay unique when a room moves between nodes.
            next_id: AtomicU64::new(fastrand::u64(1..1 << 40) << 16),
            sent: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }
}

impl Chat {
    /// Count one message of `pid` in `room` at `now` against the rate limit.
    pub fn admit(&self, room: &str, pid: &str, now: Instant) -> Result<(), Refused> {
        let mut g = self.recent.lock().expect("chat lock");
        let q = g.entry((room.to_owned(), pid.to_owned())).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
        {
            q.pop_front();
        }
        if q.len() >= RATE_MAX {
            return Err(Refused::RateLimited);
        }
        q.push_back(now);
        Ok(())
    }

    /// A participant left: forget its rate-limit window.
    pub fn forget(&self, room: &str, pid: &str) {
        self.recent
            .lock()
            .expect("chat lock")
            .remove(&(room.to_owned(), pid.to_owned()));
    }

    /// Count a refusal.
    pub fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The message object (`docs/protocol.md`, `ChatMessage`) for accepted, escaped `text`.
    pub fn message(&self, room: &str, from: Value, text: String, at_ms: u64) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.sent.fetch_add(1, Ordering::Relaxed);
        json!({ "id": format!("m{id:x}"), "room": room, "from": from, "text": text, "at": at_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_cleaned_bounded_and_escaped() {
        let t = |s: &str| clean_text(Some(&json!(s)));
        assert_eq!(t("  hi  \n"), Ok("hi".into()));
        assert_eq!(
            t("<b onclick='x'>&\"</b>"),
            Ok("&lt;b onclick=&#39;x&#39;&gt;&amp;&quot;&lt;/b&gt;".into())
        );
        assert_eq!(t("a\u{0}b\u{7}\tc\nd"), Ok("ab\tc\nd".into()));
        assert_eq!(t("   \n\t "), Err(Refused::Empty));
        assert_eq!(clean_text(Some(&json!(5))), Err(Refused::NotText));
        assert_eq!(clean_text(None), Err(Refused::NotText));
        // Characters, not bytes: 2 000 Hangul syllables (6 000 bytes) pass, 2 001 do not.
        assert!(t(&"가".repeat(TEXT_MAX_CHARS)).is_ok());
        assert_eq!(
            t(&"가".repeat(TEXT_MAX_CHARS + 1)),
            Err(Refused::TooLong(TEXT_MAX_CHARS + 1))
        );
        // Length is checked before escaping: 2 000 '<' are 2 000 characters.
        assert!(t(&"<".repeat(TEXT_MAX_CHARS)).is_ok());
    }

    #[test]
    fn rate_limit_is_per_participant_and_slides() {
        let c = Chat::default();
        let t0 = Instant::now();
        for _ in 0..RATE_MAX {
            assert!(c.admit("r", "P1", t0).is_ok());
        }
        assert_eq!(c.admit("r", "P1", t0), Err(Refused::RateLimited));
        assert!(c.admit("r", "P2", t0).is_ok(), "others are not limited");
        assert!(
            c.admit("r", "P1", t0 + RATE_WINDOW).is_ok(),
            "window passed"
        );
        c.forget("r", "P1");
        for _ in 0..RATE_MAX {
            assert!(c.admit("r", "P1", t0).is_ok());
        }
    }
}
