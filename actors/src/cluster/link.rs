//! The relay between nodes: one Redis stream per node (`<prefix>stream:<node>`), every entry a
//! sealed envelope (`seal.rs`).
//!
//! Streams, not pub/sub: an entry waits in Redis while its reader's connection blips, and the
//! reader goes on from the last id it read, so nothing is lost; pub/sub drops whatever is
//! published while a subscriber is away. Exactly once, in order, per sender:
//! - one task per node seals and appends, in the order it was handed payloads, so counters
//!   rise in stream order;
//! - an append whose answer was lost is sent again with the same envelope; the reader refuses
//!   the second copy as a replay (its counter is not above the last one seen).
//! - The reader deletes what it has read, and a stream it emptied is removed (atomically, so a
//!   concurrent append is never lost), so an idle cluster leaves no stream behind. Streams
//!   also carry a TTL, renewed on each append, in case their reader's node is gone.

use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::seal::{Opener, Sealer};
use super::secret::ClusterKeys;

/// Most entries one read takes, and most appends one round trip carries.
const BATCH: usize = 256;
/// How long a read waits in Redis for an entry before it asks again.
pub const READ_BLOCK_MS: u64 = 1000;
/// Pause before trying again after Redis failed to answer.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Removes the stream if nothing is left in it (atomic, so an append in between survives).
const REMOVE_IF_EMPTY: &str =
    "if redis.call('XLEN', KEYS[1]) == 0 then return redis.call('DEL', KEYS[1]) end return 0";

pub fn stream_key(prefix: &str, node: &str) -> String {
    format!("{prefix}stream:{node}")
}

/// One payload for another node.
pub struct Outbound {
    pub to_node: String,
    pub payload: Vec<u8>,
}

/// Hands payloads to this node's sending task; bounded.
#[derive(Clone)]
pub struct LinkSender {
    queue: mpsc::Sender<Outbound>,
}

#[derive(Debug, thiserror::Error)]
#[error("the relay to other nodes is full")]
pub struct LinkFull;

impl LinkSender {
    /// Queues `payload` for `to_node`; refused when the queue is full (Redis is away for long).
    pub fn send(&self, to_node: &str, payload: Vec<u8>) -> Result<(), LinkFull> {
        self.queue
            .try_send(Outbound {
                to_node: to_node.to_owned(),
                payload,
            })
            .map_err(|_| LinkFull)
    }
}

/// Starts this node's sending task; `capacity` bounds what may wait for Redis.
pub fn start_sender(
    redis: ConnectionManager,
    keys: &ClusterKeys,
    prefix: &str,
    node: &str,
    stream_ttl: Duration,
    capacity: usize,
) -> LinkSender {
    let (queue, outbound) = mpsc::channel(capacity.max(1));
    let sealer = Sealer::new(keys, node);
    tokio::spawn(send_in_order(
        redis,
        sealer,
        prefix.to_owned(),
        stream_ttl,
        outbound,
    ));
    LinkSender { queue }
}

async fn send_in_order(
    mut redis: ConnectionManager,
    mut sealer: Sealer,
    prefix: String,
    stream_ttl: Duration,
    mut outbound: mpsc::Receiver<Outbound>,
) {
    let ttl_ms = stream_ttl.as_millis().max(1) as u64;
    let mut batch = Vec::with_capacity(BATCH);
    while outbound.recv_many(&mut batch, BATCH).await > 0 {
        // Sealed once, in order: a retry sends the very same envelopes.
        let sealed: Vec<(String, Vec<u8>)> = batch
            .drain(..)
            .map(|out| {
                let envelope = sealer.seal(&out.to_node, &out.payload);
                (stream_key(&prefix, &out.to_node), envelope)
            })
            .collect();
        let mut pipeline = redis::pipe();
        for (key, envelope) in &sealed {
            pipeline
                .cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("e")
                .arg(envelope.as_slice())
                .ignore()
                .cmd("PEXPIRE")
                .arg(key)
                .arg(ttl_ms)
                .ignore();
        }
        loop {
            match pipeline.query_async::<()>(&mut redis).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, "relay to other nodes: Redis did not take a batch; trying again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }
}

/// What the reader hands on: the sending node and the opened payload.
pub type Inbound = (String, Vec<u8>);

/// Starts this node's reading task: every payload other nodes sealed for it, in order per
/// sender, exactly once, into `deliver` (which blocks the reader when full: Redis holds the
/// rest meanwhile). `redis` must be a connection of its own, whose response timeout is longer
/// than `READ_BLOCK_MS` (see `super::connect`): a blocking read holds its connection.
pub fn start_reader(
    redis: ConnectionManager,
    keys: ClusterKeys,
    prefix: &str,
    node: &str,
    deliver: mpsc::Sender<Inbound>,
) -> tokio::task::JoinHandle<()> {
    let key = stream_key(prefix, node);
    let node = node.to_owned();
    tokio::spawn(async move {
        let mut opener = Opener::new(&keys, &node);
        read_until_closed(redis, &key, &mut opener, deliver).await;
    })
}

async fn read_until_closed(
    mut redis: ConnectionManager,
    key: &str,
    opener: &mut Opener<'_>,
    deliver: mpsc::Sender<Inbound>,
) {
    let remove_if_empty = redis::Script::new(REMOVE_IF_EMPTY);
    // Entries are deleted once read, so what is in the stream is what is unread, and every
    // read starts from its beginning ("0"). Never from the last id read: an emptied stream is
    // removed, and one created anew within the same millisecond numbers its entries from
    // that millisecond's 0 again, below the last id read (those entries would be skipped).
    // An entry read twice (its deletion failed) is refused by its counter as a replay.
    let mut unremoved: Vec<String> = Vec::new();
    loop {
        let reply: redis::RedisResult<redis::streams::StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(READ_BLOCK_MS)
            .arg("STREAMS")
            .arg(key)
            .arg("0")
            .query_async(&mut redis)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                tracing::warn!(%error, "relay from other nodes: reading failed; trying again");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let mut read_any = false;
        for stream in reply.keys {
            for entry in stream.ids {
                read_any = true;
                unremoved.push(entry.id.clone());
                let Some(redis::Value::BulkString(envelope)) = entry.map.get("e") else {
                    continue;
                };
                match opener.open(envelope) {
                    Ok(inbound) => {
                        if deliver.send(inbound).await.is_err() {
                            return;
                        }
                    }
                    // A second copy of a retried append, or something not ours: dropped.
                    Err(error) => tracing::debug!(%error, "relay entry refused"),
                }
            }
        }
        if !read_any && deliver.is_closed() {
            return;
        }
        if unremoved.is_empty() {
            continue;
        }
        // Read entries are deleted; ids whose deletion failed (a blip) are tried again on the
        // next round, and only a stream with nothing unread and nothing undeleted is removed.
        let deleted = redis::cmd("XDEL")
            .arg(key)
            .arg(&unremoved)
            .query_async::<i64>(&mut redis)
            .await;
        if deleted.is_ok() {
            unremoved.clear();
            let _ = remove_if_empty
                .key(key)
                .invoke_async::<i64>(&mut redis)
                .await;
        }
    }
}
