//! The chat core's Prometheus series. Handles are registered once, when the hub starts, so
//! the hot path increments a counter without building a key. Labels come from small fixed
//! sets; nothing here can identify a person.

use metrics::{counter, Counter};

/// Why the server refused a client's frame, connection or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// A missing or wrong proof-of-work nonce.
    ProofOfWork,
    /// A /ws request from a page on another site.
    Origin,
    /// A typing indicator past `max_typing_per_second`, dropped without an answer.
    TypingDropped,
    /// A ping or pong past `max_control_frames_per_second`.
    ControlFrames,
    /// An HTTP request the framework could not parse (answered 400 or 431 by it).
    MalformedHttp,
    /// A request on a connection whose earlier responses lie unread (pipelining without
    /// reading); the connection is closed.
    UnreadResponses,
}

impl Refusal {
    /// Its place in `ALL` (an exhaustive match: a new reason cannot be forgotten).
    fn index(self) -> usize {
        match self {
            Refusal::ServerBusy => 0,
            Refusal::BadRequest => 1,
            Refusal::TooLarge => 2,
            Refusal::NotChatting => 3,
            Refusal::AlreadyChatting => 4,
            Refusal::AgeRequired => 5,
            Refusal::ChatBusy => 6,
            Refusal::QueueBusy => 7,
            Refusal::ClientSessions => 8,
            Refusal::RateLimited => 9,
            Refusal::Banned => 10,
            Refusal::ProofOfWork => 11,
            Refusal::Origin => 12,
            Refusal::TypingDropped => 13,
            Refusal::ControlFrames => 14,
            Refusal::MalformedHttp => 15,
            Refusal::UnreadResponses => 16,
        }
    }
    pub const ALL: [Refusal; 17] = [
        Refusal::ServerBusy,
        Refusal::BadRequest,
        Refusal::TooLarge,
        Refusal::NotChatting,
        Refusal::AlreadyChatting,
        Refusal::AgeRequired,
        Refusal::ChatBusy,
        Refusal::QueueBusy,
        Refusal::ClientSessions,
        Refusal::RateLimited,
        Refusal::Banned,
        Refusal::ProofOfWork,
        Refusal::Origin,
        Refusal::TypingDropped,
        Refusal::ControlFrames,
        Refusal::MalformedHttp,
        Refusal::UnreadResponses,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ServerBusy => "server_busy",
            Refusal::BadRequest => "bad_request",
            Refusal::TooLarge => "too_large",
            Refusal::NotChatting => "not_chatting",
            Refusal::AlreadyChatting => "already_chatting",
            Refusal::AgeRequired => "age_required",
            Refusal::ChatBusy => "chat_busy",
            Refusal::QueueBusy => "queue_busy",
            Refusal::ClientSessions => "client_sessions",
            Refusal::RateLimited => "rate_limited",
            Refusal::Banned => "banned",
            Refusal::ProofOfWork => "proof_of_work",
            Refusal::Origin => "origin",
            Refusal::TypingDropped => "typing_dropped",
            Refusal::ControlFrames => "control_frames",
            Refusal::MalformedHttp => "malformed_http",
            Refusal::UnreadResponses => "unread_responses",
        }
    }
}

/// Why a session's connection was closed by the server or lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    CloseFrame,
    Dropped,
    ClientTimeout,
    SlowConsumer,
    ProtocolErrors,
    /// A frame that broke RFC 6455 (closed with 1002 or 1007).
    ProtocolViolation,
    FrameTooLarge,
    ResumedElsewhere,
    Shutdown,
    /// The peer acknowledged nothing while bytes waited for `write_stall_timeout_seconds`.
    WriteStalled,
}

impl Disconnect {
    /// Its place in `ALL` (an exhaustive match: a new reason cannot be forgotten).
    fn index(self) -> usize {
        match self {
            Disconnect::CloseFrame => 0,
            Disconnect::Dropped => 1,
            Disconnect::ClientTimeout => 2,
            Disconnect::SlowConsumer => 3,
            Disconnect::ProtocolErrors => 4,
            Disconnect::ProtocolViolation => 5,
            Disconnect::FrameTooLarge => 6,
            Disconnect::ResumedElsewhere => 7,
            Disconnect::Shutdown => 8,
            Disconnect::WriteStalled => 9,
        }
    }
    pub const ALL: [Disconnect; 10] = [
        Disconnect::CloseFrame,
        Disconnect::Dropped,
        Disconnect::ClientTimeout,
        Disconnect::SlowConsumer,
        Disconnect::ProtocolErrors,
        Disconnect::ProtocolViolation,
        Disconnect::FrameTooLarge,
        Disconnect::ResumedElsewhere,
        Disconnect::Shutdown,
        Disconnect::WriteStalled,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Disconnect::CloseFrame => "close_frame",
            Disconnect::Dropped => "dropped",
            Disconnect::ClientTimeout => "client_timeout",
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::ProtocolErrors => "protocol_errors",
            Disconnect::ProtocolViolation => "protocol_violation",
            Disconnect::FrameTooLarge => "frame_too_large",
            Disconnect::ResumedElsewhere => "resumed_elsewhere",
            Disconnect::Shutdown => "shutdown",
            Disconnect::WriteStalled => "write_stalled",
        }
    }
}

#[derive(Clone)]
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
    /// Messages sent again with an id the chat already held (v1.1): answered with the original
    /// echo, relayed to no one.
    pub resent_messages: Counter,
    pub reports: Counter,
    /// One handle per reason, in the order of `Refusal::ALL`.
    refusals: Vec<Counter>,
    /// One handle per reason, in the order of `Disconnect::ALL`.
    disconnects: Vec<Counter>,
}

impl ChatMetrics {
    /// Registers every series with the global recorder; call after the recorder is installed.
    pub fn register() -> Self {
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
            resent_messages: counter!("ephemera_resent_messages_total"),
            reports: counter!("ephemera_reports_total"),
            refusals: Refusal::ALL
                .iter()
                .map(|r| counter!("ephemera_refusals_total", "reason" => r.label()))
                .collect(),
            disconnects: Disconnect::ALL
                .iter()
                .map(|d| counter!("ephemera_disconnects_total", "reason" => d.label()))
                .collect(),
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
            resent_messages: self.resent_messages.clone(),
        }
    }

    pub fn refused(&self, refusal: Refusal) {
        self.refusals[refusal.index()].increment(1);
    }

    pub fn disconnected(&self, disconnect: Disconnect) {
        self.disconnects[disconnect.index()].increment(1);
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
    pub resent_messages: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_place_and_label() {
        for (place, refusal) in Refusal::ALL.iter().enumerate() {
            assert_eq!(refusal.index(), place, "{refusal:?}");
        }
        for (place, disconnect) in Disconnect::ALL.iter().enumerate() {
            assert_eq!(disconnect.index(), place, "{disconnect:?}");
        }
        let labels: std::collections::HashSet<_> = Refusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len());
    }
}
