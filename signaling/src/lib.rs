//! studyroom signaling: Socket.IO (namespace `/study`) on axum, the dev token endpoint,
//! the demo page, and the glue between clients and the media core.
//!
//! Flow: a client connects with a JWT (checked by the namespace middleware), `join`s,
//! then publishes/subscribes by SDP through the SFU handle ([`sfu::Sfu`]). The media
//! core's events ([`sfu::SfuEvent`]) are pumped back out as Socket.IO events by
//! [`pump`]. The wire contract is `docs/protocol.md`.

mod app;
pub mod auth;
mod chat;
pub mod cluster;
mod commands;
pub mod config;
mod delivery;
mod departure;
mod events;
mod focus;
#[doc(hidden)]
pub mod fuzzing;
mod handlers;
mod health;
pub mod heap;
mod http;
mod idle_trim;
mod limits;
mod metrics;
mod outbox;
mod pump;
mod resume;
mod spill;
mod state;
pub mod turn_relay;
mod webhook;

/// Socket.IO namespace of the protocol.
pub const NAMESPACE: &str = "/study";

pub use app::run;
pub use state::AppState;
use state::{Session, Sessions};
