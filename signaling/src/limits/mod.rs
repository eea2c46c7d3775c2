//! Limits on every door of a node (issue 15), each refusing with a clear error code,
//! counted in a metric and set by a flag (README, SECURITY.md list them with defaults):
//!
//! | door | module | refusal |
//! |---|---|---|
//! | requests per connection | [`requests`] | `rate_limited`, then disconnected |
//! | handshakes and live connections per client address | [`addresses`] | `connect_error` `too_many_connections` |
//! | joins per client address | [`addresses`] | `rate_limited` |
//! | session replacements per identity | [`identities`] | `rate_limited` |
//! | participants per node | [`node`] | `server_full` |
//!
//! The TURN relay's door (unauthenticated Allocates per source address) lives in the
//! sans-IO TURN core (`turn/src/server/allocate_gate.rs`).
//!
//! Why here and not in a proxy: a node is often exposed directly, and every limit needs
//! to know what the request is (a join, a replacement) or what the node holds. All of them
//! take time as an argument; the handlers pass `Instant::now()`.

mod addresses;
mod bucket;
mod identities;
mod node;
mod requests;

use axum::http::HeaderName;

pub(crate) use addresses::{AddressLimits, client_ip};
pub(crate) use bucket::Rate;
pub(crate) use identities::ReplacementLimits;
pub(crate) use node::NodeLimit;
pub(crate) use requests::{RequestLimits, Verdict};

use crate::config::Config;

/// Every limit of the node.
pub(crate) struct Limits {
    /// Requests per connection.
    pub(crate) requests: RequestLimits,
    /// Connections and joins per client address.
    pub(crate) addresses: AddressLimits,
    /// Session replacements per identity.
    pub(crate) identities: ReplacementLimits,
    /// Participants on this node.
    pub(crate) node: NodeLimit,
    /// `--trusted-proxy-header`: where the client address is, behind a proxy.
    pub(crate) trusted_header: Option<HeaderName>,
}

impl Limits {
    /// From the flags (validated by `config.rs`).
    pub(crate) fn from_config(cfg: &Config) -> Self {
        Limits {
            requests: RequestLimits::new(cfg.request_rate, cfg.request_burst),
            addresses: AddressLimits::new(
                Rate::new(
                    f64::from(cfg.address_connect_rate),
                    cfg.address_connect_burst,
                ),
                cfg.max_connections_per_address,
                Rate::new(f64::from(cfg.address_join_rate), cfg.address_join_burst),
            ),
            identities: ReplacementLimits::new(cfg.identity_replacements_per_minute),
            node: NodeLimit::new(cfg.max_participants),
            trusted_header: cfg.trusted_proxy_header.clone(),
        }
    }
}
