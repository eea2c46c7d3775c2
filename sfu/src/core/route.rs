//! The routing index: which transport does an arriving datagram belong to?
//!
//! Many peers share each media port, so the (local port, remote address) 4-tuple is the
//! key. The first datagram of a peer comes from an address we have not seen; it is a STUN
//! binding request whose USERNAME starts with our ufrag, which names the transport. Both
//! lookups are hash lookups: the cost per packet does not grow with the number of peers.
//! Keys are attacker-controlled (addresses, ufrags), so the maps keep std's SipHash.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::stun;
use crate::ids::TransportId;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteDatagramTo {
    /// A known 4-tuple.
    Transport(TransportId),
    /// A new address, named by the STUN USERNAME; the caller should `learn` it once the
    /// transport accepted the request.
    NewAddress(TransportId),
    /// Nobody: not STUN from a new address, or an unknown ufrag.
    Nowhere(Unroutable),
}

/// Why a datagram could not be routed (counted and logged at debug, never per-packet at info).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unroutable {
    /// A non-STUN datagram from an address no transport knows.
    UnknownAddress,
    /// STUN that we could not parse for a USERNAME.
    BadStun,
    /// A USERNAME with a ufrag no transport has.
    UnknownUfrag,
}

/// Most remote addresses one transport may register (browsers try a handful of
/// candidates; an attacker knowing a ufrag must not grow the table without bound).
pub const MAX_ADDRS_PER_TRANSPORT: usize = 8;

/// The index itself.
#[derive(Debug, Default)]
pub struct RouteIndex {
    by_addr: HashMap<(u16, SocketAddr), TransportId>,
    by_ufrag: HashMap<String, TransportId>,
}

impl RouteIndex {
    /// Gives back map capacity far above what is in use (see `ShardCore::compact`).
    pub(super) fn compact(&mut self) {
        super::compact_map(&mut self.by_addr);
        super::compact_map(&mut self.by_ufrag);
    }

    /// Route one datagram that arrived on `local_port` from `remote`.
    pub fn route(&self, local_port: u16, remote: SocketAddr, data: &[u8]) -> RouteDatagramTo {
        if let Some(t) = self.by_addr.get(&(local_port, remote)) {
            return RouteDatagramTo::Transport(*t);
        }
        if !stun::is_stun(data) {
            return RouteDatagramTo::Nowhere(Unroutable::UnknownAddress);
        }
        match stun::local_ufrag(data) {
            Ok(ufrag) => match self.by_ufrag.get(ufrag) {
                Some(t) => RouteDatagramTo::NewAddress(*t),
                None => RouteDatagramTo::Nowhere(Unroutable::UnknownUfrag),
            },
            Err(_) => RouteDatagramTo::Nowhere(Unroutable::BadStun),
        }
    }

    /// Register a transport's ufrag.
    pub fn add_ufrag(&mut self, ufrag: &str, t: TransportId) {
        self.by_ufrag.insert(ufrag.to_owned(), t);
    }

    /// Forget one ufrag (replaced by an ICE restart).
    pub fn remove_ufrag(&mut self, ufrag: &str) {
        self.by_ufrag.remove(ufrag);
    }

    /// Forget one 4-tuple (an address a transport stopped using).
    pub fn forget(&mut self, local_port: u16, remote: SocketAddr) {
        self.by_addr.remove(&(local_port, remote));
    }

    /// Remember a 4-tuple for a transport.
    pub fn learn(&mut self, local_port: u16, remote: SocketAddr, t: TransportId) {
        self.by_addr.insert((local_port, remote), t);
    }

    /// Forget everything about a transport (its ufrag and the addresses it learned).
    pub fn remove(&mut self, ufrag: &str, addrs: &[(u16, SocketAddr)]) {
        self.by_ufrag.remove(ufrag);
        for a in addrs {
            self.by_addr.remove(a);
        }
    }

    /// Number of (addresses, ufrags) indexed; zero when every transport is gone.
    pub fn len(&self) -> (usize, usize) {
        (self.by_addr.len(), self.by_ufrag.len())
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty() && self.by_ufrag.is_empty()
    }
}
