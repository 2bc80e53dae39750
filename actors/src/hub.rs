//! The hub is the front door of the chat core: it starts the matchmaker and the purge timer,
//! and is the one entry point a transport uses to connect a client (`Hub::connect`) or to
//! shut everything down (`Hub::shutdown`). What sessions share lives in `ChatContext`; the hub
//! holds it, and nothing in the core depends on the hub.

use std::sync::Arc;

use crate::abuse::AbuseDesk;
use crate::client_key::{ClientKeys, KeyRing};
use crate::config::ChatConfig;
use crate::connection::{
    channel_sink, close_code, ChannelSinkReceiver, ClientFrame, ClientSink, FrameStream,
    OutboxGauge, Outgoing,
};
pub use crate::context::PrivacyReport;
use crate::context::{Arriving, ChatContext};
use crate::matchmaker::MatchmakerHandle;
use crate::metrics::{ChatMetrics, Refusal};
use crate::protocol::{render_error, retry_after_ms, ErrorCode, ResumePoint};
use crate::purge::{PurgeHandle, PurgeTimer};
use crate::rate_limits::ClientLimiters;
use crate::registry::{Attach, NoPlace, ResumeToken, SessionCommand, SessionSlot, StatsSnapshot};
use crate::session::Session;

/// How long a client at its session bound is asked to wait.
const CLIENT_LIMIT_RETRY_MS: u64 = 1000;

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

/// The chat core's front door: the shared context and the long-lived actors' handles.
pub struct Hub {
    context: Arc<ChatContext>,
    matchmaker: MatchmakerHandle,
    purge: PurgeHandle,
}

impl Hub {
    /// Starts the matchmaker and the purge timer on the current arbiter. Must be called from
    /// inside a running actix system.
    pub fn start(config: ChatConfig) -> Arc<Hub> {
        Self::start_with(config, MatchmakerHandle::start_local)
    }

    /// Starts a node of a cluster: its matchmaker is the one shared through Redis, and chats
    /// may span nodes (docs/cluster.md). Connects to Redis first; fails if it cannot.
    pub async fn start_in_cluster(
        config: ChatConfig,
        cluster: &crate::node::ClusterSettings,
    ) -> Result<(Arc<Hub>, crate::node::Node), crate::node::ClusterError> {
        let joined = crate::node::Node::join(cluster).await?;
        let node = joined.node();
        let relay = joined.relay();
        let hub = Self::start_with(config, move |config, metrics, abuse| {
            joined.start_matchmaker(config, metrics, abuse)
        });
        relay.attach_hub(
            hub.context.clone(),
            hub.matchmaker.clone(),
            hub.purge.clone(),
        );
        hub.context.join_cluster(relay);
        let weak = Arc::downgrade(&hub);
        node.beat_while(move || weak.upgrade().map(|hub| hub.stats().online as usize));
        Ok((hub, node))
    }

    fn start_with(
        config: ChatConfig,
        make_matchmaker: impl FnOnce(&ChatConfig, ChatMetrics, Arc<AbuseDesk>) -> MatchmakerHandle,
    ) -> Arc<Hub> {
        let metrics = ChatMetrics::register();
        let abuse = Arc::new(AbuseDesk::new(config.ban_policy));
        let matchmaker = make_matchmaker(&config, metrics.clone(), abuse.clone());
        let client_keys = Arc::new(KeyRing::new(config.salt_rotation));
        let client_limits = Arc::new(ClientLimiters::new(&config.rate_limits));
        let purge_interval = config.purge_interval;
        let context = Arc::new(ChatContext::new(
            config,
            metrics,
            client_keys.clone(),
            client_limits.clone(),
            abuse.clone(),
        ));
        let purge = PurgeHandle::start(PurgeTimer::new(
            purge_interval,
            matchmaker.clone(),
            client_keys,
            context.key_generations_in_use(),
            client_limits,
            abuse,
            context.metrics().purge_tick.clone(),
        ));
        Arc::new(Hub {
            context,
            matchmaker,
            purge,
        })
    }

    pub fn config(&self) -> &ChatConfig {
        self.context.config()
    }

    pub fn metrics(&self) -> &ChatMetrics {
        self.context.metrics()
    }

    pub fn matchmaker(&self) -> &MatchmakerHandle {
        &self.matchmaker
    }

    /// The client keys of the client at `ip`; the address goes no further than this call.
    pub fn client_keys_for(&self, ip: std::net::IpAddr) -> ClientKeys {
        self.context.client_keys_for(ip)
    }

    /// Sessions online, waiting and chatting.
    pub fn stats(&self) -> StatsSnapshot {
        self.context.stats()
    }

    /// Matches and messages since the hub started; a reader takes differences for an interval.
    pub fn activity_totals(&self) -> crate::metrics::ActivityCounts {
        self.metrics().activity_totals()
    }

    /// Sets the sessions gauges (`ephemera_sessions{state,mode}`) from the live counts; called
    /// when metrics are scraped.
    pub fn update_session_gauges(&self) {
        let counts = self.context.sessions_by_mode();
        crate::metrics::set_session_gauges(self.stats().online, counts.waiting, counts.chatting);
    }

    /// A counter for a new connection's outbox that also counts into the server-wide total.
    pub fn new_outbox_gauge(&self) -> OutboxGauge {
        self.context.new_outbox_gauge()
    }

    pub fn is_draining(&self) -> bool {
        self.context.is_draining()
    }

    /// A request to the e-mail list from the client with `keys`; `Err` holds how long to wait
    /// (`max_notify_requests_per_minute`).
    pub fn check_notify_request(&self, keys: &ClientKeys) -> Result<(), std::time::Duration> {
        self.context.check_notify(keys)
    }

    /// What the server holds about the client with `keys`, for GET /api/privacy/me.
    pub fn privacy_report(&self, keys: &ClientKeys) -> PrivacyReport {
        self.context.privacy_report(keys)
    }

    /// Connects the client with keys `keys` (see `KeyRing::client_keys`; the transport turns
    /// the address into keys and forgets it): resumes the session of `resume` if it is still
    /// alive, otherwise starts a new one. When the server is full or draining, or this client
    /// holds its maximum of sessions, the client is told so and its connection is closed.
    pub async fn connect(
        self: &Arc<Self>,
        keys: ClientKeys,
        resume: Option<(&str, ResumePoint)>,
        mut sink: Box<dyn ClientSink>,
        frames: FrameStream,
    ) {
        if let Err(wait) = self.context.check_connection(&keys) {
            self.metrics().refused(Refusal::RateLimited);
            let mut sink = sink;
            self.metrics().error_sent(ErrorCode::RateLimited);
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
        if let Some((token, from)) = resume {
            let session = self.context.live_session(token);
            if let (None, Some(cluster)) = (&session, self.context.cluster().cloned()) {
                // Another node may hold it: it moves here, into a place of this client's.
                let slot = match self.context.admit(&keys) {
                    Ok(slot) => slot,
                    Err(no_place) => return self.refuse_place(no_place, sink),
                };
                let arriving = Arriving { slot, sink, frames };
                return match cluster.take_over(token.to_owned(), from, arriving).await {
                    Ok(()) => {}
                    Err(back) => self.start_session_in(keys, back.slot, back.sink, back.frames),
                };
            }
            if let Some(session) = session {
                let attach = Attach {
                    sink,
                    frames,
                    from,
                    token: ResumeToken::presented(token),
                };
                match session.send(SessionCommand::Attach(attach)).await {
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
        let keys = self.client_keys_for(client_ip);
        self.connect(keys, None, Box::new(sink), Box::pin(stream))
            .await;
        InProcessClient { frames, out }
    }

    fn start_session(
        self: &Arc<Self>,
        keys: ClientKeys,
        sink: Box<dyn ClientSink>,
        frames: FrameStream,
    ) {
        match self.context.admit(&keys) {
            Ok(slot) => self.start_session_in(keys, slot, sink, frames),
            Err(no_place) => self.refuse_place(no_place, sink),
        }
    }

    fn start_session_in(
        self: &Arc<Self>,
        keys: ClientKeys,
        slot: SessionSlot,
        sink: Box<dyn ClientSink>,
        frames: FrameStream,
    ) {
        self.metrics().session_started_in(keys.region);
        Session::start_new(
            self.context.clone(),
            self.matchmaker.clone(),
            self.purge.clone(),
            slot,
            sink,
            frames,
        );
    }

    /// Tells a client there is no place for it (see `ChatContext::admit`) and closes.
    fn refuse_place(&self, no_place: NoPlace, mut sink: Box<dyn ClientSink>) {
        let refusal = match no_place {
            NoPlace::ServerFull => {
                self.metrics().refused(Refusal::ServerBusy);
                self.metrics().error_sent(ErrorCode::ServerBusy);
                render_error(
                    ErrorCode::ServerBusy,
                    "the server is full, try again later",
                    None,
                )
            }
            NoPlace::ClientLimit => {
                self.metrics().refused(Refusal::ClientSessions);
                self.metrics().error_sent(ErrorCode::RateLimited);
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

    /// Starts draining: new connections are refused, every chat ends with `server_shutdown`
    /// and every connection is closed with a close frame. Returns at once; `drained` waits for
    /// the end.
    pub fn shutdown(&self) {
        for session in self.context.begin_draining() {
            session.do_send(SessionCommand::Shutdown);
        }
    }

    /// Waits until no session is left (after `shutdown`).
    pub async fn drained(&self) {
        self.context.drained().await;
    }
}
