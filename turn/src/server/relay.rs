//! Allocations and what hangs off them: allocate and refresh, permissions, channel
//! bindings, Send indications, and the relay to peers (permission, byte budget).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::codec::{Class, Message, Writer, attr, method};

impl TurnServer {
    pub(super) fn allocate(
        &mut self,
        now: Instant,
        client: Client,
        m: &Message<'_>,
        username: String,
        key: [u8; 16],
        io: &mut impl Io,
    ) -> Result<(), Refusal> {
        if let Some(a) = self
            .by_client
            .get(&client)
            .and_then(|id| self.allocs.get(id))
        {
            if a.txid != m.txid {
                return Err((437, "Allocation Mismatch"));
            }
            // A retransmission: answer the same again.
            let (relayed, lifetime) = (a.relayed, a.lifetime);
            self.allocate_success(client, m, relayed, lifetime, &key, io);
            return Ok(());
        }
        match m.get(attr::REQUESTED_TRANSPORT) {
            None => return Err((400, "Bad Request")),
            Some(v) if v.first() != Some(&17) => {
                return Err((442, "Unsupported Transport Protocol"));
            }
            Some(_) => {}
        }
        if let Some(v) = m.get(attr::REQUESTED_ADDRESS_FAMILY)
            && v.first() != Some(&1)
        {
            return Err((440, "Address Family not Supported"));
        }
        if m.get(attr::RESERVATION_TOKEN).is_some()
            || m.get(attr::EVEN_PORT)
                .is_some_and(|v| v.first().is_some_and(|b| b & 0x80 != 0))
        {
            return Err((508, "Insufficient Capacity"));
        }
        if self.per_user.get(&username).copied().unwrap_or(0) >= self.cfg.user_quota {
            return Err((486, "Allocation Quota Reached"));
        }
        let Some(relayed) = io.bind_relay() else {
            return Err((508, "Insufficient Capacity"));
        };
        let lifetime = self.lifetime(m.u32(attr::LIFETIME));
        let id = self.next_id;
        self.next_id += 1;
        *self.per_user.entry(username.clone()).or_default() += 1;
        self.by_client.insert(client, id);
        self.by_relay.insert(relayed, id);
        self.allocs.insert(
            id,
            Allocation {
                client,
                relayed,
                username,
                key,
                expires: now + Duration::from_secs(u64::from(lifetime)),
                txid: m.txid,
                lifetime,
                perms: HashMap::new(),
                channels: HashMap::new(),
                channel_of: HashMap::new(),
                tokens: self.cfg.bandwidth as f64,
                refilled: now,
            },
        );
        self.allocate_success(client, m, relayed, lifetime, &key, io);
        Ok(())
    }

    pub(super) fn allocate_success(
        &mut self,
        client: Client,
        m: &Message<'_>,
        relayed: SocketAddr,
        lifetime: u32,
        key: &[u8; 16],
        io: &mut impl Io,
    ) {
        Writer::new(&mut self.buf, method::ALLOCATE, Class::Success, &m.txid)
            .xor_addr(attr::XOR_RELAYED_ADDRESS, relayed)
            .u32(attr::LIFETIME, lifetime)
            .xor_addr(attr::XOR_MAPPED_ADDRESS, client.addr)
            .integrity(key)
            .fingerprint();
        io.to_client(&client, &self.buf);
    }

    pub(super) fn owned_allocation(
        &mut self,
        client: Client,
        username: &str,
    ) -> Result<u64, Refusal> {
        let id = *self
            .by_client
            .get(&client)
            .ok_or((437, "Allocation Mismatch"))?;
        // Invariant: by_client only holds live ids.
        if self.allocs[&id].username != username {
            self.stats.auth_refused += 1;
            return Err((441, "Wrong Credentials"));
        }
        Ok(id)
    }

    pub(super) fn refresh(
        &mut self,
        now: Instant,
        client: Client,
        m: &Message<'_>,
        username: &str,
        io: &mut impl Io,
    ) -> Result<(), Refusal> {
        let id = self.owned_allocation(client, username)?;
        let requested = m.u32(attr::LIFETIME);
        let lifetime = if requested == Some(0) {
            let key = self.allocs[&id].key;
            self.remove(id, io);
            Writer::new(&mut self.buf, method::REFRESH, Class::Success, &m.txid)
                .u32(attr::LIFETIME, 0)
                .integrity(&key)
                .fingerprint();
            io.to_client(&client, &self.buf);
            return Ok(());
        } else {
            self.lifetime(requested)
        };
        let Some(a) = self.allocs.get_mut(&id) else {
            return Err((437, "Allocation Mismatch"));
        };
        a.expires = now + Duration::from_secs(u64::from(lifetime));
        a.lifetime = lifetime;
        let key = a.key;
        Writer::new(&mut self.buf, method::REFRESH, Class::Success, &m.txid)
            .u32(attr::LIFETIME, lifetime)
            .integrity(&key)
            .fingerprint();
        io.to_client(&client, &self.buf);
        Ok(())
    }

    /// Whether a relay may reach `peer`; `Some(true)` when only because it is our own
    /// media address (so the port matters).
    pub(super) fn peer_check(
        &self,
        relayed: SocketAddr,
        peer: SocketAddr,
    ) -> Result<bool, Refusal> {
        if relayed.is_ipv4() != peer.is_ipv4() {
            return Err((443, "Peer Address Family Mismatch"));
        }
        if self.cfg.policy.permits(peer.ip()) {
            return Ok(false);
        }
        if is_own(&self.cfg, peer) {
            return Ok(true);
        }
        Err((403, "Forbidden"))
    }

    pub(super) fn create_permission(
        &mut self,
        now: Instant,
        client: Client,
        m: &Message<'_>,
        username: &str,
    ) -> Result<(), Refusal> {
        let id = self.owned_allocation(client, username)?;
        let relayed = self.allocs[&id].relayed;
        let mut peers = Vec::new();
        for p in m.xor_addrs(attr::XOR_PEER_ADDRESS) {
            let p = p.ok_or((400, "Bad Request"))?;
            peers.push((p.ip(), self.peer_check(relayed, p)?));
        }
        if peers.is_empty() {
            return Err((400, "Bad Request"));
        }
        let expires = now + self.cfg.permission_lifetime;
        let a = self
            .allocs
            .get_mut(&id)
            .ok_or((437, "Allocation Mismatch"))?;
        for (ip, own_only) in peers {
            permit(a, ip, expires, own_only);
        }
        Ok(())
    }

    pub(super) fn channel_bind(
        &mut self,
        now: Instant,
        client: Client,
        m: &Message<'_>,
        username: &str,
    ) -> Result<(), Refusal> {
        let id = self.owned_allocation(client, username)?;
        let relayed = self.allocs[&id].relayed;
        let channel = match m.get(attr::CHANNEL_NUMBER) {
            Some(v) if v.len() == 4 => u16::from_be_bytes([v[0], v[1]]),
            _ => return Err((400, "Bad Request")),
        };
        // RFC 8656 narrowed the range to 0x4FFF; RFC 5766 clients (coturn's uclient
        // among them) still use up to 0x7FFF, which ChannelData framing can carry.
        if !(0x4000..=0x7FFF).contains(&channel) {
            return Err((400, "Bad Request"));
        }
        let peer = m
            .xor_addr(attr::XOR_PEER_ADDRESS)
            .flatten()
            .ok_or((400, "Bad Request"))?;
        let own_only = self.peer_check(relayed, peer)?;
        let (clife, plife) = (self.cfg.channel_lifetime, self.cfg.permission_lifetime);
        let a = self
            .allocs
            .get_mut(&id)
            .ok_or((437, "Allocation Mismatch"))?;
        if a.channels.get(&channel).is_some_and(|c| c.peer != peer)
            || a.channel_of.get(&peer).is_some_and(|c| *c != channel)
        {
            return Err((400, "Bad Request"));
        }
        a.channels.insert(
            channel,
            Channel {
                peer,
                expires: now + clife,
            },
        );
        a.channel_of.insert(peer, channel);
        // A channel binding installs or refreshes the peer's permission too (RFC 8656 12).
        permit(a, peer.ip(), now + plife, own_only);
        Ok(())
    }

    pub(super) fn send_indication(
        &mut self,
        now: Instant,
        client: Client,
        m: &Message<'_>,
        io: &mut impl Io,
    ) {
        let (Some(Some(peer)), Some(data)) =
            (m.xor_addr(attr::XOR_PEER_ADDRESS), m.get(attr::DATA))
        else {
            self.stats.dropped += 1;
            return;
        };
        self.relay_to_peer(now, client, |_| Some(peer), data, io);
    }

    /// Client -> peer data (ChannelData or a Send indication) through `client`'s
    /// allocation, to the peer `peer_of` names in it: relayed only with a live permission
    /// for the peer and within the allocation's byte budget, else dropped and counted (as
    /// is data from a client without an allocation, or for which `peer_of` names none).
    pub(super) fn relay_to_peer(
        &mut self,
        now: Instant,
        client: Client,
        peer_of: impl FnOnce(&Allocation) -> Option<SocketAddr>,
        data: &[u8],
        io: &mut impl Io,
    ) {
        let Some(a) = allocation_via(&self.by_client, &client, &mut self.allocs) else {
            self.stats.dropped += 1;
            return;
        };
        let Some(peer) = peer_of(a).filter(|&peer| may_pass(a, now, peer, data.len(), &self.cfg))
        else {
            self.stats.dropped += 1;
            return;
        };
        self.stats.to_peer_packets += 1;
        self.stats.relayed_bytes += data.len() as u64;
        io.to_peer(a.relayed, peer, data);
    }
}

/// Install or refresh the permission for `ip` until `expires`. A permission that was ever
/// granted for any peer (not only our own media address) stays so.
fn permit(a: &mut Allocation, ip: IpAddr, expires: Instant, own_only: bool) {
    let p = a
        .perms
        .entry(ip)
        .or_insert(Permission { expires, own_only });
    p.expires = expires;
    p.own_only &= own_only;
}

pub(super) fn is_own(cfg: &ServerConfig, peer: SocketAddr) -> bool {
    cfg.own_peers
        .iter()
        .any(|(ip, ports)| *ip == peer.ip() && ports.contains(&peer.port()))
}

/// The allocation an index (`by_client`, `by_relay`) names for `key`.
pub(super) fn allocation_via<'a, K: std::hash::Hash + Eq>(
    index: &HashMap<K, u64>,
    key: &K,
    allocs: &'a mut HashMap<u64, Allocation>,
) -> Option<&'a mut Allocation> {
    index.get(key).and_then(|id| allocs.get_mut(id))
}

/// Whether `len` bytes may pass between allocation `a` and `peer` now (either way): with a
/// live permission for the peer and within the allocation's byte budget (which they use).
pub(super) fn may_pass(
    a: &mut Allocation,
    now: Instant,
    peer: SocketAddr,
    len: usize,
    cfg: &ServerConfig,
) -> bool {
    permitted(a, now, peer, cfg) && take_tokens(a, now, len, cfg.bandwidth)
}

/// A live permission for `peer` (and, for own-only permissions, one of our media ports).
fn permitted(a: &Allocation, now: Instant, peer: SocketAddr, cfg: &ServerConfig) -> bool {
    a.perms
        .get(&peer.ip())
        .is_some_and(|p| p.expires > now && (!p.own_only || is_own(cfg, peer)))
}

/// Token bucket: `rate` bytes/s, one second of burst.
fn take_tokens(a: &mut Allocation, now: Instant, n: usize, rate: u64) -> bool {
    if rate == 0 {
        return true;
    }
    let dt = now.saturating_duration_since(a.refilled).as_secs_f64();
    a.refilled = now;
    a.tokens = (a.tokens + dt * rate as f64).min(rate as f64);
    if a.tokens < n as f64 {
        return false;
    }
    a.tokens -= n as f64;
    true
}
