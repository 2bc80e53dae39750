//! Protocol v1 on the wire: parsing and validating client frames into requests, and rendering
//! server frames. The session actor calls `parse_client_frame`; everyone who sends a frame to a
//! client renders it here, so the JSON shapes live in one place.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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

/// A validated client frame.
#[derive(Debug)]
pub enum ClientRequest {
    Find(FindRequest),
    /// `body` is the frame's shared JSON tail, `"text":"…"}`, ready for the event log.
    Msg {
        body: Vec<u8>,
    },
    Typing {
        active: bool,
    },
    /// `body` is `"kind":"…","mime":"…","data":"…"}`.
    Media {
        body: Vec<u8>,
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
}

/// Every field any client frame may carry; which are required depends on `type`. Parsing
/// into one flat struct keeps it a single borrowed pass over the JSON.
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow)]
    frame_type: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    adult: Option<bool>,
    #[serde(borrow)]
    mode: Option<Cow<'a, str>>,
    #[serde(borrow)]
    interests: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow)]
    nick: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pow: Option<Cow<'a, str>>,
    active: Option<bool>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    mime: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
}

fn required<T>(field: Option<T>, name: &'static str) -> Result<T, ProtocolError> {
    field.ok_or_else(|| ProtocolError::bad(format!("missing field `{name}`")))
}

/// Parses and validates one text frame from a client.
pub fn parse_client_frame(text: &str, limits: &Limits) -> Result<ClientRequest, ProtocolError> {
    // serde fills a struct from a JSON array too (`["find", null, true]`); only objects are
    // frames.
    if !text.trim_start().starts_with('{') {
        return Err(ProtocolError::bad("a frame is one JSON object"));
    }
    let raw: RawFrame<'_> = serde_json::from_str(text).map_err(|err| {
        ProtocolError::bad(match err.classify() {
            serde_json::error::Category::Data => format!("invalid frame: {err}"),
            _ => "malformed JSON".to_owned(),
        })
    })?;
    match raw.frame_type.as_ref() {
        "find" => parse_find(raw, limits).map(ClientRequest::Find),
        "msg" => {
            let text = required(raw.text, "text")?;
            if text.trim().is_empty() {
                return Err(ProtocolError::bad("text is empty"));
            }
            if exceeds_chars(&text, limits.max_text_chars) {
                return Err(ProtocolError::too_large(format!(
                    "text is longer than {} characters",
                    limits.max_text_chars
                )));
            }
            let mut body = Vec::with_capacity(text.len() + 12);
            body.extend_from_slice(b"\"text\":");
            write_json_string(&mut body, &text);
            body.push(b'}');
            Ok(ClientRequest::Msg { body })
        }
        "typing" => Ok(ClientRequest::Typing {
            active: required(raw.active, "active")?,
        }),
        "media" => parse_media(raw, limits),
        "signal" => {
            let data = required(raw.data, "data")?;
            if data.get().len() > limits.max_signal_bytes {
                return Err(ProtocolError::too_large(format!(
                    "signal data is larger than {} bytes",
                    limits.max_signal_bytes
                )));
            }
            let mut frame = String::with_capacity(data.get().len() + 24);
            frame.push_str("{\"type\":\"signal\",\"data\":");
            frame.push_str(data.get());
            frame.push('}');
            Ok(ClientRequest::Signal {
                frame: frame.into(),
            })
        }
        "next" => Ok(ClientRequest::Next),
        "leave" => Ok(ClientRequest::Leave),
        "report" => {
            let reason = match required(raw.reason, "reason")?.as_ref() {
                "spam" => ReportReason::Spam,
                "harassment" => ReportReason::Harassment,
                "nudity" => ReportReason::Nudity,
                "minor" => ReportReason::Minor,
                "other" => ReportReason::Other,
                _ => return Err(ProtocolError::bad("unknown report reason")),
            };
            Ok(ClientRequest::Report { reason })
        }
        _ => Err(ProtocolError::bad("unknown frame type")),
    }
}

fn exceeds_chars(text: &str, max_chars: usize) -> bool {
    // Byte length bounds the char count from above, so most texts skip the count.
    text.len() > max_chars && text.chars().count() > max_chars
}

fn parse_find(raw: RawFrame<'_>, limits: &Limits) -> Result<FindRequest, ProtocolError> {
    let mode = match raw.mode.as_deref() {
        None | Some("text") => Mode::Text,
        Some("video") => Mode::Video,
        Some(_) => return Err(ProtocolError::bad("mode must be \"text\" or \"video\"")),
    };
    let given = raw.interests.unwrap_or_default();
    if given.len() > limits.max_interests {
        return Err(ProtocolError::too_large(format!(
            "at most {} interests",
            limits.max_interests
        )));
    }
    let mut interests: Vec<String> = Vec::with_capacity(given.len());
    for interest in &given {
        let interest = interest.trim();
        if exceeds_chars(interest, limits.max_interest_chars) {
            return Err(ProtocolError::too_large(format!(
                "an interest is longer than {} characters",
                limits.max_interest_chars
            )));
        }
        let interest = interest.to_lowercase();
        if !interest.is_empty() && !interests.contains(&interest) {
            interests.push(interest);
        }
    }
    let nick = match raw.nick.as_deref().map(str::trim) {
        Some(nick) if exceeds_chars(nick, limits.max_nick_chars) => {
            return Err(ProtocolError::too_large(format!(
                "nick is longer than {} characters",
                limits.max_nick_chars
            )));
        }
        Some("") | None => None,
        Some(nick) => Some(nick.to_owned()),
    };
    Ok(FindRequest {
        adult: raw.adult == Some(true),
        mode,
        interests,
        nick,
        pow: raw.pow.map(Cow::into_owned),
    })
}

fn parse_media(raw: RawFrame<'_>, limits: &Limits) -> Result<ClientRequest, ProtocolError> {
    let kind = match required(raw.kind, "kind")?.as_ref() {
        "image" => MediaKind::Image,
        "audio" => MediaKind::Audio,
        _ => return Err(ProtocolError::bad("kind must be \"image\" or \"audio\"")),
    };
    let mime_given = required(raw.mime, "mime")?;
    let mime = limits
        .media_mime_types
        .iter()
        .find(|allowed| **allowed == mime_given.as_ref())
        .ok_or_else(|| ProtocolError::bad("unsupported mime type"))?;
    if !mime.starts_with(kind.as_str()) {
        return Err(ProtocolError::bad("mime type does not match kind"));
    }
    let data_raw = required(raw.data, "data")?;
    // Base64 never needs escaping, so a valid `data` is the raw JSON string itself.
    let data = data_raw
        .get()
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| ProtocolError::bad("data must be a base64 string"))?;
    let decoded_len =
        base64_decoded_len(data).ok_or_else(|| ProtocolError::bad("data is not valid base64"))?;
    if decoded_len == 0 {
        return Err(ProtocolError::bad("data is empty"));
    }
    if decoded_len > limits.max_media_bytes {
        return Err(ProtocolError::too_large(format!(
            "media is larger than {} bytes",
            limits.max_media_bytes
        )));
    }
    let mut body = Vec::with_capacity(data.len() + 48);
    body.extend_from_slice(b"\"kind\":\"");
    body.extend_from_slice(kind.as_str().as_bytes());
    body.extend_from_slice(b"\",\"mime\":\"");
    body.extend_from_slice(mime.as_bytes());
    body.extend_from_slice(b"\",\"data\":\"");
    body.extend_from_slice(data.as_bytes());
    body.extend_from_slice(b"\"}");
    Ok(ClientRequest::Media { body })
}

/// The decoded length of standard, padded base64, or `None` if it is not valid. Checks the
/// alphabet and padding without decoding, so validation allocates nothing.
pub fn base64_decoded_len(data: &str) -> Option<usize> {
    let bytes = data.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let padding = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if padding > 2 {
        return None;
    }
    let body = &bytes[..bytes.len() - padding];
    if !body
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        return None;
    }
    Some(bytes.len() / 4 * 3 - padding)
}

/// Appends `text` as a JSON string literal.
pub fn write_json_string(out: &mut Vec<u8>, text: &str) {
    // Serialising a &str into a Vec cannot fail: serde_json only errors on I/O or on
    // non-string map keys, neither of which can happen here.
    serde_json::to_writer(&mut *out, text).expect("writing a JSON string into a Vec");
}

// ---------------------------------------------------------------------------------------------
// Server frames
// ---------------------------------------------------------------------------------------------

/// Frames with fixed content, rendered once.
pub mod fixed {
    pub const TYPING_ON: &str = r#"{"type":"typing","active":true}"#;
    pub const TYPING_OFF: &str = r#"{"type":"typing","active":false}"#;
    pub const STRANGER_AWAY: &str = r#"{"type":"stranger_away"}"#;
    pub const STRANGER_BACK: &str = r#"{"type":"stranger_back"}"#;
}

#[derive(Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Serialize)]
pub struct PowChallenge<'a> {
    pub algorithm: &'static str,
    pub challenge: &'a str,
    pub difficulty: u32,
}

#[derive(Serialize)]
struct Hello<'a> {
    #[serde(rename = "type")]
    frame_type: &'static str,
    protocol: u32,
    session: &'a str,
    resumed: bool,
    state: &'static str,
    online: u64,
    limits: &'a Limits,
    ice_servers: &'a [IceServer],
    relay_only: bool,
    pow: Option<PowChallenge<'a>>,
}

pub struct HelloFrame<'a> {
    pub token: &'a str,
    pub resumed: bool,
    pub state: &'static str,
    pub online: u64,
    pub limits: &'a Limits,
    pub ice_servers: &'a [IceServer],
    /// Clients must use relayed ICE candidates only (`iceTransportPolicy: "relay"`).
    pub relay_only: bool,
    pub pow: Option<PowChallenge<'a>>,
}

pub fn render_hello(hello: HelloFrame<'_>) -> ByteString {
    let frame = Hello {
        frame_type: "hello",
        protocol: PROTOCOL_VERSION,
        session: hello.token,
        resumed: hello.resumed,
        state: hello.state,
        online: hello.online,
        limits: hello.limits,
        ice_servers: hello.ice_servers,
        relay_only: hello.relay_only,
        pow: hello.pow,
    };
    // Serialising plain structs of strings and numbers into a String cannot fail.
    serde_json::to_string(&frame)
        .expect("hello serialises")
        .into()
}

pub fn render_waiting(online: u64) -> ByteString {
    format!(r#"{{"type":"waiting","online":{online}}}"#).into()
}

pub fn render_error(code: ErrorCode, message: &str, retry_after_ms: Option<u64>) -> ByteString {
    let mut out = Vec::with_capacity(64 + message.len());
    out.extend_from_slice(b"{\"type\":\"error\",\"code\":\"");
    out.extend_from_slice(code.as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    write_json_string(&mut out, message);
    if let Some(ms) = retry_after_ms {
        out.extend_from_slice(b",\"retry_after_ms\":");
        out.extend_from_slice(itoa::Buffer::new().format(ms).as_bytes());
    }
    out.push(b'}');
    bytes_to_frame(out)
}

/// `{"type":"<frame_type>","seq":<seq>,"from":"you"|"stranger",` followed by a logged body.
pub fn render_chat_event(frame_type: &str, seq: u64, from_you: bool, body: &[u8]) -> ByteString {
    let mut out = Vec::with_capacity(body.len() + 48);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(frame_type.as_bytes());
    out.extend_from_slice(b"\",\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(if from_you {
        b",\"from\":\"you\","
    } else {
        b",\"from\":\"stranger\","
    });
    out.extend_from_slice(body);
    bytes_to_frame(out)
}

pub struct MatchedFrame<'a> {
    pub seq: u64,
    pub mode: Mode,
    pub common: &'a [String],
    pub stranger_nick: Option<&'a str>,
    pub initiator: bool,
}

pub fn render_matched(matched: MatchedFrame<'_>) -> ByteString {
    let mut out = String::with_capacity(128);
    let _ = write!(
        out,
        r#"{{"type":"matched","seq":{},"mode":"{}","common":"#,
        matched.seq,
        matched.mode.as_str()
    );
    let mut buf = Vec::new();
    // A slice of Strings always serialises.
    serde_json::to_writer(&mut buf, matched.common).expect("common serialises");
    buf.extend_from_slice(b",\"stranger\":{\"nick\":");
    match matched.stranger_nick {
        Some(nick) => write_json_string(&mut buf, nick),
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b"},\"initiator\":");
    buf.extend_from_slice(if matched.initiator {
        b"true}"
    } else {
        b"false}"
    });
    let mut out = out.into_bytes();
    out.extend_from_slice(&buf);
    bytes_to_frame(out)
}

pub fn render_ended(seq: u64, reason: EndedReason) -> ByteString {
    format!(
        r#"{{"type":"ended","seq":{seq},"reason":"{}"}}"#,
        reason.as_str()
    )
    .into()
}

fn bytes_to_frame(bytes: Vec<u8>) -> ByteString {
    // Every renderer above writes only UTF-8: fixed ASCII, serde_json output and bodies built
    // from validated `&str` input.
    String::from_utf8(bytes)
        .expect("frames are rendered from UTF-8 parts")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClientRequest, ProtocolError> {
        parse_client_frame(text, &Limits::default())
    }

    fn code(text: &str) -> ErrorCode {
        parse(text).expect_err("frame should be refused").code
    }

    #[test]
    fn only_json_objects_are_frames() {
        for not_object in [
            r#"["find", null, true]"#,
            r#"["msg", "hi"]"#,
            r#""find""#,
            "42",
            "null",
        ] {
            assert_eq!(code(not_object), ErrorCode::BadRequest, "{not_object}");
        }
        assert!(parse(r#" {"type":"next"}"#).is_ok());
    }

    #[test]
    fn find_normalises_interests_and_nick() {
        let Ok(ClientRequest::Find(find)) = parse(
            r#"{"type":"find","adult":true,"mode":"video","interests":[" Music ","music","","Go"],"nick":"  Ann "}"#,
        ) else {
            panic!("find should parse");
        };
        assert!(find.adult);
        assert_eq!(find.mode, Mode::Video);
        assert_eq!(find.interests, vec!["music", "go"]);
        assert_eq!(find.nick.as_deref(), Some("Ann"));
    }

    #[test]
    fn find_defaults_to_text_mode_and_no_adult_flag() {
        let Ok(ClientRequest::Find(find)) = parse(r#"{"type":"find"}"#) else {
            panic!("find should parse");
        };
        assert!(!find.adult);
        assert_eq!(find.mode, Mode::Text);
        assert!(find.interests.is_empty());
        assert_eq!(find.nick, None);
    }

    #[test]
    fn msg_body_is_escaped_json() {
        let Ok(ClientRequest::Msg { body }) = parse(r#"{"type":"msg","text":"hi \"you\" ✓"}"#)
        else {
            panic!("msg should parse");
        };
        let frame = render_chat_event("msg", 7, false, &body);
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["text"], "hi \"you\" ✓");
        assert_eq!(value["seq"], 7);
        assert_eq!(value["from"], "stranger");
    }

    #[test]
    fn bad_frames_are_bad_requests() {
        assert_eq!(code("not json"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"text":"no type"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"msg"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"msg","text":5}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"msg","text":"   "}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(code(r#"{"type":"typing"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"report","reason":"meh"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"find","mode":"audio"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(code(r#"[1,2]"#), ErrorCode::BadRequest);
    }

    #[test]
    fn limits_are_too_large() {
        let long = "x".repeat(2001);
        assert_eq!(
            code(&format!(r#"{{"type":"msg","text":"{long}"}}"#)),
            ErrorCode::TooLarge
        );
        // 2,000 multi-byte characters are within the limit: it counts characters.
        let wide = "é".repeat(2000);
        assert!(parse(&format!(r#"{{"type":"msg","text":"{wide}"}}"#)).is_ok());
        let nick = "n".repeat(25);
        assert_eq!(
            code(&format!(r#"{{"type":"find","nick":"{nick}"}}"#)),
            ErrorCode::TooLarge
        );
        let many: Vec<String> = (0..11).map(|i| format!("\"i{i}\"")).collect();
        assert_eq!(
            code(&format!(
                r#"{{"type":"find","interests":[{}]}}"#,
                many.join(",")
            )),
            ErrorCode::TooLarge
        );
        let big_signal = "a".repeat(64 << 10);
        assert_eq!(
            code(&format!(r#"{{"type":"signal","data":"{big_signal}"}}"#)),
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn media_is_checked_for_kind_mime_base64_and_size() {
        let ok = r#"{"type":"media","kind":"image","mime":"image/png","data":"aGVsbG8="}"#;
        let Ok(ClientRequest::Media { body }) = parse(ok) else {
            panic!("media should parse");
        };
        let frame = render_chat_event("media", 3, true, &body);
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["data"], "aGVsbG8=");
        assert_eq!(value["mime"], "image/png");
        assert_eq!(value["from"], "you");
        assert_eq!(
            code(r#"{"type":"media","kind":"audio","mime":"image/png","data":"aGVsbG8="}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"media","kind":"image","mime":"image/svg+xml","data":"aGVsbG8="}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"media","kind":"image","mime":"image/png","data":"a$b="}"#),
            ErrorCode::BadRequest
        );
        let limits = Limits {
            max_media_bytes: 4,
            ..Limits::default()
        };
        let err = parse_client_frame(ok, &limits).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
    }

    #[test]
    fn base64_length_is_exact() {
        assert_eq!(base64_decoded_len(""), Some(0));
        assert_eq!(base64_decoded_len("aGVsbG8="), Some(5));
        assert_eq!(base64_decoded_len("aGVsbA=="), Some(4));
        assert_eq!(base64_decoded_len("aGVs"), Some(3));
        assert_eq!(base64_decoded_len("aGV"), None);
        assert_eq!(base64_decoded_len("a==="), None);
        assert_eq!(base64_decoded_len("aG=s"), None);
    }

    #[test]
    fn signal_data_is_relayed_verbatim() {
        let Ok(ClientRequest::Signal { frame }) =
            parse(r#"{"type":"signal","data":{"sdp":"v=0\r\n","type":"offer"}}"#)
        else {
            panic!("signal should parse");
        };
        assert_eq!(
            &*frame,
            r#"{"type":"signal","data":{"sdp":"v=0\r\n","type":"offer"}}"#
        );
    }

    #[test]
    fn rendered_frames_are_valid_json() {
        let matched = render_matched(MatchedFrame {
            seq: 1,
            mode: Mode::Text,
            common: &["music".to_owned()],
            stranger_nick: Some("B\"ob"),
            initiator: true,
        });
        let value: serde_json::Value = serde_json::from_str(&matched).unwrap();
        assert_eq!(value["stranger"]["nick"], "B\"ob");
        assert_eq!(value["common"][0], "music");
        assert_eq!(value["initiator"], true);
        let error = render_error(ErrorCode::RateLimited, "slow \"down\"", Some(250));
        let value: serde_json::Value = serde_json::from_str(&error).unwrap();
        assert_eq!(value["code"], "rate_limited");
        assert_eq!(value["retry_after_ms"], 250);
        let ended: serde_json::Value =
            serde_json::from_str(&render_ended(9, EndedReason::StrangerLost)).unwrap();
        assert_eq!(ended["reason"], "stranger_lost");
    }
}
