//! Media core configuration. Everything has a default that works on one machine.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Configuration of the SFU (core and driver).
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Address put in our ICE candidates (what browsers send to). Behind NAT or in
    /// Docker this is the public/node address, not the bind address.
    pub advertise_ip: IpAddr,
    /// Address the media sockets bind to. `None` (the default) binds the advertised
    /// address when it is local to this host — replies then always leave from the address
    /// the peer sent to, which ICE checks — and the wildcard address otherwise (behind NAT
    /// or in a container, where the advertised address is not ours).
    pub bind_ip: Option<IpAddr>,
    /// First media port (inclusive).
    pub port_min: u16,
    /// Last media port (inclusive).
    pub port_max: u16,
    /// Number of shard threads (0 = one per available core).
    pub shards: usize,
    /// How long a connected transport may go without ICE consent before its participant
    /// is removed (browsers refresh consent every few seconds).
    pub consent_timeout: Duration,
    /// A transport that has not connected this long after creation is given up.
    pub connect_timeout: Duration,
    /// Minimum interval between keyframe requests forwarded to one publisher track.
    pub keyframe_request_interval: Duration,
    /// Most participants in one room.
    pub max_participants_per_room: usize,
    /// Honour per-participant impairment (test-only loss injection).
    pub allow_impairment: bool,
    /// Send-side bandwidth estimation on subscriber transports and the stream allocator
    /// that spends it (layers, pause/resume). Off (the default for now, see
    /// ARCHITECTURE.md "Bandwidth"): the loss-based estimate below stands in.
    pub bandwidth_estimation: bool,
    /// Without `bandwidth_estimation`: adapt each subscriber to its downlink from the loss
    /// its receiver reports show (`core::loss_estimate`): no cap until a subscriber shows
    /// sustained heavy loss, then the stream allocator moves its videos down (or pauses
    /// them) to what its link carried, and back up when the loss is gone. On by default;
    /// off: every subscriber gets what it asked for whatever its link.
    pub loss_adaptation: bool,
    /// A room spreads over the shards once it holds this many participants (0: never):
    /// below it, a room lives on one shard; above, new participants go to the shard with
    /// the fewest of the room's, and packets are relayed between shards (`core::span`).
    pub room_span_after: usize,
    /// Called by each media shard thread every 100 ms while its shard is empty (so a
    /// thread-local resource, such as the allocator's per-thread cache, can be given back
    /// once the node is idle). `None`: nothing is called. The binary passes
    /// `signaling::heap::on_thread_idle`.
    pub on_thread_idle: Option<fn()>,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            advertise_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            bind_ip: None,
            port_min: 40_000,
            port_max: 40_100,
            shards: 0,
            consent_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(30),
            keyframe_request_interval: Duration::from_millis(500),
            max_participants_per_room: 500,
            allow_impairment: false,
            bandwidth_estimation: false,
            loss_adaptation: true,
            room_span_after: 50,
            on_thread_idle: None,
        }
    }
}
