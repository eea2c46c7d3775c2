//! Reading the server and the machine during a run: a process's CPU and memory from
//! /proc, the kernel's UDP counters and socket drops, deltas between two snapshots.

use std::collections::HashSet;
use std::time::Instant;

use serde_json::{Value, json};

/// Process CPU seconds (utime + stime) of `/proc/{pid}/stat` (or a task's).
pub(super) fn proc_cpu(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((ut + st) as f64 / crate::CLK_TCK)
}

/// CPU seconds of a process's threads whose name starts with `prefix`.
pub(super) fn threads_cpu(pid: u32, prefix: &str) -> f64 {
    let mut total = 0.0;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in dir.flatten() {
            let p = e.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if comm.trim().starts_with(prefix) {
                total += proc_cpu(&p.join("stat").to_string_lossy()).unwrap_or(0.0);
            }
        }
    }
    total
}

pub(super) fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub(super) struct Snapshot {
    pub(super) at: Instant,
    pub(super) tx: u64,
    pub(super) rx: u64,
    pub(super) tx_bytes: u64,
    pub(super) rx_bytes: u64,
    pub(super) expected: u64,
    pub(super) self_cpu: f64,
    pub(super) server_cpu: Option<f64>,
    pub(super) shard_cpu: Option<f64>,
    pub(super) metrics: Option<Value>,
    pub(super) udp: Option<Vec<(String, u64)>>,
}

/// The kernel's UDP counters of this network namespace (`/proc/net/snmp`): receive
/// buffer overflows say which side could not keep up when both run here.
pub(super) fn udp_counters() -> Option<Vec<(String, u64)>> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names = lines.next()?.split_whitespace().skip(1);
    let values = lines.next()?.split_whitespace().skip(1);
    Some(
        names
            .zip(values)
            .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
            .collect(),
    )
}

/// Datagrams the kernel dropped on UDP sockets still open, split into this process's
/// sockets (the simulated peers) and everyone else's in the namespace (the server), from
/// the `drops` column of `/proc/net/udp` and our own `/proc/self/fd` socket inodes.
pub(super) fn socket_drops() -> Option<(u64, u64)> {
    let mut ours = HashSet::new();
    for e in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        if let Ok(l) = std::fs::read_link(e.path())
            && let Some(i) = l
                .to_str()
                .and_then(|x| x.strip_prefix("socket:["))
                .and_then(|x| x.strip_suffix(']'))
        {
            ours.insert(i.to_owned());
        }
    }
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    let (mut mine, mut others) = (0u64, 0u64);
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(inode), Some(drops)) = (f.get(9), f.get(12).and_then(|d| d.parse::<u64>().ok()))
        else {
            continue;
        };
        if ours.contains(*inode) {
            mine += drops;
        } else {
            others += drops;
        }
    }
    Some((mine, others))
}

pub(super) fn udp_delta(a: &Snapshot, b: &Snapshot) -> Value {
    let (Some(a), Some(b)) = (&a.udp, &b.udp) else {
        return Value::Null;
    };
    let mut m = serde_json::Map::new();
    for ((n, x), (_, y)) in a.iter().zip(b) {
        if ["InDatagrams", "RcvbufErrors", "SndbufErrors", "InErrors"].contains(&n.as_str()) {
            m.insert(n.clone(), json!(y.saturating_sub(*x)));
        }
    }
    Value::Object(m)
}

pub(super) fn metric_delta(a: &Snapshot, b: &Snapshot, name: &str) -> Option<f64> {
    Some(b.metrics.as_ref()?[name].as_f64()? - a.metrics.as_ref()?[name].as_f64()?)
}
