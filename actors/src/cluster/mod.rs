//! What the nodes of a cluster share through Redis (`cluster_redis_url`; docs/cluster.md has
//! the design and what is still to come). Plain pieces, no actors: the `node` module joins a node
//! with them, and `Hub::start_in_cluster` builds on that.
//!
//! - `secret`: the cluster secret and what derives from it (interest hashes, session
//!   pseudonyms, token hashes, per-node sealing keys).
//! - `seal`: ChaCha20-Poly1305 envelopes for everything one node sends another through Redis.
//! - `queue` and `match.lua`: the cluster-wide waiting queue, matched atomically in Redis.
//! - `heartbeat`: node heartbeats, liveness, and the cluster-wide online count.
//! - `link`: the relay between nodes: a Redis stream per node, sealed entries, exactly once
//!   and in order per sender across connection blips.

pub mod heartbeat;
pub mod link;
pub mod queue;
pub mod seal;
pub mod secret;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A Redis connection that reconnects by itself. `response_timeout`: how long a command may
/// wait for its answer (a blocking read needs longer than its block time).
pub async fn connect(
    url: &str,
    response_timeout: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(2)));
    ConnectionManager::new_with_config(client, config).await
}
