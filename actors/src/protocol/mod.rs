//! Protocol v1 on the wire: the limits, codes and requests (here), parsing and validating
//! client frames (`parse`), and rendering server frames (`render`). The session actor calls
//! `parse_client_frame`; everyone who sends a frame to a client renders it with `render`, so
//! the JSON shapes live in one place.

mod parse;
mod render;

pub use parse::{base64_decoded_len, parse_client_frame};
pub use render::*;

use std::borrow::Cow;

use bytestring::ByteString;
use serde::Serialize;

use crate::ids::ChatId;

pub const PROTOCOL_VERSION: u32 = 1;

/// The limits a client must respect; echoed to it in `hello`.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub max_text_chars: usize,
    pub max_nick_chars: usize,
    pub max_interests: usize,
    pub max_interest_chars: usize,
    pub max_media_bytes: usize,
    pub max_signal_bytes: usize,
    pub max_frame_bytes: usize,
    pub event_log_max_events: usize,
    pub event_log_max_bytes: usize,
    pub media_mime_types: &'static [&'static str],
    /// `signal` frames per minute per session (0: unlimited).
    pub max_signals_per_minute: u32,
    /// `typing` frames per second per session (0: unlimited); more are dropped unanswered.
    pub max_typing_per_second: u32,
}

impl Limits {
    /// Protocol v1's limits, as the shared spec's table gives them; the server's settings take
    /// their defaults from here.
    pub const V1: Limits = Limits {
        max_text_chars: 2000,
        max_nick_chars: 24,
        max_interests: 10,
        max_interest_chars: 32,
        max_media_bytes: 1 << 20,
        max_signal_bytes: 64 << 10,
        max_frame_bytes: 2 << 20,
        event_log_max_events: 256,
        event_log_max_bytes: 4 << 20,
        media_mime_types: MEDIA_MIME_TYPES,
        max_signals_per_minute: 120,
        max_typing_per_second: 4,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::V1
    }
}

pub const MEDIA_MIME_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "audio/webm",
    "audio/ogg",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Text,
    Video,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Text => "text",
            Mode::Video => "video",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Audio,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Audio => "audio",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportReason {
    Spam,
    Harassment,
    Nudity,
    Minor,
    Other,
}

impl ReportReason {
    pub const ALL: [ReportReason; 5] = [
        ReportReason::Spam,
        ReportReason::Harassment,
        ReportReason::Nudity,
        ReportReason::Minor,
        ReportReason::Other,
    ];

    /// Its place in `ALL` (an exhaustive match: a new reason cannot be forgotten).
    pub fn index(self) -> usize {
        match self {
            ReportReason::Spam => 0,
            ReportReason::Harassment => 1,
            ReportReason::Nudity => 2,
            ReportReason::Minor => 3,
            ReportReason::Other => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReportReason::Spam => "spam",
            ReportReason::Harassment => "harassment",
            ReportReason::Nudity => "nudity",
            ReportReason::Minor => "minor",
            ReportReason::Other => "other",
        }
    }
}

/// Why a chat ended, as one member sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedReason {
    YouLeft,
    StrangerLeft,
    StrangerLost,
    YouReported,
    ServerShutdown,
}

impl EndedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndedReason::YouLeft => "you_left",
            EndedReason::StrangerLeft => "stranger_left",
            EndedReason::StrangerLost => "stranger_lost",
            EndedReason::YouReported => "you_reported",
            EndedReason::ServerShutdown => "server_shutdown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    TooLarge,
    RateLimited,
    Banned,
    AgeRequired,
    NotChatting,
    AlreadyChatting,
    PowRequired,
    PowInvalid,
    ServerBusy,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadRequest,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Banned,
        ErrorCode::AgeRequired,
        ErrorCode::NotChatting,
        ErrorCode::AlreadyChatting,
        ErrorCode::PowRequired,
        ErrorCode::PowInvalid,
        ErrorCode::ServerBusy,
    ];

    /// Its place in `ALL` (an exhaustive match: a new code cannot be forgotten).
    pub fn index(self) -> usize {
        match self {
            ErrorCode::BadRequest => 0,
            ErrorCode::TooLarge => 1,
            ErrorCode::RateLimited => 2,
            ErrorCode::Banned => 3,
            ErrorCode::AgeRequired => 4,
            ErrorCode::NotChatting => 5,
            ErrorCode::AlreadyChatting => 6,
            ErrorCode::PowRequired => 7,
            ErrorCode::PowInvalid => 8,
            ErrorCode::ServerBusy => 9,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Banned => "banned",
            ErrorCode::AgeRequired => "age_required",
            ErrorCode::NotChatting => "not_chatting",
            ErrorCode::AlreadyChatting => "already_chatting",
            ErrorCode::PowRequired => "pow_required",
            ErrorCode::PowInvalid => "pow_invalid",
            ErrorCode::ServerBusy => "server_busy",
        }
    }
}

/// A refused client frame: the code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl ProtocolError {
    fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    fn too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }
}

/// What a client asks for in `find`, validated and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindRequest {
    pub adult: bool,
    pub mode: Mode,
    /// Trimmed, lowercased, de-duplicated, none empty.
    pub interests: Vec<String>,
    /// Trimmed; `None` when absent or empty.
    pub nick: Option<String>,
    pub pow: Option<String>,
}

/// Characters of a client's message id (`id` in `msg` and `media`, v1.1), at most.
pub const MAX_MESSAGE_ID_CHARS: usize = 64;

/// A `msg` or `media` as the chat logs it, rendered once: the client's message id as
/// `"id":"…",` (the first `id_len` bytes, empty without one), which only the sender's echo
/// carries, then the JSON tail both members share (`"text":"…"}`, or
/// `"kind":"…","mime":"…","data":"…"}`).
#[derive(Debug)]
pub struct ChatBody {
    pub bytes: Vec<u8>,
    pub id_len: usize,
}

/// Where a resuming client was, as it says: the chat it last knew (v1.1) and the last `seq`
/// it saw in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumePoint {
    pub chat: Option<ChatId>,
    pub last_seq: u64,
}

/// A `resume` frame (v1.1): the token the client presents and where it was.
#[derive(Debug)]
pub struct ResumeRequest {
    pub token: String,
    pub point: ResumePoint,
}

/// A validated client frame.
#[derive(Debug)]
pub enum ClientRequest {
    Find(FindRequest),
    Msg {
        body: ChatBody,
    },
    Typing {
        active: bool,
    },
    Media {
        body: ChatBody,
    },
    /// The whole outgoing `signal` frame, with `data` copied verbatim.
    Signal {
        frame: ByteString,
    },
    Next,
    Leave,
    Report {
        reason: ReportReason,
    },
    /// `resume` as a connection's first frame; `None` when what it names cannot be used, which
    /// means a fresh session.
    Resume(Option<ResumeRequest>),
}

/// A wait as whole milliseconds for `retry_after_ms`, never 0 (0 would read as "retry now").
pub fn retry_after_ms(wait: std::time::Duration) -> u64 {
    (wait.as_millis() as u64).max(1)
}

/// Appends `text` as a JSON string literal.
pub fn write_json_string(out: &mut Vec<u8>, text: &str) {
    // Serialising a &str into a Vec cannot fail: serde_json only errors on I/O or on
    // non-string map keys, neither of which can happen here.
    serde_json::to_writer(&mut *out, text).expect("writing a JSON string into a Vec");
}
