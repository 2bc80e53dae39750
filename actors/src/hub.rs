//! The hub wires the chat core together: it starts the matchmaker and the purge timer, owns the
//! session registry and gauges, and is the one entry point a transport uses to connect a
//! client (`Hub::connect`) or to shut everything down (`Hub::shutdown`).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use futures_core::Stream;

use crate::connection::{close_code, ClientFrame, ClientSink, Outgoing};
use crate::matchmaker::{Matchmaker, MatchmakerHandle};
use crate::metrics::{ChatMetrics, Refusal};
use crate::protocol::{render_error, ErrorCode, IceServer, Limits};
use crate::purge::PurgeTimer;
use crate::registry::{hash_presented_token, Registry, ResumeToken, Stats, StatsSnapshot};
use crate::session::{Attach, Session, Shutdown};

/// What the actors need to know of the server's settings.
pub struct ChatConfig {
    pub limits: Limits,
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub resume_grace: Duration,
    pub interest_timeout: Duration,
    pub rematch_cooldown: Duration,
    pub purge_interval: Duration,
    pub session_outbox_max_bytes: usize,
    pub max_sessions: usize,
    /// Protocol errors (bad_request, too_large) a connection may cause within a minute.
    pub max_protocol_errors_per_minute: usize,
    /// Messages a chat may have queued before a member's sends are refused.
    pub pair_mailbox_capacity: usize,
    pub ice_servers: Vec<IceServer>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            heartbeat_interval: Duration::from_secs(15),
            client_timeout: Duration::from_secs(45),
            resume_grace: Duration::from_secs(30),
            interest_timeout: Duration::from_secs(5),
            rematch_cooldown: Duration::from_secs(600),
            purge_interval: Duration::from_secs(1),
            session_outbox_max_bytes: 8 << 20,
            max_sessions: 100_000,
            max_protocol_errors_per_minute: 20,
            pair_mailbox_capacity: 256,
            ice_servers: Vec::new(),
        }
    }
}

/// A client connection's incoming frames; must end with `ClientFrame::Dropped` or a close.
pub type FrameStream = Pin<Box<dyn Stream<Item = ClientFrame> + Send>>;

/// Shared by every session: settings, registry, gauges, metrics and the long-lived actors.
pub struct Hub {
    pub config: ChatConfig,
    pub registry: Registry,
    pub stats: Stats,
    pub metrics: ChatMetrics,
    pub matchmaker: MatchmakerHandle,
    pub purge: Addr<PurgeTimer>,
    draining: AtomicBool,
}

impl Hub {
    /// Starts the matchmaker and the purge timer on the current arbiter. Must be called from
    /// inside a running actix system.
    pub fn start(config: ChatConfig) -> Arc<Hub> {
        let metrics = ChatMetrics::register();
        let matchmaker =
            MatchmakerHandle::new(Matchmaker::new(&config, ChatMetrics::register()).start());
        let purge = PurgeTimer::new(config.purge_interval, matchmaker.clone()).start();
        Arc::new(Hub {
            registry: Registry::new(config.max_sessions),
            stats: Stats::default(),
            metrics,
            matchmaker,
            purge,
            config,
            draining: AtomicBool::new(false),
        })
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Connects a client: resumes the session of `resume` if it is still alive, otherwise
    /// starts a new one. When the server is full or draining, the client gets `server_busy`
    /// and its connection is closed.
    pub async fn connect(
        self: &Arc<Self>,
        resume: Option<(&str, u64)>,
        mut sink: Box<dyn ClientSink>,
        frames: FrameStream,
    ) {
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
                        return self.start_session(sink, returned.frames);
                    }
                    // The session stopped before it read the attach; the connection went with
                    // the message and closes, and the client's next try starts afresh.
                    Err(_) => return,
                }
            }
        }
        self.start_session(sink, frames);
    }

    fn start_session(self: &Arc<Self>, mut sink: Box<dyn ClientSink>, frames: FrameStream) {
        let slot = if self.is_draining() {
            None
        } else {
            self.registry.try_reserve()
        };
        let Some(slot) = slot else {
            self.metrics.refused(Refusal::ServerBusy);
            sink.send(Outgoing::Text(render_error(
                ErrorCode::ServerBusy,
                "the server is full, try again later",
                None,
            )));
            sink.send(Outgoing::Close {
                code: close_code::TRY_AGAIN_LATER,
                reason: "server busy",
            });
            return;
        };
        Session::start_new(self.clone(), slot, sink, frames);
    }

    /// Starts draining: new connections are refused, every chat ends with `server_shutdown`
    /// and every connection is closed with a close frame. Returns at once; watch
    /// `registry.is_empty()` for the end.
    pub fn shutdown(&self) {
        self.draining.store(true, Ordering::Release);
        for session in self.registry.all() {
            session.do_send(Shutdown);
        }
    }
}
