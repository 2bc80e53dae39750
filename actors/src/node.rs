//! A node of a cluster: joining it (Redis connections, the heartbeat, the relay's sender and
//! reader), and starting its matchmaker. docs/cluster.md has the design.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::abuse::AbuseDesk;
use crate::cluster::{connect, heartbeat, link, queue, secret};
use crate::config::ChatConfig;
use crate::matchmaker::MatchmakerHandle;
use crate::metrics::ChatMetrics;

/// Every key this server writes in Redis starts with this.
pub const PREFIX: &str = "eph:";
/// How often a node renews its heartbeat, and how long one lasts: a node is taken for dead
/// within `HEARTBEAT_TTL` of its last beat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(1000);
pub const HEARTBEAT_TTL: Duration = Duration::from_millis(3000);
/// How long a node's stream lives without appends (its reader's node is gone).
const STREAM_TTL: Duration = Duration::from_secs(60);
/// Messages for other nodes that may wait while Redis is away.
const RELAY_CAPACITY: usize = 65_536;
/// Messages from other nodes opened but not yet handed to their actors.
const INBOX_CAPACITY: usize = 4096;

/// What a node needs to join a cluster.
#[derive(Clone)]
pub struct ClusterSettings {
    /// redis://host:port/ (or rediss://).
    pub redis_url: String,
    /// 64 hex digits, the same on every node.
    pub secret_hex: zeroize::Zeroizing<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Secret(#[from] secret::BadSecret),
    #[error("cluster_redis_url: {0}")]
    Redis(#[from] redis::RedisError),
}

/// This node's membership: its id and its connections.
#[derive(Clone)]
pub struct Node {
    id: String,
    commands: ConnectionManager,
}

/// A node connected to Redis, before its hub starts.
pub struct Joined {
    node: Node,
    keys: Arc<secret::ClusterKeys>,
    relay: Arc<crate::remote::NodeRelay>,
    inbox: tokio::sync::mpsc::Receiver<link::Inbound>,
}

impl Node {
    /// Connects to Redis, says this node is alive, and starts the relay's sender and reader.
    pub async fn join(settings: &ClusterSettings) -> Result<Joined, ClusterError> {
        let keys = Arc::new(secret::ClusterKeys::from_hex(&settings.secret_hex)?);
        let id = secret::random_node_id();
        let mut commands = connect(&settings.redis_url, Duration::from_millis(2000)).await?;
        // A blocking read holds its connection: the reader has one of its own.
        let reads = connect(
            &settings.redis_url,
            Duration::from_millis(link::READ_BLOCK_MS * 5),
        )
        .await?;
        heartbeat::beat(&mut commands, PREFIX, &id, 0, HEARTBEAT_TTL).await?;
        let sender = link::start_sender(
            commands.clone(),
            &keys,
            PREFIX,
            &id,
            STREAM_TTL,
            RELAY_CAPACITY,
        );
        let relay =
            crate::remote::NodeRelay::new(&id, sender, keys.clone(), commands.clone(), PREFIX);
        let (deliver, inbox) = tokio::sync::mpsc::channel(INBOX_CAPACITY);
        link::start_reader(reads, (*keys).clone(), PREFIX, &id, deliver);
        Ok(Joined {
            node: Node { id, commands },
            keys,
            relay,
            inbox,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Renews this node's heartbeat, with the online count `online` gives, until it gives
    /// `None` (the hub is gone).
    pub fn beat_while(&self, online: impl Fn() -> Option<usize> + 'static) {
        let (id, mut commands) = (self.id.clone(), self.commands.clone());
        actix::spawn(async move {
            let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
            loop {
                ticks.tick().await;
                let Some(online) = online() else { return };
                if let Err(error) =
                    heartbeat::beat(&mut commands, PREFIX, &id, online, HEARTBEAT_TTL).await
                {
                    tracing::warn!(%error, "cluster heartbeat failed");
                }
            }
        });
    }

    /// Watches the heartbeats of the nodes chats here depend on: a late one makes their
    /// strangers `stranger_away`, an expired one ends those chats (`stranger_lost`).
    ///
    /// A heartbeat missing from Redis is not enough to declare its node dead: Redis itself
    /// may have restarted empty, which takes every heartbeat with it. A node is gone only once
    /// its heartbeat has been missing for a whole `HEARTBEAT_TTL` while this node's own
    /// heartbeat is there (so Redis is up and beats are being written).
    pub fn watch_nodes(&self, relay: Arc<crate::remote::NodeRelay>) {
        let mut commands = self.commands.clone();
        let own_key = heartbeat::heartbeat_key(PREFIX, &self.id);
        actix::spawn(async move {
            let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
            let mut missing_since: std::collections::HashMap<String, tokio::time::Instant> =
                std::collections::HashMap::new();
            loop {
                ticks.tick().await;
                let watched = relay.watched_nodes();
                missing_since.retain(|node, _| watched.contains(node));
                if watched.is_empty() {
                    continue;
                }
                let own: redis::RedisResult<bool> = redis::cmd("EXISTS")
                    .arg(&own_key)
                    .query_async(&mut commands)
                    .await;
                let redis_has_beats = matches!(own, Ok(true));
                for other in watched {
                    let key = heartbeat::heartbeat_key(PREFIX, &other);
                    let left: redis::RedisResult<i64> = redis::cmd("PTTL")
                        .arg(&key)
                        .query_async(&mut commands)
                        .await;
                    match left {
                        // -2: no such key.
                        Ok(-2) => {
                            let since = *missing_since
                                .entry(other.clone())
                                .or_insert_with(tokio::time::Instant::now);
                            relay.node_late(&other);
                            if redis_has_beats && since.elapsed() >= HEARTBEAT_TTL {
                                missing_since.remove(&other);
                                relay.node_gone(&other);
                            }
                        }
                        // More than a beat and a half late.
                        Ok(ms)
                            if ms >= 0
                                && (ms as u128)
                                    < (HEARTBEAT_TTL - HEARTBEAT_EVERY * 3 / 2).as_millis() =>
                        {
                            relay.node_late(&other)
                        }
                        Ok(_) => {
                            missing_since.remove(&other);
                            relay.node_on_time(&other)
                        }
                        // Redis did not answer: nobody is declared dead for that.
                        Err(_) => {}
                    }
                }
            }
        });
    }

    /// The cluster's live nodes and their online sessions, summed.
    pub async fn cluster_online(&self) -> redis::RedisResult<(usize, usize)> {
        let mut commands = self.commands.clone();
        heartbeat::cluster_online(&mut commands, PREFIX).await
    }

    /// Leaves at a clean shutdown: the heartbeat goes at once instead of expiring.
    pub async fn depart(&self) {
        let mut commands = self.commands.clone();
        let _ = heartbeat::depart(&mut commands, PREFIX, &self.id).await;
    }
}

impl Joined {
    pub fn node(&self) -> Node {
        self.node.clone()
    }

    pub fn relay(&self) -> Arc<crate::remote::NodeRelay> {
        self.relay.clone()
    }

    /// Starts the cluster matchmaker and hands it the relay's inbox.
    pub fn start_matchmaker(
        self,
        config: &ChatConfig,
        metrics: ChatMetrics,
        abuse: Arc<AbuseDesk>,
    ) -> MatchmakerHandle {
        use actix::Actor as _;
        let (wait_ttl, cooldown) =
            crate::cluster_matchmaker::ClusterMatchmaker::queue_timings(config);
        let queue = queue::ClusterQueue::new(
            self.node.commands.clone(),
            PREFIX,
            &self.node.id,
            wait_ttl,
            cooldown,
        );
        let matchmaker = crate::cluster_matchmaker::ClusterMatchmaker::new(
            config,
            metrics,
            abuse,
            queue,
            self.keys,
            self.relay.clone(),
        )
        .start();
        self.relay.dispatch(self.inbox, matchmaker.clone());
        self.node.watch_nodes(self.relay.clone());
        MatchmakerHandle::Cluster(matchmaker)
    }
}
