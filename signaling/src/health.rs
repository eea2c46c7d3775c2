//! Health of the external services (Redis, NATS) when configured. Checked in the
//! background so a scrape or a readiness probe never waits on a network call; their
//! loss never stops media.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{info, warn};

/// Last known state of each configured service.
#[derive(Debug, Default)]
pub struct Health {
    redis: AtomicBool,
    nats: AtomicBool,
}

impl Health {
    /// Redis answered PING at the last check.
    pub fn redis(&self) -> bool {
        self.redis.load(Ordering::Relaxed)
    }
    /// NATS connection is up.
    pub fn nats(&self) -> bool {
        self.nats.load(Ordering::Relaxed)
    }
}

/// Check Redis every few seconds.
pub async fn watch_redis(url: String, health: std::sync::Arc<Health>) {
    let client = match redis::Client::open(url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            warn!("REDIS_URL is not a valid Redis URL: {e}");
            return;
        }
    };
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    loop {
        if conn.is_none() {
            conn = tokio::time::timeout(
                Duration::from_secs(2),
                client.get_multiplexed_async_connection(),
            )
            .await
            .ok()
            .and_then(Result::ok);
        }
        let up = match conn.as_mut() {
            Some(c) => {
                let pong: Result<Result<String, _>, _> =
                    tokio::time::timeout(Duration::from_secs(2), redis::cmd("PING").query_async(c))
                        .await;
                matches!(pong, Ok(Ok(ref p)) if p == "PONG")
            }
            None => false,
        };
        if !up {
            conn = None;
        }
        if health.redis.swap(up, Ordering::Relaxed) != up {
            if up {
                info!("Redis is up");
            } else {
                warn!("Redis is unreachable");
            }
        }
        tokio::time::sleep(Duration::from_secs(if up { 5 } else { 1 })).await;
    }
}

/// Connect to NATS, retrying until it answers (the node serves meanwhile).
pub async fn connect_nats(url: &str) -> async_nats::Client {
    loop {
        match async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(url)
            .await
        {
            Ok(c) => return c,
            Err(e) => {
                warn!("NATS_URL: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Report the state of the (shared) NATS connection.
pub async fn watch_nats(client: async_nats::Client, health: std::sync::Arc<Health>) {
    loop {
        let up = client.connection_state() == async_nats::connection::State::Connected;
        if health.nats.swap(up, Ordering::Relaxed) != up {
            if up {
                info!("NATS is up");
            } else {
                warn!("NATS is unreachable");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
