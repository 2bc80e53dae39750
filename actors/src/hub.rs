//! The hub wires the chat core together: it starts the matchmaker and the purge timer, owns the
//! session registry and gauges, and is the one entry point a transport uses to connect a
//! client (`Hub::connect`) or to shut everything down (`Hub::shutdown`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use actix::Addr;

use crate::abuse::{AbuseDesk, AbuseStanding};
use crate::client_key::{ClientKey, ClientKeys, KeyRing};
pub use crate::config::ChatConfig;
use crate::connection::{
    channel_sink, close_code, ChannelSinkReceiver, ClientFrame, ClientSink, FrameStream,
    OutboxGauge, Outgoing,
};
use crate::ids::SessionId;
use crate::matchmaker::MatchmakerHandle;
use crate::metrics::{ChatMetrics, Refusal};
use crate::pow::PowPolicy;
use crate::protocol::{render_error, ErrorCode};
use crate::purge::{PurgeHandle, PurgeTimer};
use crate::rate_limits::{ClientLimiters, HeldBack, RateLimitConfig};
use crate::registry::{
    hash_presented_token, NoPlace, Occupancy, Registry, ResumeToken, Stats, StatsSnapshot,
    TokenHash,
};
use crate::session::{Attach, Session, Shutdown};

/// A wait as whole milliseconds, never 0 (0 would read as "retry now").
pub fn retry_after_ms(wait: Duration) -> u64 {
    (wait.as_millis() as u64).max(1)
}

/// How long a client at its session bound is asked to wait.
const CLIENT_LIMIT_RETRY_MS: u64 = 1000;

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

/// A client connected with `Hub::connect_in_process`.
pub struct InProcessClient {
    pub frames: tokio::sync::mpsc::Sender<ClientFrame>,
    pub out: ChannelSinkReceiver,
}

impl InProcessClient {
    /// Sends one text frame, as the client would.
    pub async fn send_text(&self, text: &str) {
        // A closed channel means the session is gone, which the next read shows.
        let _ = self.frames.send(ClientFrame::Text(text.into())).await;
    }

    /// The next text frame the client received, letting the actors (on this thread) run until
    /// one arrives; `None` if none came within `max_turns` turns of the runtime.
    pub async fn next_text(&self, max_turns: usize) -> Option<bytestring::ByteString> {
        for _ in 0..max_turns {
            match self.out.try_recv() {
                Some(Outgoing::Text(text)) => return Some(text),
                Some(_) => continue,
                None => tokio::task::yield_now().await,
            }
        }
        None
    }
}

/// Shared by every session: settings, registry, gauges, metrics and the long-lived actors.
/// Its fields are private: sessions and transports ask for what they need by intent.
pub struct Hub {
    config: ChatConfig,
    registry: Registry,
    gauges: Stats,
    metrics: ChatMetrics,
    matchmaker: MatchmakerHandle,
    purge: PurgeHandle,
    client_keys: Arc<KeyRing>,
    client_limits: Arc<ClientLimiters>,
    abuse: Arc<AbuseDesk>,
    pow: PowPolicy,
    /// Unsent bytes in every session's outbox together.
    outbox_total: Arc<AtomicUsize>,
    draining: AtomicBool,
    /// Woken when the last session leaves the registry, for shutdown.
    emptied: tokio::sync::Notify,
}

impl Hub {
    /// Starts the matchmaker and the purge timer on the current arbiter. Must be called from
    /// inside a running actix system.
    pub fn start(config: ChatConfig) -> Arc<Hub> {
        let metrics = ChatMetrics::register();
        let abuse = Arc::new(AbuseDesk::new(config.ban_policy));
        let matchmaker = MatchmakerHandle::start_local(&config, metrics.clone(), abuse.clone());
        let client_keys = Arc::new(KeyRing::new(config.salt_rotation));
        let client_limits = Arc::new(ClientLimiters::new(&config.rate_limits));
        let registry = Registry::new(config.max_sessions, config.max_sessions_per_client);
        let purge = PurgeHandle::start(PurgeTimer::new(
            config.purge_interval,
            matchmaker.clone(),
            client_keys.clone(),
            registry.key_generations_in_use(),
            client_limits.clone(),
            abuse.clone(),
        ));
        Arc::new(Hub {
            registry,
            client_keys,
            client_limits,
            abuse,
            outbox_total: Arc::default(),
            pow: PowPolicy::new(
                config.pow_difficulty_bits,
                config.pow_auto_threshold_per_second,
                config.pow_auto_difficulty_bits,
            ),
            gauges: Stats::default(),
            metrics,
            matchmaker,
            purge,
            config,
            draining: AtomicBool::new(false),
            emptied: tokio::sync::Notify::new(),
        })
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    pub fn metrics(&self) -> &ChatMetrics {
        &self.metrics
    }

    pub fn matchmaker(&self) -> &MatchmakerHandle {
        &self.matchmaker
    }

    pub(crate) fn purge(&self) -> &PurgeHandle {
        &self.purge
    }

    /// The client keys of the client at `ip`; the address goes no further than this call.
    pub fn client_keys_for(&self, ip: std::net::IpAddr) -> ClientKeys {
        self.client_keys.client_keys(ip)
    }

    /// Sessions online, waiting and chatting.
    pub fn stats(&self) -> StatsSnapshot {
        self.gauges.snapshot(self.registry.live_sessions())
    }

    /// A session moved between idle, waiting and chatting.
    pub(crate) fn session_moved(&self, from: Occupancy, to: Occupancy) {
        self.gauges.moved(from, to);
    }

    pub(crate) fn next_session_id(&self) -> SessionId {
        self.registry.next_session_id()
    }

    /// A session started: it can be resumed by its token hash from now on.
    pub(crate) fn session_started(&self, token: TokenHash, session: Addr<Session>) {
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

    /// Connects the client with keys `keys` (see `KeyRing::client_keys`; the transport turns
    /// the address into keys and forgets it): resumes the session of `resume` if it is still
    /// alive, otherwise starts a new one. When the server is full or draining, or this client
    /// holds its maximum of sessions, the client is told so and its connection is closed.
    pub async fn connect(
        self: &Arc<Self>,
        keys: ClientKeys,
        resume: Option<(&str, u64)>,
        mut sink: Box<dyn ClientSink>,
        frames: FrameStream,
    ) {
        if let Err(wait) = self.client_limits.check_connection(&keys) {
            self.metrics.refused(Refusal::RateLimited);
            let mut sink = sink;
            sink.send(Outgoing::Text(render_error(
                ErrorCode::RateLimited,
                "too many new connections from your network; wait a little",
                Some(retry_after_ms(wait)),
            )));
            sink.send(Outgoing::Close {
                code: close_code::TRY_AGAIN_LATER,
                reason: "try again later",
            });
            return;
        }
        if let Some((token, last_seq)) = resume {
            if let Some(session) =
                hash_presented_token(token).and_then(|h| self.registry.lookup(&h))
            {
                let attach = Attach {
                    sink,
                    frames,
                    last_seq,
                    token: ResumeToken::presented(token),
                };
                match session.send(attach).await {
                    Ok(Ok(())) => return,
                    // The session ended between the lookup and the attach: give the client
                    // back its connection and start afresh.
                    Ok(Err(returned)) => {
                        sink = returned.sink;
                        return self.start_session(keys, sink, returned.frames);
                    }
                    // The session stopped before it read the attach; the connection went with
                    // the message and closes, and the client's next try starts afresh.
                    Err(_) => return,
                }
            }
        }
        self.start_session(keys, sink, frames);
    }

    /// Connects a client that lives in this process (tests, benches, an in-process load
    /// generator): frames go in through the returned sender, whose channel holds up to
    /// `frames_ahead` of them, and what the client would receive comes out of the receiver.
    pub async fn connect_in_process(
        self: &Arc<Self>,
        client_ip: std::net::IpAddr,
        frames_ahead: usize,
    ) -> InProcessClient {
        let (sink, out) = channel_sink();
        let (frames, mut rx) = tokio::sync::mpsc::channel(frames_ahead.max(1));
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let keys = self.client_keys.client_keys(client_ip);
        self.connect(keys, None, Box::new(sink), Box::pin(stream))
            .await;
        InProcessClient { frames, out }
    }

    fn start_session(
        self: &Arc<Self>,
        keys: ClientKeys,
        mut sink: Box<dyn ClientSink>,
        frames: FrameStream,
    ) {
        self.abuse.carry_over(&keys);
        let slot = if self.is_draining() {
            Err(NoPlace::ServerFull)
        } else {
            self.registry.try_reserve(&keys)
        };
        let refusal = match slot {
            Ok(slot) => {
                Session::start_new(self.clone(), slot, sink, frames);
                return;
            }
            Err(NoPlace::ServerFull) => {
                self.metrics.refused(Refusal::ServerBusy);
                render_error(
                    ErrorCode::ServerBusy,
                    "the server is full, try again later",
                    None,
                )
            }
            Err(NoPlace::ClientLimit) => {
                self.metrics.refused(Refusal::ClientSessions);
                render_error(
                    ErrorCode::RateLimited,
                    "too many open sessions from your network; close one and try again",
                    Some(CLIENT_LIMIT_RETRY_MS),
                )
            }
        };
        sink.send(Outgoing::Text(refusal));
        sink.send(Outgoing::Close {
            code: close_code::TRY_AGAIN_LATER,
            reason: "try again later",
        });
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

    /// Starts draining: new connections are refused, every chat ends with `server_shutdown`
    /// and every connection is closed with a close frame. Returns at once; `drained` waits for
    /// the end.
    pub fn shutdown(&self) {
        self.draining.store(true, Ordering::Release);
        for session in self.registry.all() {
            session.do_send(Shutdown);
        }
    }

    /// Waits until no session is left (after `shutdown`).
    pub async fn drained(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.registry.is_empty() {
                return;
            }
            emptied.await;
        }
    }
}
