//! The contract, written once against [`RoomStore`] and run against both implementations:
//! the in-memory store, and the Redis store on a real `redis-server` started by the test
//! (on a free loopback port, in memory only).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{MemoryStore, NodeRecord, ParticipantRecord, RedisStore, RoomStore, TrackRecord};

fn p(id: &str, identity: &str, node: &str) -> ParticipantRecord {
    ParticipantRecord {
        id: id.into(),
        identity: identity.into(),
        name: identity.into(),
        role: "learner".into(),
        node: node.into(),
        joined_at: 1,
        tracks: vec![],
    }
}

fn track(id: &str, pid: &str) -> TrackRecord {
    TrackRecord {
        id: id.into(),
        participant_id: pid.into(),
        kind: "video".into(),
        source: "camera".into(),
        muted: false,
        codec: "vp8".into(),
    }
}

fn node(id: &str, load: u64) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        url: format!("http://{id}.test:5002"),
        media_ip: "127.0.0.1".into(),
        load,
        rooms: 0,
        started_at: 5,
    }
}

fn ids(v: &[ParticipantRecord]) -> Vec<&str> {
    v.iter().map(|p| p.id.as_str()).collect()
}

/// Rooms, participants and tracks.
async fn participants_contract(store: &impl RoomStore) {
    store
        .add_participant("r", &p("P1", "alice", "n1"))
        .await
        .unwrap();
    store
        .add_participant("r", &p("P2", "bob", "n1"))
        .await
        .unwrap();
    store
        .add_participant("other", &p("P3", "carol", "n1"))
        .await
        .unwrap();
    assert_eq!(
        ids(&store.participants("r").await.unwrap()),
        ["P1", "P2"],
        "join order kept"
    );
    assert_eq!(
        store.find_identity("r", "bob").await.unwrap().map(|p| p.id),
        Some("P2".into())
    );
    assert!(store.find_identity("r", "carol").await.unwrap().is_none());
    store.upsert_track("r", &track("TR10", "P1")).await.unwrap();
    store.upsert_track("r", &track("TR2", "P1")).await.unwrap();
    store.upsert_track("r", &track("TR3", "P9")).await.unwrap(); // nobody: ignored
    store.set_muted("r", "P1", "TR2", true).await.unwrap();
    let alice = &store.participants("r").await.unwrap()[0];
    assert_eq!(alice.node, "n1");
    assert_eq!(alice.identity, "alice");
    let tracks: Vec<(&str, bool)> = alice
        .tracks
        .iter()
        .map(|t| (t.id.as_str(), t.muted))
        .collect();
    assert_eq!(
        tracks,
        [("TR2", true), ("TR10", false)],
        "tracks in id order, mute kept"
    );
    store
        .upsert_track(
            "r",
            &TrackRecord {
                codec: "vp9".into(),
                ..track("TR10", "P1")
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.participants("r").await.unwrap()[0].tracks[1].codec,
        "vp9",
        "upsert replaces"
    );
    store.remove_track("r", "P1", "TR2").await.unwrap();
    assert_eq!(store.participants("r").await.unwrap()[0].tracks.len(), 1);
    let removed = store.remove_participant("r", "P1").await.unwrap().unwrap();
    assert_eq!(removed.identity, "alice");
    assert_eq!(removed.tracks.len(), 1, "removed with its tracks");
    assert!(store.remove_participant("r", "P1").await.unwrap().is_none());
    // Re-adding the same id replaces, never duplicates.
    store
        .add_participant("r", &p("P2", "bob2", "n1"))
        .await
        .unwrap();
    let r = store.participants("r").await.unwrap();
    assert_eq!((ids(&r), r[0].identity.as_str()), (vec!["P2"], "bob2"));
    assert_eq!(store.rooms().await.unwrap(), ["other", "r"]);
    store.remove_participant("r", "P2").await.unwrap();
    assert_eq!(
        store.rooms().await.unwrap(),
        ["other"],
        "empty room removed"
    );
    store.remove_participant("other", "P3").await.unwrap();
    assert!(store.rooms().await.unwrap().is_empty());
    // A track of a participant re-added later is not resurrected.
    store
        .add_participant("r", &p("P1", "alice", "n1"))
        .await
        .unwrap();
    assert!(store.participants("r").await.unwrap()[0].tracks.is_empty());
    store.remove_participant("r", "P1").await.unwrap();
}

/// Node registry, room hosts, heartbeat expiry and cleanup.
async fn registry_contract(store: &impl RoomStore) {
    const TTL: u64 = 3000;
    let t0 = 1_000_000;
    assert!(
        store.heartbeat(&node("a", 5), t0, TTL).await.unwrap(),
        "first beat: unknown"
    );
    assert!(store.heartbeat(&node("b", 2), t0, TTL).await.unwrap());
    assert!(
        !store.heartbeat(&node("a", 1), t0 + 500, TTL).await.unwrap(),
        "known now"
    );
    let live: Vec<(String, u64)> = store
        .nodes(t0 + 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|n| (n.id, n.load))
        .collect();
    assert_eq!(
        live,
        [("a".into(), 1), ("b".into(), 2)],
        "least loaded first, latest beat wins"
    );
    assert_eq!(
        store.nodes(t0 + 1000).await.unwrap()[0],
        node("a", 1),
        "record kept whole"
    );

    // Claims: the first claimer wins while it is alive.
    assert_eq!(store.claim_room("r", "a", t0 + 1000).await.unwrap(), "a");
    assert_eq!(
        store.claim_room("r", "b", t0 + 1000).await.unwrap(),
        "a",
        "live host kept"
    );
    assert_eq!(
        store.claim_room("r", "a", t0 + 1000).await.unwrap(),
        "a",
        "re-claim is a no-op"
    );
    assert_eq!(store.room_host("r").await.unwrap().as_deref(), Some("a"));
    assert!(
        !store.release_room("r", "b").await.unwrap(),
        "only the host releases"
    );
    store
        .add_participant("r", &p("P1", "alice", "a"))
        .await
        .unwrap();
    store.upsert_track("r", &track("TR1", "P1")).await.unwrap();

    // A full resync writes a node's whole room; another node's resync is refused.
    let mut bob = p("P2", "bob", "a");
    bob.tracks.push(track("TR5", "P2"));
    let host = store
        .sync_room("r", "a", &[p("P1", "alice", "a"), bob.clone()], t0 + 1000)
        .await;
    assert_eq!(host.unwrap().as_deref(), Some("a"));
    let r = store.participants("r").await.unwrap();
    assert_eq!(ids(&r), ["P1", "P2"]);
    assert!(
        r[0].tracks.is_empty(),
        "resync replaced P1 (without its old track)"
    );
    assert_eq!(r[1].tracks, bob.tracks);
    let refused = store
        .sync_room("r", "b", &[p("P9", "eve", "b")], t0 + 1000)
        .await;
    assert_eq!(
        refused.unwrap().as_deref(),
        Some("a"),
        "b's resync of a's live room refused"
    );
    assert_eq!(ids(&store.participants("r").await.unwrap()), ["P1", "P2"]);

    // b hosts a room too; then a stops beating.
    assert_eq!(store.claim_room("s", "b", t0 + 1000).await.unwrap(), "b");
    store
        .add_participant("s", &p("P7", "dan", "b"))
        .await
        .unwrap();
    store
        .heartbeat(&node("b", 2), t0 + 3000, TTL)
        .await
        .unwrap();
    // a's last beat was t0+500: alive until t0+3500.
    assert_eq!(store.nodes(t0 + 3499).await.unwrap().len(), 2);
    let live: Vec<String> = store
        .nodes(t0 + 3500)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(live, ["b"], "a expired");
    // Before anyone reaps, a claim on a's room sees a dead host and takes the room,
    // dropping a's participants of it.
    assert_eq!(store.claim_room("r", "b", t0 + 3600).await.unwrap(), "b");
    assert!(
        store.participants("r").await.unwrap().is_empty(),
        "dead host's participants dropped"
    );
    assert_eq!(store.rooms().await.unwrap(), ["s"]);
    store.release_room("r", "b").await.unwrap();

    // a comes back with a room, then dies for good: reaping cleans all it had.
    store
        .heartbeat(&node("a", 1), t0 + 4000, TTL)
        .await
        .unwrap();
    assert_eq!(store.claim_room("q", "a", t0 + 4000).await.unwrap(), "a");
    store
        .add_participant("q", &p("P1", "alice", "a"))
        .await
        .unwrap();
    store.upsert_track("q", &track("TR1", "P1")).await.unwrap();
    store
        .add_participant("s", &p("P8", "ann", "a"))
        .await
        .unwrap(); // a guest in b's room
    store
        .heartbeat(&node("b", 2), t0 + 6000, TTL)
        .await
        .unwrap();
    assert!(
        store.reap(t0 + 6999).await.unwrap().is_empty(),
        "nobody expired yet"
    );
    assert_eq!(store.reap(t0 + 7000).await.unwrap(), ["a"]);
    assert!(
        store.reap(t0 + 7000).await.unwrap().is_empty(),
        "reaped once"
    );
    assert_eq!(store.rooms().await.unwrap(), ["s"], "a's room gone");
    assert_eq!(store.room_host("q").await.unwrap(), None, "a's claim gone");
    assert_eq!(
        ids(&store.participants("s").await.unwrap()),
        ["P7"],
        "a's guest gone, b's kept"
    );
    assert_eq!(store.room_host("s").await.unwrap().as_deref(), Some("b"));
    // A reaped node that beats again is new to the store (it must write its rooms again).
    assert!(
        store
            .heartbeat(&node("a", 0), t0 + 7100, TTL)
            .await
            .unwrap()
    );

    // take_over: only from the host named.
    assert_eq!(
        store
            .take_over_room("s", "a", "a", t0 + 7100)
            .await
            .unwrap(),
        "b",
        "a is not s's host"
    );
    assert_eq!(
        store
            .take_over_room("s", "b", "a", t0 + 7100)
            .await
            .unwrap(),
        "a"
    );
    assert!(
        store.participants("s").await.unwrap().is_empty(),
        "b's participants of s dropped"
    );
    assert_eq!(
        store
            .take_over_room("new", "x", "a", t0 + 7100)
            .await
            .unwrap(),
        "a",
        "unhosted room"
    );

    // Resync with nobody left releases the claim.
    store
        .sync_room("s", "a", &[p("P1", "alice", "a")], t0 + 7100)
        .await
        .unwrap();
    assert_eq!(store.rooms().await.unwrap(), ["s"]);
    assert_eq!(
        store.sync_room("s", "a", &[], t0 + 7100).await.unwrap(),
        None
    );
    assert_eq!(store.room_host("s").await.unwrap(), None);
    assert!(store.rooms().await.unwrap().is_empty());

    // Graceful removal.
    store.claim_room("g", "b", t0 + 7100).await.unwrap();
    store
        .add_participant("g", &p("P3", "x", "b"))
        .await
        .unwrap();
    store.remove_node("b").await.unwrap();
    assert_eq!(store.room_host("g").await.unwrap(), None);
    assert!(store.rooms().await.unwrap().is_empty());
    let live: Vec<String> = store
        .nodes(t0 + 7100)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(live, ["a"]);
}

/// Chat history: capped, oldest first, per room, kept when the room empties.
async fn chat_contract(store: &impl RoomStore) {
    assert!(store.chat_history("r").await.unwrap().is_empty());
    for i in 0..5 {
        store
            .push_chat("r", &format!("{{\"n\":{i}}}"), 3)
            .await
            .unwrap();
    }
    store.push_chat("other", "{}", 3).await.unwrap();
    assert_eq!(
        store.chat_history("r").await.unwrap(),
        ["{\"n\":2}", "{\"n\":3}", "{\"n\":4}"]
    );
    store
        .add_participant("r", &p("P1", "alice", "n1"))
        .await
        .unwrap();
    store.remove_participant("r", "P1").await.unwrap();
    assert_eq!(store.chat_history("r").await.unwrap().len(), 3, "kept");
    assert_eq!(store.chat_history("other").await.unwrap(), ["{}"]);
}

#[tokio::test]
async fn memory_store_contract() {
    participants_contract(&Mutex::new(MemoryStore::new())).await;
    registry_contract(&Mutex::new(MemoryStore::new())).await;
    chat_contract(&Mutex::new(MemoryStore::new())).await;
}

#[test]
fn memory_store_bounds_the_rooms_with_chat() {
    let mut m = MemoryStore::new();
    for i in 0..=crate::memory::CHAT_ROOMS_MAX {
        m.push_chat(&format!("r{i}"), "{}".into(), 100);
    }
    assert!(!m.has_chat("r0"), "the oldest room's history went first");
    assert!(m.has_chat("r1"));
}

#[test]
fn memory_store_reports_changed_rooms() {
    let mut lone = MemoryStore::new();
    lone.add_participant("a", p("P1", "x", "n"));
    assert!(
        lone.take_changed_rooms().is_empty(),
        "not tracked by default"
    );
    let mut m = MemoryStore::with_change_tracking();
    m.add_participant("a", p("P1", "x", "n"));
    m.add_participant("b", p("P2", "y", "n"));
    assert_eq!(m.take_changed_rooms(), ["a", "b"]);
    assert!(m.take_changed_rooms().is_empty());
    m.upsert_track("a", track("TR1", "P1"));
    m.remove_participant("b", "P2");
    assert_eq!(m.take_changed_rooms(), ["a", "b"]);
    m.upsert_track("a", track("TR1", "P404"));
    assert!(m.take_changed_rooms().is_empty(), "no-op changes nothing");
}

/// `redis-server` on 127.0.0.1:`port`, in memory only (no RDB, no AOF).
///
/// `cargo test --workspace` needs the binary on `PATH`: without it these tests fail (they
/// are not skipped, so that a green run always means the Redis store was tested), and the
/// failure says what is missing and how to install it.
fn spawn_redis_server(port: u16) -> Child {
    let spawned = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "\n\nThe Redis store contract tests need the `redis-server` binary and it is not on \
             PATH.\nInstall it (Debian/Ubuntu: `apt-get install redis-server`, or everything the \
             test suite needs: `bash scripts/install-deps.sh` as root), then run \
             `cargo test --workspace` again.\n\n"
        ),
        Err(e) => {
            panic!("could not start `redis-server` (for the Redis store contract tests): {e}")
        }
    }
}

/// A `redis-server` on a free loopback port, killed on drop.
struct RedisServer {
    child: Child,
    url: String,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        RedisServer {
            child: spawn_redis_server(port),
            url: format!("redis://127.0.0.1:{port}"),
        }
    }

    async fn store(&self, prefix: &str) -> RedisStore {
        let store = RedisStore::new(&self.url, prefix, Duration::from_secs(2)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.ping().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer at {}",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn redis_store_contract() {
    let redis = RedisServer::start();
    participants_contract(&redis.store("studyroom:").await).await;
    // A second deployment (prefix) on the same Redis sees none of the first's keys.
    let other = redis.store("other:").await;
    registry_contract(&redis.store("studyroom:").await).await;
    chat_contract(&redis.store("studyroom:").await).await;
    assert!(other.chat_history("r").await.unwrap().is_empty());
    assert!(other.rooms().await.unwrap().is_empty());
    assert!(other.nodes(0).await.unwrap().is_empty());
}

#[tokio::test]
async fn redis_store_fails_fast_when_redis_is_gone_and_recovers() {
    let mut redis = RedisServer::start();
    let store = redis.store("studyroom:").await;
    store
        .add_participant("r", &p("P1", "alice", "a"))
        .await
        .unwrap();
    let url = redis.url.clone();
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let started = Instant::now();
    assert!(store.rooms().await.is_err(), "an error, not a hang");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the store's timeout"
    );
    // Same port, empty Redis: the store reconnects by itself.
    let port = url.rsplit(':').next().unwrap().to_owned();
    redis.child = spawn_redis_server(port.parse().unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = store.rooms().await {
            assert!(r.is_empty(), "the restarted Redis is empty");
            break;
        }
        assert!(Instant::now() < deadline, "store did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Scripts work again after the restart emptied the script cache.
    store
        .add_participant("r", &p("P1", "alice", "a"))
        .await
        .unwrap();
    assert_eq!(ids(&store.participants("r").await.unwrap()), ["P1"]);
}
