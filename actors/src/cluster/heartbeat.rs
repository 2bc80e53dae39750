//! A node's presence in the cluster: a heartbeat key with a short TTL, renewed well within it,
//! whose value is the node's online count. Other nodes read the heartbeats to know who is
//! alive (a session on a node whose heartbeat expired is gone) and to sum the cluster-wide
//! online count.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands as _;

/// The heartbeat key of `node`.
pub fn heartbeat_key(prefix: &str, node: &str) -> String {
    format!("{prefix}node:{node}")
}

/// Writes this node's heartbeat (and online count), valid for `ttl`.
pub async fn beat(
    redis: &mut ConnectionManager,
    prefix: &str,
    node: &str,
    online: usize,
    ttl: Duration,
) -> redis::RedisResult<()> {
    redis
        .pset_ex(
            heartbeat_key(prefix, node),
            online,
            ttl.as_millis().max(1) as u64,
        )
        .await
}

/// Removes this node's heartbeat at a clean shutdown, so others need not wait for it to expire.
pub async fn depart(
    redis: &mut ConnectionManager,
    prefix: &str,
    node: &str,
) -> redis::RedisResult<()> {
    redis.del(heartbeat_key(prefix, node)).await
}

/// Whether `node`'s heartbeat is current.
pub async fn is_alive(
    redis: &mut ConnectionManager,
    prefix: &str,
    node: &str,
) -> redis::RedisResult<bool> {
    redis.exists(heartbeat_key(prefix, node)).await
}

/// The live nodes and the sum of their online counts.
pub async fn cluster_online(
    redis: &mut ConnectionManager,
    prefix: &str,
) -> redis::RedisResult<(usize, usize)> {
    let pattern = format!("{prefix}node:*");
    let mut keys: Vec<String> = Vec::new();
    {
        let mut scan = redis.scan_match::<_, String>(&pattern).await?;
        while let Some(key) = futures_util::StreamExt::next(&mut scan).await {
            keys.push(key?);
        }
    }
    if keys.is_empty() {
        return Ok((0, 0));
    }
    let counts: Vec<Option<usize>> = redis.mget(&keys).await?;
    // A heartbeat may expire between the scan and the read: it is then not counted.
    let live: Vec<usize> = counts.into_iter().flatten().collect();
    Ok((live.len(), live.iter().sum()))
}
