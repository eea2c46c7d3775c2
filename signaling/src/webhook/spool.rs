//! The spool: events waiting for the audit webhook, on disk, so a restart (a crash, a
//! `kill -9`, a deploy) loses none of them.
//!
//! Why a file of our own and not an embedded database: the access pattern is an append
//! log (event in, "done for endpoint X" in) read once at startup, a few hundred bytes per
//! event and a few events per learner per minute. One append-only JSON-lines file does
//! that with nothing to tune, and a human can read it.
//!
//! Records, one per line: `{"e": id, "room", "at", "body"}` (an event, `body` the exact
//! bytes that are signed and sent) and `{"d": id, "ep": key}` (delivered to or refused by
//! the endpoint whose URL hashes to `key`). At startup the file is read, events every
//! current endpoint is done with are forgotten, and the rest is rewritten compactly
//! (temporary file, fsync, rename). A line cut short by a crash (the last one) is ignored.
//!
//! Bound: the file never grows past `max_bytes`. When an append would cross it, the file
//! is compacted first; if the live events alone do not leave room, the oldest are dropped
//! (returned to the caller, which counts and logs them).
//!
//! One process per spool: `open` takes an exclusive lock on `<path>.lock` (held until the
//! spool is dropped; the kernel releases it when the process dies, `kill -9` included), so
//! a second studyroom pointed at the same file refuses to start instead of sending every
//! event twice.
//!
//! Durability: every record is written with one `write` call, so it is in the kernel once
//! `append_*` returns and survives the process dying; `sync` (called by the driver about
//! once a second) flushes it to the disk against a power loss.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::queue::Pending;

/// Compaction also runs when the file is this big and mostly finished records.
const COMPACT_MIN_BYTES: u64 = 1 << 20;

/// An endpoint's key in the spool: the first 8 bytes of SHA-256 of its URL, in hex (the
/// URL itself may carry credentials).
pub fn endpoint_key(url: &str) -> String {
    let d = Sha256::digest(url.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Serialize, Deserialize)]
struct EventRecord<'a> {
    e: std::borrow::Cow<'a, str>,
    room: std::borrow::Cow<'a, str>,
    at: u64,
    body: std::borrow::Cow<'a, str>,
}

#[derive(Serialize, Deserialize)]
struct DoneRecord<'a> {
    d: std::borrow::Cow<'a, str>,
    ep: std::borrow::Cow<'a, str>,
}

struct Live {
    ev: Arc<Pending>,
    /// Endpoint keys that are done with it.
    done: Vec<String>,
    /// Bytes its records take in a compacted file.
    bytes: u64,
}

/// What the spool found at startup.
pub struct Loaded {
    /// Events still owed to some endpoint, oldest first, with the endpoint indexes that
    /// still need them.
    pub events: Vec<(Arc<Pending>, Vec<usize>)>,
    /// Lines that could not be read (a torn last line after a crash, or damage).
    pub unreadable_lines: usize,
}

/// The on-disk spool (see the module docs).
pub struct Spool {
    path: PathBuf,
    file: File,
    max_bytes: u64,
    file_bytes: u64,
    live_bytes: u64,
    live: BTreeMap<u64, Live>,
    by_id: HashMap<String, u64>,
    endpoints: Vec<String>,
    dirty: bool,
    /// Held for the spool's life (see the module docs).
    _lock: File,
}

fn event_line(ev: &Pending) -> Vec<u8> {
    let mut line = serde_json::to_vec(&EventRecord {
        e: ev.id.as_str().into(),
        room: ev.room.as_str().into(),
        at: ev.created_ms,
        body: String::from_utf8_lossy(&ev.body),
    })
    .unwrap_or_default();
    line.push(b'\n');
    line
}

fn done_line(id: &str, ep: &str) -> Vec<u8> {
    let mut line = serde_json::to_vec(&DoneRecord {
        d: id.into(),
        ep: ep.into(),
    })
    .unwrap_or_default();
    line.push(b'\n');
    line
}

impl Spool {
    /// Open (or create) the spool at `path` for endpoints with keys `endpoints`; returns
    /// what is still owed. The first event read gets sequence number `first_seq`.
    pub fn open(
        path: &Path,
        endpoints: Vec<String>,
        max_bytes: u64,
        first_seq: u64,
    ) -> io::Result<(Spool, Loaded)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        if let Err(e) = lock.try_lock() {
            return Err(match e {
                std::fs::TryLockError::WouldBlock => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "in use by another process (one studyroom per spool file)",
                ),
                std::fs::TryLockError::Error(e) => e,
            });
        }
        let mut order: Vec<Arc<Pending>> = Vec::new();
        let mut done: HashMap<String, HashSet<String>> = HashMap::new();
        let mut unreadable = 0;
        match File::open(path) {
            Ok(f) => {
                let mut seq = first_seq;
                for line in BufReader::new(f).split(b'\n') {
                    let line = line?;
                    if line.is_empty() {
                        continue;
                    }
                    if let Ok(r) = serde_json::from_slice::<EventRecord>(&line) {
                        order.push(Arc::new(Pending {
                            seq,
                            id: r.e.into_owned(),
                            room: r.room.into_owned(),
                            created_ms: r.at,
                            body: Arc::from(r.body.as_bytes()),
                        }));
                        seq += 1;
                    } else if let Ok(r) = serde_json::from_slice::<DoneRecord>(&line) {
                        done.entry(r.d.into_owned())
                            .or_default()
                            .insert(r.ep.into_owned());
                    } else {
                        unreadable += 1;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut live = BTreeMap::new();
        let mut by_id = HashMap::new();
        let mut events = Vec::new();
        for ev in order {
            if by_id.contains_key(&ev.id) {
                continue;
            }
            let done_eps = done.remove(&ev.id).unwrap_or_default();
            let needed: Vec<usize> = endpoints
                .iter()
                .enumerate()
                .filter(|(_, k)| !done_eps.contains(*k))
                .map(|(i, _)| i)
                .collect();
            if needed.is_empty() {
                continue;
            }
            let kept: Vec<String> = endpoints
                .iter()
                .filter(|k| done_eps.contains(*k))
                .cloned()
                .collect();
            by_id.insert(ev.id.clone(), ev.seq);
            live.insert(
                ev.seq,
                Live {
                    ev: ev.clone(),
                    done: kept,
                    bytes: 0,
                },
            );
            events.push((ev, needed));
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let mut s = Spool {
            path: path.to_owned(),
            file,
            max_bytes,
            file_bytes: 0,
            live_bytes: 0,
            live,
            by_id,
            endpoints,
            dirty: false,
            _lock: lock,
        };
        s.compact()?;
        Ok((
            s,
            Loaded {
                events,
                unreadable_lines: unreadable,
            },
        ))
    }

    /// Append a new event; returns the events dropped (oldest first) to make room.
    pub fn append_event(&mut self, ev: &Arc<Pending>) -> io::Result<Vec<Arc<Pending>>> {
        let line = event_line(ev);
        let len = line.len() as u64;
        let mut dropped = Vec::new();
        if self.file_bytes + len > self.max_bytes {
            while self.live_bytes + len > self.max_bytes {
                let Some((_, old)) = self.live.pop_first() else {
                    break;
                };
                self.by_id.remove(&old.ev.id);
                self.live_bytes -= old.bytes;
                dropped.push(old.ev);
            }
            self.compact()?;
        }
        self.file.write_all(&line)?;
        self.file_bytes += len;
        self.live_bytes += len;
        self.dirty = true;
        self.by_id.insert(ev.id.clone(), ev.seq);
        self.live.insert(
            ev.seq,
            Live {
                ev: ev.clone(),
                done: Vec::new(),
                bytes: len,
            },
        );
        Ok(dropped)
    }

    /// Endpoint `endpoint` is done with event `id` (delivered or refused); `all` when no
    /// endpoint needs it any more.
    pub fn mark_done(&mut self, id: &str, endpoint: usize, all: bool) -> io::Result<()> {
        let Some(seq) = self.by_id.get(id).copied() else {
            return Ok(());
        };
        let Some(key) = self.endpoints.get(endpoint).cloned() else {
            return Ok(());
        };
        let line = done_line(id, &key);
        self.file.write_all(&line)?;
        self.file_bytes += line.len() as u64;
        self.dirty = true;
        if all {
            self.by_id.remove(id);
            if let Some(l) = self.live.remove(&seq) {
                self.live_bytes -= l.bytes;
            }
        } else if let Some(l) = self.live.get_mut(&seq) {
            l.bytes += line.len() as u64;
            self.live_bytes += line.len() as u64;
            l.done.push(key);
        }
        if self.file_bytes > COMPACT_MIN_BYTES && self.file_bytes > 4 * self.live_bytes {
            self.compact()?;
        }
        Ok(())
    }

    /// Flush written records to the disk (fsync) if any were written since the last call.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Bytes in the file now.
    #[cfg(test)]
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Rewrite the file with only what is still owed.
    fn compact(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("compacting");
        let mut out = Vec::new();
        self.live_bytes = 0;
        for l in self.live.values_mut() {
            let start = out.len();
            out.extend_from_slice(&event_line(&l.ev));
            for k in &l.done {
                out.extend_from_slice(&done_line(&l.ev.id, k));
            }
            l.bytes = (out.len() - start) as u64;
            self.live_bytes += l.bytes;
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.file_bytes = out.len() as u64;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "studyroom-spool-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn ev(seq: u64, room: &str) -> Arc<Pending> {
        Arc::new(Pending {
            seq,
            id: format!("id{seq}"),
            room: room.into(),
            created_ms: 100 + seq,
            body: Arc::from(format!("{{\"n\":{seq},\"t\":\"é\\\"\"}}").as_bytes()),
        })
    }

    #[test]
    fn what_is_not_done_survives_a_restart_in_order() {
        let d = dir("restart");
        let p = d.join("s.spool");
        let eps = vec![endpoint_key("http://a"), endpoint_key("http://b")];
        let (mut s, l) = Spool::open(&p, eps.clone(), 1 << 20, 0).unwrap();
        assert!(l.events.is_empty());
        for i in 1..=4 {
            assert!(s.append_event(&ev(i, "r")).unwrap().is_empty());
        }
        s.mark_done("id1", 0, false).unwrap();
        s.mark_done("id1", 1, true).unwrap();
        s.mark_done("id2", 1, false).unwrap();
        drop(s); // no sync: a killed process leaves its writes in the kernel
        let (_, l) = Spool::open(&p, eps, 1 << 20, 10).unwrap();
        let got: Vec<(String, Vec<usize>)> = l
            .events
            .iter()
            .map(|(e, n)| (e.id.clone(), n.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("id2".into(), vec![0]),
                ("id3".into(), vec![0, 1]),
                ("id4".into(), vec![0, 1])
            ]
        );
        assert_eq!(
            &*l.events[0].0.body,
            &*ev(2, "r").body,
            "body byte for byte"
        );
        assert_eq!(
            l.events[0].0.seq, 11,
            "numbered from first_seq in file order"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn one_process_per_spool() {
        let d = dir("lock");
        let p = d.join("s.spool");
        let eps = vec![endpoint_key("http://a")];
        let (first, _) = Spool::open(&p, eps.clone(), 1 << 20, 0).unwrap();
        let e = Spool::open(&p, eps.clone(), 1 << 20, 0).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(first);
        assert!(
            Spool::open(&p, eps, 1 << 20, 0).is_ok(),
            "free once dropped"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let d = dir("torn");
        let p = d.join("s.spool");
        let eps = vec![endpoint_key("http://a")];
        let (mut s, _) = Spool::open(&p, eps.clone(), 1 << 20, 0).unwrap();
        s.append_event(&ev(1, "r")).unwrap();
        drop(s);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"e\":\"id2\",\"room\":\"r\",\"at\":1,\"bo")
            .unwrap();
        drop(f);
        let (mut s, l) = Spool::open(&p, eps.clone(), 1 << 20, 0).unwrap();
        assert_eq!((l.events.len(), l.unreadable_lines), (1, 1));
        // The compacted file no longer has the torn line; appends go on cleanly.
        s.append_event(&ev(3, "r")).unwrap();
        drop(s);
        let (_, l) = Spool::open(&p, eps, 1 << 20, 0).unwrap();
        assert_eq!((l.events.len(), l.unreadable_lines), (2, 0));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_bound_compacts_then_drops_the_oldest() {
        let d = dir("bound");
        let p = d.join("s.spool");
        let eps = vec![endpoint_key("http://a")];
        let one = event_line(&ev(1, "r")).len() as u64;
        let (mut s, _) = Spool::open(&p, eps.clone(), one * 3 + 5, 0).unwrap();
        for i in 1..=3 {
            assert!(s.append_event(&ev(i, "r")).unwrap().is_empty());
        }
        // Done records take room; compaction frees it without dropping anything.
        s.mark_done("id1", 0, true).unwrap();
        assert!(s.append_event(&ev(4, "r")).unwrap().is_empty());
        assert!(s.file_bytes() <= one * 3 + 5);
        // Now three live events fill it: the oldest goes.
        let dropped = s.append_event(&ev(5, "r")).unwrap();
        assert_eq!(dropped.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
        assert!(s.file_bytes() <= one * 3 + 5);
        drop(s);
        let (_, l) = Spool::open(&p, eps, 1 << 20, 0).unwrap();
        let ids: Vec<_> = l.events.iter().map(|(e, _)| e.id.clone()).collect();
        assert_eq!(ids, ["id3", "id4", "id5"]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
