//! Several nodes as one deployment, through a shared Redis (`REDIS_URL`).
//!
//! - **Registry**: every node beats (`--heartbeat-ms`) its record (id, signaling URL, media
//!   IP, load) into Redis; a node silent for `--node-ttl-ms` is dead, and whichever node
//!   notices first cleans up its rooms and participants ([`RoomStore::reap`]).
//! - **A room lives on one node**: the least loaded live node when the room starts,
//!   claimed atomically in Redis. A `join` reaching another node is answered with the
//!   error `moved` and the host's URL; the client connects there (docs/protocol.md).
//!   Media must reach the host's UDP ports anyway, so a redirect costs one reconnect at
//!   join time, where a proxy would add a hop to every message and make a healthy room
//!   depend on a second node.
//! - **Local first**: the node's own [`room_state::MemoryStore`] is what joins, acks and
//!   events read and write, synchronously; a background task mirrors each changed room to
//!   Redis ([`RoomStore::sync_room`]). Media and existing sessions never wait on Redis:
//!   only a join of a room this node does not host asks Redis (bounded by a timeout; on
//!   failure the node serves the room itself). When Redis returns (or lost its data), the
//!   node writes all its rooms again; a room that another live node hosts meanwhile is
//!   handed over by telling its local clients to `reconnect` there.
//! - **Node death**: clients know the live nodes' URLs (join ack `nodes`) and rejoin
//!   another on disconnect. The node receiving the rejoin sees the room's host dead
//!   (heartbeat expired, or its signaling port refusing connections) and takes the room.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use room_state::{NodeRecord, RedisStore, RoomStore};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::AppState;
use crate::config::Config;

/// Redis key prefix of the deployment.
pub const KEY_PREFIX: &str = "studyroom:";
/// Deadline of each Redis call.
const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a liveness probe of another node's signaling port may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Changed rooms are mirrored to Redis this often.
const SYNC_PERIOD: Duration = Duration::from_millis(100);
/// Every this many heartbeats, all local rooms are written again (repairs any drift).
const FULL_RESYNC_BEATS: u64 = 5;
/// A room's local clients are told to move to its real host at most this often.
const HANDOVER_REPEAT: Duration = Duration::from_secs(5);

/// Where a joining client's room lives.
pub enum Placement {
    /// On this node.
    Here,
    /// On another node: its signaling URL.
    Moved(String),
}

/// This node's membership in the deployment.
pub struct Cluster {
    node_id: String,
    url: String,
    media_ip: String,
    started_at: u64,
    store: RedisStore,
    heartbeat: Duration,
    ttl: Duration,
    /// Last registry view (live nodes, least loaded first).
    live: Mutex<Vec<NodeRecord>>,
    /// Rooms to write to Redis at the next sync (failed or forced).
    pending: Mutex<BTreeSet<String>>,
    /// Rooms handed over to another host: when their clients were last told.
    handovers: Mutex<HashMap<String, Instant>>,
    /// Redis answered the last heartbeat.
    up: AtomicBool,
    /// Left the registry (draining): no more heartbeats or syncs.
    left: AtomicBool,
    /// Held by each heartbeat and room write, and by `leave`: nothing this node writes can
    /// land after it left the registry (it would put the node or its rooms back).
    gate: tokio::sync::Mutex<()>,
}

pub(crate) use crate::handlers::now_ms;

/// `redis://user:secret@host` -> `redis://***@host` for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Cluster {
    /// Join the deployment on `cfg.redis_url`: check Redis answers (waiting up to
    /// `--redis-wait-secs`), else fail with a message that says what to do.
    pub async fn connect(cfg: &Config, url: &str) -> anyhow::Result<Arc<Cluster>> {
        let node_id = cfg
            .node_id
            .clone()
            .unwrap_or_else(|| format!("node-{:08x}", fastrand::u32(..)));
        if !valid_node_id(&node_id) {
            return Err(anyhow!(
                "STUDYROOM_NODE_ID (--node-id) must be 1-64 characters of A-Z a-z 0-9 _ . -"
            ));
        }
        if cfg.heartbeat_ms == 0 || cfg.node_ttl_ms <= cfg.heartbeat_ms {
            return Err(anyhow!(
                "--node-ttl-ms ({}) must be greater than --heartbeat-ms ({}), which must be > 0",
                cfg.node_ttl_ms,
                cfg.heartbeat_ms
            ));
        }
        let public_url = cfg
            .public_url
            .clone()
            .unwrap_or_else(|| {
                format!(
                    "http://{}",
                    std::net::SocketAddr::new(cfg.node_ip, cfg.http.port())
                )
            })
            .trim_end_matches('/')
            .to_owned();
        let store = RedisStore::new(url, KEY_PREFIX, REDIS_TIMEOUT)
            .map_err(|e| anyhow!("REDIS_URL {}: {e}", redact(url)))?;
        let deadline = Instant::now() + Duration::from_secs(cfg.redis_wait_secs);
        let mut announced = false;
        loop {
            match store.ping().await {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(anyhow!(
                        "REDIS_URL {}: Redis is unreachable ({e}); start Redis, fix REDIS_URL, or set \
                         --redis-wait-secs (STUDYROOM_REDIS_WAIT_SECS) to wait for it at startup",
                        redact(url)
                    ));
                }
                Err(e) => {
                    if !announced {
                        warn!(
                            wait_secs = cfg.redis_wait_secs,
                            "REDIS_URL {}: Redis is unreachable ({e}); waiting for it",
                            redact(url)
                        );
                        announced = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        info!(node = %node_id, url = %public_url, "joined the deployment through Redis");
        Ok(Arc::new(Cluster {
            node_id,
            url: public_url,
            media_ip: cfg.node_ip.to_string(),
            started_at: now_ms(),
            store,
            heartbeat: Duration::from_millis(cfg.heartbeat_ms),
            ttl: Duration::from_millis(cfg.node_ttl_ms),
            live: Mutex::new(vec![]),
            pending: Mutex::new(BTreeSet::new()),
            handovers: Mutex::new(HashMap::new()),
            up: AtomicBool::new(true),
            left: AtomicBool::new(false),
            gate: tokio::sync::Mutex::new(()),
        }))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This node's signaling URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The shared store (cluster-wide reads: rooms, participants, hosts, nodes).
    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    /// Signaling URLs of the live nodes (this one first), for clients to fall back on.
    pub fn live_urls(&self) -> Vec<String> {
        let mut v = vec![self.url.clone()];
        for n in self.live.lock().expect("live lock").iter() {
            if !v.contains(&n.url) {
                v.push(n.url.clone());
            }
        }
        v
    }

    /// The least loaded other live node's URL (where a draining node sends its clients).
    pub fn other_node_url(&self) -> Option<String> {
        self.live
            .lock()
            .expect("live lock")
            .iter()
            .find(|n| n.id != self.node_id)
            .map(|n| n.url.clone())
    }

    /// (live nodes in the last registry view, rooms waiting to be written to Redis).
    pub fn gauges(&self) -> (usize, usize) {
        (
            self.live.lock().expect("live lock").len(),
            self.pending.lock().expect("pending lock").len(),
        )
    }

    fn record(&self, state: &AppState) -> NodeRecord {
        let (load, rooms) = {
            let s = state.store();
            (s.participant_count() as u64, s.rooms().len() as u64)
        };
        NodeRecord {
            id: self.node_id.clone(),
            url: self.url.clone(),
            media_ip: self.media_ip.clone(),
            load,
            rooms,
            started_at: self.started_at,
        }
    }

    /// The host of `room` by the shared store (`None`: no host, or Redis unreachable).
    pub async fn host_of(&self, room: &str) -> Option<String> {
        self.store.room_host(room).await.ok().flatten()
    }

    /// Decide where a joining client's room lives (see the module docs). Never fails:
    /// without an answer from Redis the room is served here.
    pub async fn place(&self, state: &AppState, room: &str) -> Placement {
        if !state.store().participants(room).is_empty() {
            return Placement::Here;
        }
        match tokio::time::timeout(REDIS_TIMEOUT * 3, self.place_remote(state, room)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                warn!(
                    room,
                    "placing the room without Redis ({e}); serving it here"
                );
                Placement::Here
            }
            Err(_) => {
                warn!(room, "placing the room: Redis too slow; serving it here");
                Placement::Here
            }
        }
    }

    async fn place_remote(
        &self,
        state: &AppState,
        room: &str,
    ) -> Result<Placement, room_state::StoreError> {
        let now = now_ms();
        let host = self.store.room_host(room).await?;
        let mut nodes = self.store.nodes(now).await?;
        if !nodes.iter().any(|n| n.id == self.node_id) {
            nodes.push(self.record(state));
        }
        *self.live.lock().expect("live lock") = nodes.clone();
        let url_of = |id: &str| nodes.iter().find(|n| n.id == id).map(|n| n.url.clone());
        let resolve = |host: String| {
            if host == self.node_id {
                Placement::Here
            } else {
                url_of(&host).map_or(Placement::Here, Placement::Moved)
            }
        };
        if let Some(h) = host {
            if h == self.node_id {
                return Ok(Placement::Here);
            }
            if let Some(url) = url_of(&h) {
                if reachable(&url).await {
                    return Ok(Placement::Moved(url));
                }
                warn!(room, host = %h, "the room's host is not ready (dead, frozen or draining); taking the room over");
                let after = self
                    .store
                    .take_over_room(room, &h, &self.node_id, now)
                    .await?;
                return Ok(resolve(after));
            }
        }
        // No live host: the least loaded live node takes it (this one on a tie).
        let chosen = nodes
            .iter()
            .min_by_key(|n| (n.load, n.id != self.node_id, n.id.clone()))
            .map(|n| n.id.clone())
            .unwrap_or_else(|| self.node_id.clone());
        let after = self.store.claim_room(room, &chosen, now).await?;
        debug!(room, host = %after, "room placed");
        Ok(resolve(after))
    }

    /// Leave the registry (drain): no more heartbeats; rooms and claims removed so the
    /// room's clients start it afresh elsewhere.
    pub async fn leave(&self) {
        self.left.store(true, Ordering::Relaxed);
        let _gate = self.gate.lock().await;
        if let Err(e) = self.store.remove_node(&self.node_id).await {
            warn!("leaving the registry: {e}");
        }
    }
}

/// Whether a node answers `GET /readyz` with 200 on its signaling URL within
/// [`PROBE_TIMEOUT`] (liveness probe; a draining node answers 503: it hosts no more). A process that is gone refuses the connection at once; one that is
/// frozen (or a machine that vanished) accepts nothing or answers nothing: the deadline.
/// `https` URLs are probed by TCP connect only (no TLS client here).
async fn reachable(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls = url.starts_with("https:");
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    let addr = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
        if tls {
            return Some(true);
        }
        let req = format!("GET /readyz HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.ok()?;
        Some(buf.starts_with(b"HTTP/1.") && &buf[9..12] == b"200")
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Some(true))
    )
}

/// Heartbeat, registry refresh and reaping, until the node leaves.
pub async fn heartbeat(state: AppState, cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(cluster.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats: u64 = 0;
    // A previous process with this id (a restart with a fixed --node-id) may have left
    // rooms and participants behind that nobody would reap while this id beats.
    if let Err(e) = cluster.store.remove_node(&cluster.node_id).await {
        debug!("clearing records of an earlier process with this node id: {e}");
    }
    loop {
        tick.tick().await;
        let _gate = cluster.gate.lock().await;
        if cluster.left.load(Ordering::Relaxed) {
            return;
        }
        let now = now_ms();
        let rec = cluster.record(&state);
        let fresh = match cluster
            .store
            .heartbeat(&rec, now, cluster.ttl.as_millis() as u64)
            .await
        {
            Ok(fresh) => fresh,
            Err(e) => {
                if cluster.up.swap(false, Ordering::Relaxed) {
                    warn!(
                        "Redis unreachable ({e}): rooms keep running; state resyncs when it returns"
                    );
                }
                continue;
            }
        };
        let was_down = !cluster.up.swap(true, Ordering::Relaxed);
        if was_down {
            info!("Redis is back: writing this node's rooms again");
        } else if fresh && beats > 0 {
            info!("Redis had lost this node's records: writing its rooms again");
        }
        beats += 1;
        if let Ok(nodes) = cluster.store.nodes(now).await {
            *cluster.live.lock().expect("live lock") = nodes;
        }
        match cluster.store.reap(now).await {
            Ok(dead) if !dead.is_empty() => {
                info!(nodes = ?dead, "dead nodes cleaned up (heartbeat expired)")
            }
            _ => {}
        }
        if was_down || fresh || beats.is_multiple_of(FULL_RESYNC_BEATS) {
            let rooms = state.store().rooms();
            cluster.pending.lock().expect("pending lock").extend(rooms);
        }
    }
}

/// Mirror changed rooms to Redis, until the node leaves.
pub async fn sync(state: AppState, cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(SYNC_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !cluster.left.load(Ordering::Relaxed) {
        tick.tick().await;
        let changed = state.store().take_changed_rooms();
        let rooms: Vec<String> = {
            let mut p = cluster.pending.lock().expect("pending lock");
            p.extend(changed);
            if !cluster.up.load(Ordering::Relaxed) {
                continue; // the heartbeat says when Redis is back
            }
            std::mem::take(&mut *p).into_iter().collect()
        };
        for (i, room) in rooms.iter().enumerate() {
            let _gate = cluster.gate.lock().await;
            if cluster.left.load(Ordering::Relaxed) {
                return;
            }
            let participants = state.store().participants(room);
            match cluster
                .store
                .sync_room(room, &cluster.node_id, &participants, now_ms())
                .await
            {
                Ok(Some(host)) if host != cluster.node_id && !participants.is_empty() => {
                    hand_over(&state, &cluster, room, &host).await;
                    cluster
                        .pending
                        .lock()
                        .expect("pending lock")
                        .insert(room.clone());
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(room, "sync to Redis failed: {e}");
                    cluster
                        .pending
                        .lock()
                        .expect("pending lock")
                        .extend(rooms[i..].iter().cloned());
                    break;
                }
            }
        }
    }
}

/// Another live node hosts a room this node also has participants in (both served it
/// while Redis was away): send this node's clients of the room there.
async fn hand_over(state: &AppState, cluster: &Cluster, room: &str, host: &str) {
    let url = cluster
        .live
        .lock()
        .expect("live lock")
        .iter()
        .find(|n| n.id == host)
        .map(|n| n.url.clone());
    let Some(url) = url else { return };
    {
        let mut h = cluster.handovers.lock().expect("handovers lock");
        h.retain(|_, at| at.elapsed() < HANDOVER_REPEAT);
        if h.contains_key(room) {
            return;
        }
        h.insert(room.to_owned(), Instant::now());
    }
    info!(room, host, %url, "room hosted by another node: moving this node's clients there");
    crate::delivery::to_room(
        state,
        crate::delivery::Audience::Room(room),
        "reconnect",
        &json!({ "reason": "moved", "url": url, "deadlineMs": 0 }),
        None,
    );
}

/// `GET /cluster` (metrics listener, for operators and tests): this node, the live nodes,
/// and every room of the deployment with its host and participants, read from Redis.
/// Without Redis: this node's own rooms.
pub async fn cluster_view(State(state): State<AppState>) -> impl IntoResponse {
    let Some(cluster) = state.cluster().cloned() else {
        let s = state.store();
        let rooms: Vec<_> = s
            .rooms()
            .iter()
            .map(|r| json!({ "name": r, "host": state.node_id(), "participants": s.participants(r) }))
            .collect();
        return Json(
            json!({ "node": state.node_id(), "redis": false, "nodes": [], "rooms": rooms }),
        )
        .into_response();
    };
    let read = async {
        let store = cluster.store();
        let nodes = store.nodes(now_ms()).await?;
        let mut rooms = vec![];
        for r in store.rooms().await? {
            let participants: Vec<_> = store
                .participants(&r)
                .await?
                .into_iter()
                .map(|p| {
                    let mut v = serde_json::to_value(&p).unwrap_or_default();
                    v["node"] = json!(p.node);
                    v
                })
                .collect();
            rooms.push(json!({ "name": r, "host": store.room_host(&r).await?, "participants": participants }));
        }
        Ok::<_, room_state::StoreError>(
            json!({ "node": cluster.node_id(), "redis": true, "nodes": nodes, "rooms": rooms }),
        )
    };
    match read.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "node": cluster.node_id(), "redis": false, "error": e.to_string() })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn liveness_probe_needs_a_readyz_answer() {
        // A node that answers.
        let ok = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ok_url = format!("http://{}", ok.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = ok.accept().await {
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf).await.unwrap_or(0);
                assert!(buf[..n].starts_with(b"GET /readyz "));
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nok").await;
            }
        });
        // A frozen node: the kernel accepts, nobody answers.
        let frozen = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let frozen_url = format!("http://{}/", frozen.local_addr().unwrap());
        // A dead node: nothing listens.
        let dead_url = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        assert!(reachable(&ok_url).await);
        let started = Instant::now();
        assert!(!reachable(&frozen_url).await);
        assert!(
            started.elapsed() < PROBE_TIMEOUT * 4,
            "bounded by the probe timeout"
        );
        assert!(!reachable(&dead_url).await);
        drop(frozen);
    }

    #[tokio::test]
    async fn startup_refuses_bad_settings_and_an_unreachable_redis() {
        let cfg = |extra: &[&str]| {
            let mut args = vec!["studyroom", "--dev"];
            args.extend_from_slice(extra);
            crate::config::load_from(args.into_iter().map(Into::into).collect()).unwrap()
        };
        let c = cfg(&[]);
        assert_eq!(
            (c.heartbeat_ms, c.node_ttl_ms, c.redis_wait_secs),
            (1000, 3000, 0)
        );
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("redis://user:pw@{}", l.local_addr().unwrap())
        };
        let err = |c: Config| {
            let dead = dead.clone();
            async move {
                match Cluster::connect(&c, &dead).await {
                    Ok(_) => panic!("connected to nothing"),
                    Err(e) => e.to_string(),
                }
            }
        };
        let e = err(cfg(&["--node-id", "a:b"])).await;
        assert!(e.contains("--node-id"), "{e}");
        let e = err(cfg(&["--heartbeat-ms", "3000"])).await;
        assert!(e.contains("--node-ttl-ms"), "{e}");
        let started = Instant::now();
        let e = err(cfg(&[])).await;
        assert!(
            e.contains("Redis is unreachable") && e.contains("--redis-wait-secs"),
            "{e}"
        );
        assert!(!e.contains("pw"), "no password in messages: {e}");
        assert!(started.elapsed() < Duration::from_secs(5), "fails at once");
    }

    #[test]
    fn node_ids_and_redaction() {
        assert!(valid_node_id("node-a.1_x"));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id("a:b"));
        assert!(!valid_node_id(&"x".repeat(65)));
        assert_eq!(redact("redis://u:secret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}
