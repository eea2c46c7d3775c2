//! The outbox's overflow on disk: an append-only file of messages waiting for NATS.
//!
//! Why: a NATS outage longer than the in-memory bound (`--focus-queue-max`) used to drop the
//! oldest focus events, and a proctor's record of an exam must not have holes. Past the bound
//! the outbox appends messages here instead, and takes them back, in order, as NATS
//! acknowledges what is in memory (see `outbox.rs`). The file survives a restart: a new
//! process replays whatever it holds before anything newer.
//!
//! Format: records back to back, each `u32 LE subject length, u32 LE id length, u32 LE body
//! length`, then the three byte strings. A record cut short by a crash mid-write is a torn
//! tail: it is dropped (truncated) when the file is opened.
//!
//! Durability: writes go to the page cache at once; `fsync` (`sync_data`) is batched — when
//! [`SYNC_EVERY`] records are unsynced or the oldest unsynced one is [`SYNC_AFTER`] old (time is
//! passed in; the outbox calls [`SpillFile::sync_due`] from its loop). A crash of the machine
//! (not of the process) loses at most that batch.
//!
//! Reading back moves a read offset; once everything has been read the file is truncated to
//! empty. A process killed between reading back and NATS acknowledging replays those records
//! again after the restart: JetStream's duplicate window (`Nats-Msg-Id`, 2 minutes) and the
//! events' ids catch those. A graceful shutdown rewrites the file as exactly what is pending
//! ([`SpillFile::rewrite_with_front`]), so nothing is replayed twice.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::outbox::Message;

/// Sync after this many unsynced records.
pub const SYNC_EVERY: usize = 64;
/// Sync once the oldest unsynced record is this old.
pub const SYNC_AFTER: Duration = Duration::from_millis(200);
/// A record larger than this is corrupt (bodies are small JSON objects).
const MAX_FIELD: u32 = 1 << 20;

/// Errors of the spill file.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// The file would pass `--focus-spill-max-bytes`.
    #[error("spill file full ({max} bytes)")]
    Full {
        /// The bound.
        max: u64,
    },
    /// Reading or writing failed.
    #[error("spill file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// The spill file of one outbox.
pub struct SpillFile {
    path: PathBuf,
    file: File,
    /// Offset of the first record not yet taken back.
    read_at: u64,
    /// End of the last complete record.
    end: u64,
    /// Records in `read_at..end`.
    records: usize,
    max_bytes: u64,
    unsynced: usize,
    oldest_unsynced: Option<Instant>,
}

impl SpillFile {
    /// Opens (or creates) the file at `path`; counts the complete records it holds and
    /// truncates a torn tail.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, SpillError> {
        let io = |source| SpillError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut end = 0usize;
        let mut records = 0usize;
        while let Some((_, len)) = decode(&bytes[end..]) {
            end += len;
            records += 1;
        }
        if end != bytes.len() {
            file.set_len(end as u64).map_err(io)?;
        }
        Ok(SpillFile {
            path: path.to_owned(),
            file,
            read_at: 0,
            end: end as u64,
            records,
            max_bytes,
            unsynced: 0,
            oldest_unsynced: None,
        })
    }

    fn io(&self, source: io::Error) -> SpillError {
        SpillError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records waiting in the file.
    pub fn len(&self) -> usize {
        self.records
    }

    /// True when no record waits in the file.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes the file occupies.
    pub fn bytes(&self) -> u64 {
        self.end
    }

    /// Appends `m` (synced later, see [`SpillFile::sync_due`]).
    pub fn append(&mut self, m: &Message, now: Instant) -> Result<(), SpillError> {
        let rec = encode(m);
        if self.end + rec.len() as u64 > self.max_bytes {
            return Err(SpillError::Full {
                max: self.max_bytes,
            });
        }
        self.file
            .seek(SeekFrom::Start(self.end))
            .and_then(|_| self.file.write_all(&rec))
            .map_err(|e| self.io(e))?;
        self.end += rec.len() as u64;
        self.records += 1;
        self.unsynced += 1;
        self.oldest_unsynced.get_or_insert(now);
        Ok(())
    }

    /// Syncs when the batch is due at `now` (or `force`). Returns whether it synced.
    pub fn sync_due(&mut self, now: Instant, force: bool) -> Result<bool, SpillError> {
        let due = self.unsynced > 0
            && (force
                || self.unsynced >= SYNC_EVERY
                || self
                    .oldest_unsynced
                    .is_some_and(|t| now.saturating_duration_since(t) >= SYNC_AFTER));
        if !due {
            return Ok(false);
        }
        self.file.sync_data().map_err(|e| self.io(e))?;
        self.unsynced = 0;
        self.oldest_unsynced = None;
        Ok(true)
    }

    /// Takes back up to `n` of the oldest records, in order. Truncates the file once all
    /// were taken.
    pub fn take(&mut self, n: usize) -> Result<Vec<Message>, SpillError> {
        let mut out = Vec::new();
        if n == 0 || self.records == 0 {
            return Ok(out);
        }
        // Read in chunks; records are small.
        let mut buf = Vec::new();
        let mut at = self.read_at;
        while out.len() < n && at < self.end {
            let want = (self.end - at).min(256 * 1024) as usize;
            let mut chunk = vec![0u8; want];
            self.file
                .seek(SeekFrom::Start(at))
                .and_then(|_| self.file.read_exact(&mut chunk))
                .map_err(|e| self.io(e))?;
            buf.extend_from_slice(&chunk);
            at += want as u64;
            let mut used = 0usize;
            while out.len() < n {
                let Some((m, len)) = decode(&buf[used..]) else {
                    break;
                };
                out.push(m);
                used += len;
            }
            self.read_at += used as u64;
            buf.drain(..used);
        }
        self.records -= out.len();
        if self.records == 0 {
            self.clear()?;
        }
        Ok(out)
    }

    fn clear(&mut self) -> Result<(), SpillError> {
        self.file.set_len(0).map_err(|e| self.io(e))?;
        self.read_at = 0;
        self.end = 0;
        self.records = 0;
        self.unsynced = 0;
        self.oldest_unsynced = None;
        self.file.sync_data().map_err(|e| self.io(e))
    }

    /// Rewrites the file as `front` followed by the records still in it, synced (a
    /// temporary file renamed over it). For a graceful shutdown: `front` is the outbox's
    /// memory, so the file becomes exactly what is pending, in order.
    pub fn rewrite_with_front(&mut self, front: &[Message]) -> Result<(), SpillError> {
        let rest = self.take(usize::MAX)?;
        let tmp = self.path.with_extension("tmp");
        let write = || -> io::Result<File> {
            let mut f = File::create(&tmp)?;
            for m in front.iter().chain(rest.iter()) {
                f.write_all(&encode(m))?;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            OpenOptions::new().read(true).write(true).open(&self.path)
        };
        let file = write().map_err(|e| self.io(e))?;
        let reopened = SpillFile::open(&self.path, u64::MAX)?;
        self.file = file;
        self.read_at = 0;
        self.end = reopened.end;
        self.records = reopened.records;
        self.unsynced = 0;
        self.oldest_unsynced = None;
        Ok(())
    }
}

fn encode(m: &Message) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + m.subject.len() + m.msg_id.len() + m.body.len());
    for len in [m.subject.len(), m.msg_id.len(), m.body.len()] {
        v.extend_from_slice(&(len as u32).to_le_bytes());
    }
    v.extend_from_slice(m.subject.as_bytes());
    v.extend_from_slice(m.msg_id.as_bytes());
    v.extend_from_slice(&m.body);
    v
}

/// One record from the front of `b` and its length; `None` when `b` holds no complete,
/// well-formed record.
fn decode(b: &[u8]) -> Option<(Message, usize)> {
    let field = |i: usize| -> Option<u32> {
        let x = u32::from_le_bytes(b.get(i * 4..i * 4 + 4)?.try_into().ok()?);
        (x <= MAX_FIELD).then_some(x)
    };
    let (s, i, n) = (field(0)? as usize, field(1)? as usize, field(2)? as usize);
    let total = 12 + s + i + n;
    let rec = b.get(12..total)?;
    let subject = String::from_utf8(rec[..s].to_vec()).ok()?;
    let msg_id = String::from_utf8(rec[s..s + i].to_vec()).ok()?;
    Some((
        Message {
            subject,
            msg_id,
            body: rec[s + i..].to_vec(),
        },
        total,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "studyroom-spill-test-{}-{name}-{}",
            std::process::id(),
            fastrand::u64(..)
        ))
    }

    fn msg(i: usize) -> Message {
        Message {
            subject: format!("studyroom.proctoring.r{i}.focus"),
            msg_id: format!("id-{i}"),
            body: format!("{{\"n\":{i},\"reason\":\"ü\"}}").into_bytes(),
        }
    }

    #[test]
    fn appends_take_back_in_order_and_empty_the_file() {
        let p = temp_path("order");
        let now = Instant::now();
        let mut f = SpillFile::open(&p, 1 << 20).unwrap();
        for i in 0..10 {
            f.append(&msg(i), now).unwrap();
        }
        assert_eq!(f.len(), 10);
        let a = f.take(4).unwrap();
        assert_eq!(
            a.iter().map(|m| m.msg_id.as_str()).collect::<Vec<_>>(),
            ["id-0", "id-1", "id-2", "id-3"]
        );
        f.append(&msg(10), now).unwrap();
        let b = f.take(100).unwrap();
        assert_eq!(b.len(), 7);
        assert_eq!(b[0], msg(4));
        assert_eq!(b[6], msg(10));
        assert!(f.is_empty());
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            0,
            "truncated once drained"
        );
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_reopened_file_replays_and_a_torn_tail_is_dropped() {
        let p = temp_path("reopen");
        let now = Instant::now();
        {
            let mut f = SpillFile::open(&p, 1 << 20).unwrap();
            for i in 0..3 {
                f.append(&msg(i), now).unwrap();
            }
            f.sync_due(now, true).unwrap();
        }
        // A crash mid-write: half a record at the end.
        let mut raw = std::fs::read(&p).unwrap();
        let torn = encode(&msg(3));
        raw.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&p, &raw).unwrap();
        let mut f = SpillFile::open(&p, 1 << 20).unwrap();
        assert_eq!(f.len(), 3);
        f.append(&msg(4), now).unwrap();
        let all = f.take(10).unwrap();
        assert_eq!(all, vec![msg(0), msg(1), msg(2), msg(4)]);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn bounded_by_bytes() {
        let p = temp_path("full");
        let one = encode(&msg(0)).len() as u64;
        let mut f = SpillFile::open(&p, one * 2).unwrap();
        let now = Instant::now();
        f.append(&msg(0), now).unwrap();
        f.append(&msg(1), now).unwrap();
        assert!(matches!(
            f.append(&msg(2), now),
            Err(SpillError::Full { .. })
        ));
        assert_eq!(f.len(), 2);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn sync_is_batched_by_count_and_age() {
        let p = temp_path("sync");
        let t0 = Instant::now();
        let mut f = SpillFile::open(&p, 1 << 20).unwrap();
        assert!(!f.sync_due(t0, false).unwrap(), "nothing to sync");
        f.append(&msg(0), t0).unwrap();
        assert!(!f.sync_due(t0 + SYNC_AFTER / 2, false).unwrap());
        assert!(f.sync_due(t0 + SYNC_AFTER, false).unwrap());
        for i in 0..SYNC_EVERY {
            f.append(&msg(i), t0 + SYNC_AFTER).unwrap();
        }
        assert!(
            f.sync_due(t0 + SYNC_AFTER, false).unwrap(),
            "a full batch syncs at once"
        );
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn rewrite_puts_memory_first() {
        let p = temp_path("rewrite");
        let now = Instant::now();
        let mut f = SpillFile::open(&p, 1 << 20).unwrap();
        f.append(&msg(5), now).unwrap();
        f.append(&msg(6), now).unwrap();
        let _ = f.take(1).unwrap();
        f.rewrite_with_front(&[msg(1), msg(2)]).unwrap();
        drop(f);
        let mut g = SpillFile::open(&p, 1 << 20).unwrap();
        assert_eq!(g.take(10).unwrap(), vec![msg(1), msg(2), msg(6)]);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn decode_refuses_garbage() {
        assert!(decode(&[0xff; 12]).is_none());
        assert!(decode(&[]).is_none());
        assert!(decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]).is_none());
    }
}
