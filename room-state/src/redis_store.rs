//! The Redis store: several nodes share one Redis (standalone or behind Sentinel; the
//! scripts build their keys from the prefix, so Redis Cluster is not supported).
//!
//! Keys (prefix `studyroom:` by default):
//! - `nodes` ZSET node id -> alive-until (ms); `node:{id}` HASH the [`NodeRecord`] fields;
//!   `node:{id}:rooms` SET rooms the node has hosted or had participants in (what to clean
//!   when it dies);
//! - `rooms` SET rooms with participants; `room:{room}` HASH `host`, `since`;
//!   `room:{room}:participants` HASH id -> JSON (the record without tracks, with `node`);
//!   `room:{room}:order` ZSET id -> join sequence (from `seq`, a counter);
//!   `room:{room}:tracks` HASH `{participant}/{track}` -> track JSON.
//!
//! Every change that touches more than one key is a Lua script (atomic in Redis); reads of
//! several keys are one `MULTI` pipeline. Every call has a deadline ([`RedisStore::timeout`])
//! so a caller never waits longer for a Redis that went away; the connection manager
//! reconnects by itself, and scripts are re-sent after a Redis restart emptied its script
//! cache (`EVALSHA` falls back to `EVAL`).

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use crate::{
    NodeRecord, ParticipantRecord, RoomStore, StoreError, StoreResult, TrackRecord, sort_nodes,
    sort_tracks,
};

/// Lua helpers shared by the scripts. `ARGV[1]` is always the key prefix.
const LUA_LIB: &str = r#"
local P = ARGV[1]
local function rk(room, s) return P .. 'room:' .. room .. s end
local function drop(room, pid)
  local pk = rk(room, ':participants')
  local j = redis.call('HGET', pk, pid)
  if not j then return false end
  redis.call('HDEL', pk, pid)
  redis.call('ZREM', rk(room, ':order'), pid)
  local tk = rk(room, ':tracks')
  local out = {j}
  local all = redis.call('HGETALL', tk)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, #pid + 1) == pid .. '/' then
      table.insert(out, all[i + 1])
      redis.call('HDEL', tk, all[i])
    end
  end
  return out
end
local function tidy(room)
  if redis.call('HLEN', rk(room, ':participants')) == 0 then
    redis.call('DEL', rk(room, ':participants'), rk(room, ':order'), rk(room, ':tracks'))
    redis.call('SREM', P .. 'rooms', room)
  end
end
local function drop_node_in_room(room, node)
  local all = redis.call('HGETALL', rk(room, ':participants'))
  for i = 1, #all, 2 do
    local ok, rec = pcall(cjson.decode, all[i + 1])
    if ok and type(rec) == 'table' and rec.node == node then drop(room, all[i]) end
  end
  tidy(room)
end
local function live(node, now)
  local exp = redis.call('ZSCORE', P .. 'nodes', node)
  return exp and tonumber(exp) > now
end
local function forget_node(node)
  local nr = P .. 'node:' .. node .. ':rooms'
  for _, room in ipairs(redis.call('SMEMBERS', nr)) do
    drop_node_in_room(room, node)
    if redis.call('HGET', rk(room, ''), 'host') == node then redis.call('DEL', rk(room, '')) end
  end
  redis.call('DEL', nr, P .. 'node:' .. node)
  redis.call('ZREM', P .. 'nodes', node)
end
"#;

/// ARGV: prefix, room, id, json, node.
const ADD: &str = r#"
local room, pid = ARGV[2], ARGV[3]
drop(room, pid)
local seq = redis.call('INCR', P .. 'seq')
redis.call('HSET', rk(room, ':participants'), pid, ARGV[4])
redis.call('ZADD', rk(room, ':order'), seq, pid)
redis.call('SADD', P .. 'rooms', room)
redis.call('SADD', P .. 'node:' .. ARGV[5] .. ':rooms', room)
return 1
"#;

/// ARGV: prefix, room, id. Returns {participant json, track json...} or nil.
const REMOVE: &str = r#"
local r = drop(ARGV[2], ARGV[3])
tidy(ARGV[2])
return r
"#;

/// ARGV: prefix, room, participant, track, json.
const UPSERT_TRACK: &str = r#"
if redis.call('HEXISTS', rk(ARGV[2], ':participants'), ARGV[3]) == 1 then
  redis.call('HSET', rk(ARGV[2], ':tracks'), ARGV[3] .. '/' .. ARGV[4], ARGV[5])
  return 1
end
return 0
"#;

/// ARGV: prefix, room, `participant/track`, '1'|'0'.
const SET_MUTED: &str = r#"
local tk = rk(ARGV[2], ':tracks')
local j = redis.call('HGET', tk, ARGV[3])
if not j then return 0 end
local t = cjson.decode(j)
t.muted = (ARGV[4] == '1')
redis.call('HSET', tk, ARGV[3], cjson.encode(t))
return 1
"#;

/// ARGV: prefix, room, node, now.
const CLAIM: &str = r#"
local room, node, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local host = redis.call('HGET', rk(room, ''), 'host')
if host and host ~= node then
  if live(host, now) then return host end
  drop_node_in_room(room, host)
end
redis.call('HSET', rk(room, ''), 'host', node, 'since', ARGV[4])
redis.call('SADD', P .. 'node:' .. node .. ':rooms', room)
return node
"#;

/// ARGV: prefix, room, from, to, now.
const TAKE_OVER: &str = r#"
local room, from, to = ARGV[2], ARGV[3], ARGV[4]
local host = redis.call('HGET', rk(room, ''), 'host')
if host and host ~= from then return host end
if host then drop_node_in_room(room, from) end
redis.call('HSET', rk(room, ''), 'host', to, 'since', ARGV[5])
redis.call('SADD', P .. 'node:' .. to .. ':rooms', room)
return to
"#;

/// ARGV: prefix, room, node.
const RELEASE: &str = r#"
if redis.call('HGET', rk(ARGV[2], ''), 'host') == ARGV[3] then
  redis.call('DEL', rk(ARGV[2], ''))
  return 1
end
return 0
"#;

/// ARGV: prefix, room, node, now, n, then per participant: id, json, track count,
/// (track id, track json)*.
const SYNC_ROOM: &str = r#"
local room, node, now, n = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local host = redis.call('HGET', rk(room, ''), 'host')
if n == 0 then
  drop_node_in_room(room, node)
  if host == node then redis.call('DEL', rk(room, '')) end
  redis.call('SREM', P .. 'node:' .. node .. ':rooms', room)
  if host and host ~= node then return host end
  return false
end
if host and host ~= node then
  if live(host, now) then return host end
  drop_node_in_room(room, host)
end
redis.call('HSET', rk(room, ''), 'host', node, 'since', ARGV[4])
drop_node_in_room(room, node)
local i = 6
for _ = 1, n do
  local pid, j, nt = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local seq = redis.call('INCR', P .. 'seq')
  redis.call('HSET', rk(room, ':participants'), pid, j)
  redis.call('ZADD', rk(room, ':order'), seq, pid)
  for _ = 1, nt do
    redis.call('HSET', rk(room, ':tracks'), pid .. '/' .. ARGV[i], ARGV[i + 1])
    i = i + 2
  end
end
redis.call('SADD', P .. 'rooms', room)
redis.call('SADD', P .. 'node:' .. node .. ':rooms', room)
return node
"#;

/// ARGV: prefix, id, now, ttl, then field, value pairs. Returns 1 if the node was known.
const HEARTBEAT: &str = r#"
local key = P .. 'node:' .. ARGV[2]
local known = redis.call('EXISTS', key)
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', key, unpack(fields))
redis.call('ZADD', P .. 'nodes', tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[2])
return known
"#;

/// ARGV: prefix, id.
const REMOVE_NODE: &str = r#"
forget_node(ARGV[2])
return 1
"#;

/// ARGV: prefix, now. Returns the ids of the nodes cleaned up.
const REAP: &str = r#"
local dead = redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', ARGV[2])
for _, id in ipairs(dead) do forget_node(id) end
return dead
"#;

struct Scripts {
    add: Script,
    remove: Script,
    upsert_track: Script,
    set_muted: Script,
    claim: Script,
    take_over: Script,
    release: Script,
    sync_room: Script,
    heartbeat: Script,
    remove_node: Script,
    reap: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{LUA_LIB}\n{body}"));
        Scripts {
            add: s(ADD),
            remove: s(REMOVE),
            upsert_track: s(UPSERT_TRACK),
            set_muted: s(SET_MUTED),
            claim: s(CLAIM),
            take_over: s(TAKE_OVER),
            release: s(RELEASE),
            sync_room: s(SYNC_ROOM),
            heartbeat: s(HEARTBEAT),
            remove_node: s(REMOVE_NODE),
            reap: s(REAP),
        }
    }
}

/// A participant as stored (tracks apart, node included).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    id: String,
    identity: String,
    name: String,
    role: String,
    node: String,
    joined_at: u64,
}

impl Stored {
    fn json(p: &ParticipantRecord) -> String {
        serde_json::to_string(&Stored {
            id: p.id.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            role: p.role.clone(),
            node: p.node.clone(),
            joined_at: p.joined_at,
        })
        .unwrap_or_default()
    }
    fn parse(j: &str) -> StoreResult<ParticipantRecord> {
        let s: Stored = serde_json::from_str(j).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(ParticipantRecord {
            id: s.id,
            identity: s.identity,
            name: s.name,
            role: s.role,
            node: s.node,
            joined_at: s.joined_at,
            tracks: vec![],
        })
    }
}

fn track_json(t: &TrackRecord) -> String {
    serde_json::to_string(t).unwrap_or_default()
}

fn parse_track(j: &str) -> StoreResult<TrackRecord> {
    serde_json::from_str(j).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The Redis store. Cheap to clone (one multiplexed, self-reconnecting connection).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    scripts: std::sync::Arc<Scripts>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisStore {
    /// A store on `url` with keys under `prefix` (e.g. `studyroom:`), every call bounded by
    /// `timeout`. Connects lazily: this never waits for Redis (see [`RedisStore::ping`]).
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> StoreResult<Self> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(RedisStore {
            conn,
            prefix: prefix.to_owned(),
            timeout,
            scripts: std::sync::Arc::new(Scripts::new()),
        })
    }

    /// The deadline of every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Round trip to Redis (startup check, health).
    pub async fn ping(&self) -> StoreResult<()> {
        let mut c = self.conn.clone();
        let pong: String = self
            .bounded(async move { redis::cmd("PING").query_async(&mut c).await })
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!("PING answered {pong:?}")))
        }
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
            Err(_) => Err(StoreError::Timeout(self.timeout.as_millis() as u64)),
        }
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        args: Vec<String>,
    ) -> StoreResult<T> {
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix);
        for a in args {
            inv.arg(a);
        }
        let mut c = self.conn.clone();
        self.bounded(async move { inv.invoke_async(&mut c).await })
            .await
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }
}

impl RoomStore for RedisStore {
    async fn add_participant(&self, room: &str, p: &ParticipantRecord) -> StoreResult<()> {
        let _: i64 = self
            .run(
                &self.scripts.add,
                vec![room.into(), p.id.clone(), Stored::json(p), p.node.clone()],
            )
            .await?;
        for t in &p.tracks {
            self.upsert_track(room, t).await?;
        }
        Ok(())
    }

    async fn remove_participant(
        &self,
        room: &str,
        id: &str,
    ) -> StoreResult<Option<ParticipantRecord>> {
        let r: Option<Vec<String>> = self
            .run(&self.scripts.remove, vec![room.into(), id.into()])
            .await?;
        let Some(parts) = r else { return Ok(None) };
        let Some((first, tracks)) = parts.split_first() else {
            return Ok(None);
        };
        let mut p = Stored::parse(first)?;
        p.tracks = tracks
            .iter()
            .map(|t| parse_track(t))
            .collect::<StoreResult<_>>()?;
        sort_tracks(&mut p.tracks);
        Ok(Some(p))
    }

    async fn participants(&self, room: &str) -> StoreResult<Vec<ParticipantRecord>> {
        let mut c = self.conn.clone();
        let (order, people, tracks): (
            Vec<String>,
            HashMap<String, String>,
            HashMap<String, String>,
        ) = {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .zrange(self.key(&format!("room:{room}:order")), 0, -1)
                .hgetall(self.key(&format!("room:{room}:participants")))
                .hgetall(self.key(&format!("room:{room}:tracks")));
            self.bounded(async move { pipe.query_async(&mut c).await })
                .await?
        };
        let mut by_id: HashMap<String, ParticipantRecord> = HashMap::new();
        for (id, j) in &people {
            by_id.insert(id.clone(), Stored::parse(j)?);
        }
        for (field, j) in &tracks {
            let pid = field.split('/').next().unwrap_or_default();
            if let Some(p) = by_id.get_mut(pid) {
                p.tracks.push(parse_track(j)?);
            }
        }
        Ok(order
            .iter()
            .filter_map(|id| by_id.remove(id))
            .map(|mut p| {
                sort_tracks(&mut p.tracks);
                p
            })
            .collect())
    }

    async fn upsert_track(&self, room: &str, track: &TrackRecord) -> StoreResult<()> {
        let _: i64 = self
            .run(
                &self.scripts.upsert_track,
                vec![
                    room.into(),
                    track.participant_id.clone(),
                    track.id.clone(),
                    track_json(track),
                ],
            )
            .await?;
        Ok(())
    }

    async fn remove_track(
        &self,
        room: &str,
        participant_id: &str,
        track_id: &str,
    ) -> StoreResult<()> {
        let mut c = self.conn.clone();
        let key = self.key(&format!("room:{room}:tracks"));
        let field = format!("{participant_id}/{track_id}");
        let _: i64 = self
            .bounded(async move { c.hdel(key, field).await })
            .await?;
        Ok(())
    }

    async fn set_muted(
        &self,
        room: &str,
        participant_id: &str,
        track_id: &str,
        muted: bool,
    ) -> StoreResult<()> {
        let _: i64 = self
            .run(
                &self.scripts.set_muted,
                vec![
                    room.into(),
                    format!("{participant_id}/{track_id}"),
                    if muted { "1" } else { "0" }.into(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn rooms(&self) -> StoreResult<Vec<String>> {
        let mut c = self.conn.clone();
        let key = self.key("rooms");
        let mut v: Vec<String> = self.bounded(async move { c.smembers(key).await }).await?;
        v.sort();
        Ok(v)
    }

    async fn claim_room(&self, room: &str, node: &str, now_ms: u64) -> StoreResult<String> {
        self.run(
            &self.scripts.claim,
            vec![room.into(), node.into(), now_ms.to_string()],
        )
        .await
    }

    async fn take_over_room(
        &self,
        room: &str,
        from: &str,
        to: &str,
        now_ms: u64,
    ) -> StoreResult<String> {
        self.run(
            &self.scripts.take_over,
            vec![room.into(), from.into(), to.into(), now_ms.to_string()],
        )
        .await
    }

    async fn room_host(&self, room: &str) -> StoreResult<Option<String>> {
        let mut c = self.conn.clone();
        let key = self.key(&format!("room:{room}"));
        self.bounded(async move { c.hget(key, "host").await }).await
    }

    async fn release_room(&self, room: &str, node: &str) -> StoreResult<bool> {
        let r: i64 = self
            .run(&self.scripts.release, vec![room.into(), node.into()])
            .await?;
        Ok(r == 1)
    }

    async fn sync_room(
        &self,
        room: &str,
        node: &str,
        participants: &[ParticipantRecord],
        now_ms: u64,
    ) -> StoreResult<Option<String>> {
        let mut args = vec![
            room.to_owned(),
            node.to_owned(),
            now_ms.to_string(),
            participants.len().to_string(),
        ];
        for p in participants {
            let mut stored = p.clone();
            stored.node = node.to_owned();
            args.push(p.id.clone());
            args.push(Stored::json(&stored));
            args.push(p.tracks.len().to_string());
            for t in &p.tracks {
                args.push(t.id.clone());
                args.push(track_json(t));
            }
        }
        self.run(&self.scripts.sync_room, args).await
    }

    async fn heartbeat(&self, node: &NodeRecord, now_ms: u64, ttl_ms: u64) -> StoreResult<bool> {
        let known: i64 = self
            .run(
                &self.scripts.heartbeat,
                vec![
                    node.id.clone(),
                    now_ms.to_string(),
                    ttl_ms.to_string(),
                    "id".into(),
                    node.id.clone(),
                    "url".into(),
                    node.url.clone(),
                    "mediaIp".into(),
                    node.media_ip.clone(),
                    "load".into(),
                    node.load.to_string(),
                    "rooms".into(),
                    node.rooms.to_string(),
                    "startedAt".into(),
                    node.started_at.to_string(),
                ],
            )
            .await?;
        Ok(known == 0)
    }

    async fn nodes(&self, now_ms: u64) -> StoreResult<Vec<NodeRecord>> {
        let mut c = self.conn.clone();
        let key = self.key("nodes");
        let ids: Vec<String> = self
            .bounded(async move { c.zrangebyscore(key, format!("({now_ms}"), "+inf").await })
            .await?;
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.key(&format!("node:{id}")));
        }
        let mut c = self.conn.clone();
        let maps: Vec<HashMap<String, String>> = self
            .bounded(async move { pipe.query_async(&mut c).await })
            .await?;
        let num = |m: &HashMap<String, String>, k: &str| {
            m.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        };
        let mut out: Vec<NodeRecord> = maps
            .iter()
            .filter(|m| m.contains_key("id"))
            .map(|m| NodeRecord {
                id: m.get("id").cloned().unwrap_or_default(),
                url: m.get("url").cloned().unwrap_or_default(),
                media_ip: m.get("mediaIp").cloned().unwrap_or_default(),
                load: num(m, "load"),
                rooms: num(m, "rooms"),
                started_at: num(m, "startedAt"),
            })
            .collect();
        sort_nodes(&mut out);
        Ok(out)
    }

    async fn remove_node(&self, id: &str) -> StoreResult<()> {
        let _: i64 = self.run(&self.scripts.remove_node, vec![id.into()]).await?;
        Ok(())
    }

    async fn reap(&self, now_ms: u64) -> StoreResult<Vec<String>> {
        self.run(&self.scripts.reap, vec![now_ms.to_string()]).await
    }

    async fn push_chat(&self, room: &str, message: &str, keep: usize) -> StoreResult<()> {
        let key = self.key(&format!("chat:{room}"));
        let keep = keep.max(1) as isize;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .rpush(&key, message)
            .ignore()
            .ltrim(&key, -keep, -1)
            .ignore()
            .expire(&key, CHAT_TTL_SECS)
            .ignore();
        let mut c = self.conn.clone();
        self.bounded(async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    async fn chat_history(&self, room: &str) -> StoreResult<Vec<String>> {
        let key = self.key(&format!("chat:{room}"));
        let mut c = self.conn.clone();
        self.bounded(async move { c.lrange(key, 0, -1).await })
            .await
    }
}

/// A room's chat list lives this long after its last message.
const CHAT_TTL_SECS: i64 = 7 * 24 * 3600;
