//! The chat core's Prometheus series. Handles are registered once, when the hub starts, so
//! the hot path increments a counter without building a key. Labels come from small fixed
//! sets; nothing here can identify a person.

use metrics::{counter, Counter};

/// Why the server refused a client's frame or connection.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    ServerBusy,
    BadRequest,
    TooLarge,
    NotChatting,
    AlreadyChatting,
    AgeRequired,
    /// The chat's mailbox was full: the client sends faster than its chat can take.
    ChatBusy,
    /// The matchmaker's mailbox was full.
    QueueBusy,
    /// The client already holds `max_sessions_per_client`.
    ClientSessions,
    /// Over a rate limit.
    RateLimited,
    /// Banned after reports.
    Banned,
    Other,
}

/// Why a session's connection was closed by the server or lost.
#[derive(Debug, Clone, Copy)]
pub enum Disconnect {
    CloseFrame,
    Dropped,
    ClientTimeout,
    SlowConsumer,
    ProtocolErrors,
    FrameTooLarge,
    ResumedElsewhere,
    Shutdown,
}

pub struct ChatMetrics {
    pub sessions_started: Counter,
    pub sessions_resumed: Counter,
    pub sessions_expired: Counter,
    pub messages: Counter,
    pub media: Counter,
    pub relayed: Counter,
    pub matches: Counter,
    pub chats_ended: Counter,
    pub event_log_evictions: Counter,
    pub replayed_events: Counter,
    pub reports: Counter,
    refusals: [Counter; 12],
    disconnects: [Counter; 8],
}

impl ChatMetrics {
    /// Registers every series with the global recorder; call after the recorder is installed.
    pub fn register() -> Self {
        let refusal =
            |reason: &'static str| counter!("ephemera_refusals_total", "reason" => reason);
        let disconnect =
            |reason: &'static str| counter!("ephemera_disconnects_total", "reason" => reason);
        Self {
            sessions_started: counter!("ephemera_sessions_started_total"),
            sessions_resumed: counter!("ephemera_sessions_resumed_total"),
            sessions_expired: counter!("ephemera_sessions_expired_total"),
            messages: counter!("ephemera_chat_events_total", "kind" => "msg"),
            media: counter!("ephemera_chat_events_total", "kind" => "media"),
            relayed: counter!("ephemera_relayed_total"),
            matches: counter!("ephemera_matches_total"),
            chats_ended: counter!("ephemera_chats_ended_total"),
            event_log_evictions: counter!("ephemera_event_log_evictions_total"),
            replayed_events: counter!("ephemera_replayed_events_total"),
            reports: counter!("ephemera_reports_total"),
            refusals: [
                refusal("server_busy"),
                refusal("bad_request"),
                refusal("too_large"),
                refusal("not_chatting"),
                refusal("already_chatting"),
                refusal("age_required"),
                refusal("chat_busy"),
                refusal("queue_busy"),
                refusal("client_sessions"),
                refusal("rate_limited"),
                refusal("banned"),
                refusal("other"),
            ],
            disconnects: [
                disconnect("close_frame"),
                disconnect("dropped"),
                disconnect("client_timeout"),
                disconnect("slow_consumer"),
                disconnect("protocol_errors"),
                disconnect("frame_too_large"),
                disconnect("resumed_elsewhere"),
                disconnect("shutdown"),
            ],
        }
    }

    /// The handles a pair actor increments.
    pub fn pair_counters(&self) -> PairCounters {
        PairCounters {
            messages: self.messages.clone(),
            media: self.media.clone(),
            relayed: self.relayed.clone(),
            chats_ended: self.chats_ended.clone(),
            event_log_evictions: self.event_log_evictions.clone(),
            reports: self.reports.clone(),
        }
    }

    pub fn refused(&self, refusal: Refusal) {
        self.refusals[refusal as usize].increment(1);
    }

    pub fn disconnected(&self, disconnect: Disconnect) {
        self.disconnects[disconnect as usize].increment(1);
    }
}

/// The series a chat updates, cloned into each pair actor.
#[derive(Clone)]
pub struct PairCounters {
    pub messages: Counter,
    pub media: Counter,
    pub relayed: Counter,
    pub chats_ended: Counter,
    pub event_log_evictions: Counter,
    pub reports: Counter,
}
