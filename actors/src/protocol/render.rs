//! Rendering server frames. Hot frames (chat events, errors) are written by hand into one
//! buffer; rare ones (hello) go through serde.

use std::fmt::Write as _;

use bytestring::ByteString;
use serde::Serialize;

use super::{write_json_string, EndedReason, ErrorCode, Limits, Mode, PROTOCOL_VERSION};
use crate::ids::ChatId;

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
    pub chat: ChatId,
    pub mode: Mode,
    pub common: &'a [String],
    pub stranger_nick: Option<&'a str>,
    pub initiator: bool,
}

pub fn render_matched(matched: MatchedFrame<'_>) -> ByteString {
    let mut out = String::with_capacity(128);
    let _ = write!(
        out,
        r#"{{"type":"matched","seq":{},"chat":"{}","mode":"{}","common":"#,
        matched.seq,
        matched.chat.as_str(),
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
    #[test]
    fn rendered_frames_are_valid_json() {
        let chat = ChatId::generate();
        let matched = render_matched(MatchedFrame {
            seq: 1,
            chat,
            mode: Mode::Text,
            common: &["music".to_owned()],
            stranger_nick: Some("B\"ob"),
            initiator: true,
        });
        let value: serde_json::Value = serde_json::from_str(&matched).unwrap();
        assert_eq!(value["stranger"]["nick"], "B\"ob");
        assert_eq!(value["common"][0], "music");
        assert_eq!(value["initiator"], true);
        assert_eq!(value["chat"], chat.as_str());
        let error = render_error(ErrorCode::RateLimited, "slow \"down\"", Some(250));
        let value: serde_json::Value = serde_json::from_str(&error).unwrap();
        assert_eq!(value["code"], "rate_limited");
        assert_eq!(value["retry_after_ms"], 250);
        let ended: serde_json::Value =
            serde_json::from_str(&render_ended(9, EndedReason::StrangerLost)).unwrap();
        assert_eq!(ended["reason"], "stranger_lost");
    }
}
