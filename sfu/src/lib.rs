//! studyroom's media core: a selective forwarding unit over str0m.
//!
//! Two layers, kept apart on purpose (see `ARCHITECTURE.md`):
//!
//! - [`core`]: sans-IO. One [`core::ShardCore`] holds the rooms of one shard, a str0m
//!   `Rtc` (ICE-lite, RTP mode) per transport, producers and consumers, and the routing
//!   index. Datagrams and `now` go in; datagrams, events and the next timeout come out.
//!   Deterministic tests drive it with simulated peers, loss and time.
//! - [`driver`]: the thin I/O shell. One thread per shard, each owning its share of the
//!   UDP ports 40000-40100, reading with `recvmmsg` and writing with `sendmmsg`, taking
//!   commands from signaling over a channel and handing events back.
//!
//! Routing never scans peers: a datagram is matched by its 4-tuple, or for a new address
//! by the ufrag in its STUN USERNAME ([`core::route`]).

pub mod config;
pub mod core;
pub mod driver;
pub mod dtls;
pub mod error;
pub mod ids;
pub mod placement;

pub use config::SfuConfig;
pub use core::simulcast::Quality;
pub use core::{
    Grants, OfferedTrack, PublishAnswer, RemovalReason, SfuEvent, TrackInfo, TrackRequest,
};
pub use driver::{Sfu, SfuStats};
pub use error::SfuError;
pub use ids::{ParticipantId, Role, Source, TrackId};
pub use str0m::media::MediaKind;
