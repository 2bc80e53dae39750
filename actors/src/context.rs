//! `ChatContext`: what every session shares and reads (settings, the registry of live
//! sessions and its bounds, gauges, metrics, client keys, rate limits, bans, proof of work,
//! the server-wide outbox total). It holds no actor, so sessions can depend on it without
//! depending on whoever starts them; its fields are private and it is asked by intent.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use tokio::time::Instant;

use crate::abuse::{AbuseDesk, AbuseStanding};
use crate::client_key::{ClientKey, ClientKeys, KeyRing};
use crate::config::ChatConfig;
use crate::connection::OutboxGauge;
use crate::ids::SessionId;
use crate::metrics::ChatMetrics;
use crate::pow::PowPolicy;
use crate::rate_limits::{ClientLimiters, HeldBack, RateLimitConfig};
use crate::registry::{
    hash_presented_token, KeyGenerationsInUse, ModeCounts, NoPlace, Occupancy, Registry,
    SessionCommand, SessionSlot, Stats, StatsSnapshot, TokenHash,
};

/// Everything the server holds about one client key.
#[derive(Debug, serde::Serialize)]
pub struct PrivacyReport {
    /// The first bytes of the key, in hex: enough to see it change when the salt rotates.
    pub client_key_prefix: String,
    pub open_sessions: usize,
    /// Reports counted against this key, bans so far, and any ban in force.
    pub abuse: AbuseStanding,
    /// The rate limits that apply to this client.
    pub limits: RateLimitConfig,
    /// How long each limit still holds this client back (null: not at all).
    pub rate_limited: HeldBack,
}

/// What a node of a cluster adds to the sessions' world: it tells the cluster where each
/// session is, and takes over a session another node holds when its client resumes here
/// (implemented by `remote::NodeRelay`; absent on a lone node).
pub trait ClusterLink: Send + Sync {
    /// A session here holds the token hashed `token`: resumes anywhere find it here, for `ttl`.
    fn session_here(&self, token: &crate::registry::TokenHash, ttl: std::time::Duration);
    /// That session ended.
    fn session_gone(&self, token: &crate::registry::TokenHash);
    /// Moves the session another node holds for `token` here, where it takes the client's
    /// connection and its place `slot`. Gives them back when no node holds such a session.
    fn take_over(
        &self,
        token: String,
        from: crate::protocol::ResumePoint,
        arriving: Arriving,
    ) -> TakeOverAnswer;
}

/// What a session moving here needs of this node: the client's place and its connection.
pub struct Arriving {
    pub slot: crate::registry::SessionSlot,
    pub sink: Box<dyn crate::connection::ClientSink>,
    pub frames: crate::connection::FrameStream,
}

/// What `ClusterLink::take_over` comes to: taken over, or the client's place and connection
/// back.
pub type TakeOverAnswer =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Arriving>> + Send>>;

pub struct ChatContext {
    config: ChatConfig,
    registry: Registry,
    gauges: Stats,
    metrics: ChatMetrics,
    client_keys: Arc<KeyRing>,
    client_limits: Arc<ClientLimiters>,
    abuse: Arc<AbuseDesk>,
    pow: PowPolicy,
    /// Unsent bytes in every session's outbox together.
    outbox_total: Arc<AtomicUsize>,
    draining: AtomicBool,
    /// Woken when the last session leaves the registry, for shutdown.
    emptied: tokio::sync::Notify,
    /// The cluster this node is part of, if any.
    cluster: std::sync::OnceLock<Arc<dyn ClusterLink>>,
}

impl ChatContext {
    pub fn new(
        config: ChatConfig,
        metrics: ChatMetrics,
        client_keys: Arc<KeyRing>,
        client_limits: Arc<ClientLimiters>,
        abuse: Arc<AbuseDesk>,
    ) -> Self {
        Self {
            registry: Registry::new(config.max_sessions, config.max_sessions_per_client),
            gauges: Stats::default(),
            pow: PowPolicy::new(
                config.pow_difficulty_bits,
                config.pow_auto_threshold_per_second,
                config.pow_auto_difficulty_bits,
            ),
            outbox_total: Arc::default(),
            draining: AtomicBool::new(false),
            emptied: tokio::sync::Notify::new(),
            cluster: std::sync::OnceLock::new(),
            config,
            metrics,
            client_keys,
            client_limits,
            abuse,
        }
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    /// Makes this node part of a cluster (once, at start).
    pub fn join_cluster(&self, cluster: Arc<dyn ClusterLink>) {
        let _ = self.cluster.set(cluster);
    }

    pub fn cluster(&self) -> Option<&Arc<dyn ClusterLink>> {
        self.cluster.get()
    }

    pub fn metrics(&self) -> &ChatMetrics {
        &self.metrics
    }

    /// The client keys of the client at `ip`; the address goes no further than this call.
    pub fn client_keys_for(&self, ip: std::net::IpAddr) -> ClientKeys {
        self.client_keys.client_keys(ip)
    }

    /// Sessions online, waiting and chatting.
    pub fn stats(&self) -> StatsSnapshot {
        self.gauges.snapshot(self.registry.live_sessions())
    }

    /// Sessions waiting and chatting, by mode.
    pub fn sessions_by_mode(&self) -> ModeCounts {
        self.gauges.by_mode()
    }

    /// Which salt generations live sessions were keyed under (for the purge timer).
    pub(crate) fn key_generations_in_use(&self) -> KeyGenerationsInUse {
        self.registry.key_generations_in_use()
    }

    /// A new connection from the client with `keys`: `Err` holds how long it must wait.
    pub(crate) fn check_connection(&self, keys: &ClientKeys) -> Result<(), Duration> {
        self.client_limits.check_connection(keys)
    }

    pub(crate) fn check_notify(&self, keys: &ClientKeys) -> Result<(), Duration> {
        self.client_limits.check_notify(keys)
    }

    /// A place for a new session of the client with `keys`, unless the server is draining or
    /// full or the client holds its bound. What is held under the client's older keys moves
    /// to its current one first.
    pub(crate) fn admit(&self, keys: &ClientKeys) -> Result<SessionSlot, NoPlace> {
        self.abuse.carry_over(keys);
        if self.is_draining() {
            return Err(NoPlace::ServerFull);
        }
        self.registry.try_reserve(keys)
    }

    /// The live session a presented resume token names, if any.
    pub(crate) fn live_session(&self, token: &str) -> Option<Recipient<SessionCommand>> {
        hash_presented_token(token).and_then(|hash| self.registry.lookup(&hash))
    }

    /// A session moved between idle, waiting and chatting.
    pub(crate) fn session_moved(&self, from: Occupancy, to: Occupancy) {
        self.gauges.moved(from, to);
    }

    pub(crate) fn next_session_id(&self) -> SessionId {
        self.registry.next_session_id()
    }

    /// A session started: it can be resumed by its token hash from now on.
    pub(crate) fn session_started(&self, token: TokenHash, session: Recipient<SessionCommand>) {
        self.registry.insert(token, session);
        self.metrics.sessions_started.increment(1);
    }

    /// A session ended.
    pub(crate) fn session_ended(&self, token: &TokenHash) {
        self.registry.remove(token);
        if self.registry.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    /// A counter for a new connection's outbox that also counts into the server-wide total.
    pub fn new_outbox_gauge(&self) -> OutboxGauge {
        OutboxGauge::counting_into(self.outbox_total.clone())
    }

    /// Whether all outboxes together hold more than `outbox_total_max_bytes`.
    pub(crate) fn outboxes_over_budget(&self) -> bool {
        self.outbox_total.load(Ordering::Relaxed) > self.config.outbox_total_max_bytes
    }

    /// How long `client` is still banned, if it is.
    /// A report against a client of this node, made in a chat on another node.
    pub(crate) fn report_from_elsewhere(
        &self,
        reported: ClientKey,
        reporter: &crate::client_key::RemoteClient,
    ) {
        let (key, origin) = (reporter.key(), reporter.origin());
        if self
            .abuse
            .report_from(reported, key, Some(&origin), Instant::now())
        {
            tracing::info!("a client key was banned after reports");
        }
    }

    pub(crate) fn ban_remaining(&self, client: ClientKey, now: Instant) -> Option<Duration> {
        self.abuse.banned_for(client, now)
    }

    /// Spends one of `client`'s finds; `Err` holds how long to wait.
    pub(crate) fn spend_find(&self, client: ClientKey) -> Result<(), Duration> {
        self.client_limits.check_find(client)
    }

    /// The proof-of-work difficulty to ask of a session starting now (0: none).
    pub(crate) fn pow_difficulty_for_new_session(&self, now: Instant) -> u32 {
        self.pow.difficulty_for_new_session(now)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the server draining and returns every live session, to be told so.
    pub(crate) fn begin_draining(&self) -> Vec<Recipient<SessionCommand>> {
        self.draining.store(true, Ordering::Release);
        self.registry.all()
    }

    /// Waits until no session is left (after `begin_draining`).
    pub async fn drained(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.registry.is_empty() {
                return;
            }
            emptied.await;
        }
    }

    /// What the server holds about the client with `keys`, for GET /api/privacy/me.
    pub fn privacy_report(&self, keys: &ClientKeys) -> PrivacyReport {
        let client = keys.current;
        PrivacyReport {
            client_key_prefix: client.short(),
            open_sessions: self.registry.sessions_of(keys),
            abuse: self.abuse.standing(client, Instant::now()),
            limits: self.config.rate_limits,
            rate_limited: self.client_limits.held_back(client, Instant::now()),
        }
    }
}
