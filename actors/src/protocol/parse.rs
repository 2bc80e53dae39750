//! Parsing and validating client frames into requests, in one borrowed pass over the JSON.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    write_json_string, ChatBody, ClientRequest, FindRequest, Limits, MediaKind, Mode,
    ProtocolError, ReportReason, ResumePoint, ResumeRequest, MAX_MESSAGE_ID_CHARS,
};
use crate::ids::ChatId;

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
    /// A client's message id (`msg`, `media`; v1.1).
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    /// `resume` (v1.1): the token, the chat and the last seq seen in it.
    #[serde(borrow)]
    session: Option<Cow<'a, str>>,
    #[serde(borrow)]
    chat: Option<Cow<'a, str>>,
    last_seq: Option<u64>,
}

/// Bytes a frame without a payload (`find`, `typing`, `next`, `resume`, …) may take: ten
/// 32-character interests, a nickname and a nonce fit many times over.
const MAX_SMALL_FRAME_BYTES: usize = 8 << 10;

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
    // Only msg, media and signal carry a payload; every other frame is a few hundred bytes at
    // most. A large one is refused (and spends the protocol-error budget) instead of being
    // dropped unanswered, so padding them cannot buy parsing work for free.
    let has_payload = matches!(raw.frame_type.as_ref(), "msg" | "media" | "signal");
    if text.len() > MAX_SMALL_FRAME_BYTES && !has_payload {
        return Err(ProtocolError::too_large(format!(
            "a {} frame is at most {MAX_SMALL_FRAME_BYTES} bytes",
            raw.frame_type
        )));
    }
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
            let mut body = ChatBody::with_id(raw.id.as_deref(), text.len() + 12)?;
            body.bytes.extend_from_slice(b"\"text\":");
            write_json_string(&mut body.bytes, &text);
            body.bytes.push(b'}');
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
        "resume" => {
            let token = required(raw.session, "session")?;
            // A chat id that is not shaped like one, like an unknown token, means a fresh
            // session rather than an error: the client gets a session either way.
            let chat = match raw.chat.as_deref().map(ChatId::parse) {
                None => Some(None),
                Some(Some(chat)) => Some(Some(chat)),
                Some(None) => None,
            };
            Ok(ClientRequest::Resume(chat.map(|chat| ResumeRequest {
                token: token.into_owned(),
                point: ResumePoint {
                    chat,
                    last_seq: raw.last_seq.unwrap_or(0),
                },
            })))
        }
        _ => Err(ProtocolError::bad("unknown frame type")),
    }
}

impl ChatBody {
    /// A body that starts with `"id":"…",` when the client gave a message id, with room for
    /// `tail_bytes` more.
    fn with_id(id: Option<&str>, tail_bytes: usize) -> Result<Self, ProtocolError> {
        let Some(id) = id else {
            return Ok(ChatBody {
                bytes: Vec::with_capacity(tail_bytes),
                id_len: 0,
            });
        };
        if id.is_empty() || exceeds_chars(id, MAX_MESSAGE_ID_CHARS) {
            return Err(ProtocolError::bad(format!(
                "id must be 1 to {MAX_MESSAGE_ID_CHARS} characters"
            )));
        }
        let mut bytes = Vec::with_capacity(id.len() + 8 + tail_bytes);
        bytes.extend_from_slice(b"\"id\":");
        write_json_string(&mut bytes, id);
        bytes.push(b',');
        let id_len = bytes.len();
        Ok(ChatBody { bytes, id_len })
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
    let mut body = ChatBody::with_id(raw.id.as_deref(), data.len() + 48)?;
    let bytes = &mut body.bytes;
    bytes.extend_from_slice(b"\"kind\":\"");
    bytes.extend_from_slice(kind.as_str().as_bytes());
    bytes.extend_from_slice(b"\",\"mime\":\"");
    bytes.extend_from_slice(mime.as_bytes());
    bytes.extend_from_slice(b"\",\"data\":\"");
    bytes.extend_from_slice(data.as_bytes());
    bytes.extend_from_slice(b"\"}");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{render_chat_event, ErrorCode};

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
        let frame = render_chat_event("msg", 7, false, &body.bytes);
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
        let frame = render_chat_event("media", 3, true, &body.bytes);
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
    fn a_message_id_leads_the_body_and_only_the_senders_copy_shows_it() {
        let Ok(ClientRequest::Msg { body }) = parse(r#"{"type":"msg","text":"hi","id":"a\"b"}"#)
        else {
            panic!("msg with an id should parse");
        };
        assert_eq!(&body.bytes[..body.id_len], br#""id":"a\"b","#);
        let echo: serde_json::Value =
            serde_json::from_str(&render_chat_event("msg", 2, true, &body.bytes)).unwrap();
        assert_eq!(
            (echo["id"].as_str(), echo["text"].as_str()),
            (Some("a\"b"), Some("hi"))
        );
        let seen: serde_json::Value = serde_json::from_str(&render_chat_event(
            "msg",
            2,
            false,
            &body.bytes[body.id_len..],
        ))
        .unwrap();
        assert!(seen.get("id").is_none());
        let sixty_four = "é".repeat(64);
        assert!(parse(&format!(
            r#"{{"type":"msg","text":"x","id":"{sixty_four}"}}"#
        ))
        .is_ok());
        assert_eq!(
            code(&format!(
                r#"{{"type":"msg","text":"x","id":"{sixty_four}e"}}"#
            )),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn resume_frames_name_a_token_a_chat_and_a_seq_and_unusable_names_mean_fresh() {
        let Ok(ClientRequest::Resume(Some(request))) =
            parse(r#"{"type":"resume","session":"tok","chat":"abcdefghijklmnop","last_seq":4}"#)
        else {
            panic!("resume should parse");
        };
        assert_eq!(request.token, "tok");
        assert_eq!(request.point.last_seq, 4);
        assert_eq!(request.point.chat.unwrap().as_str(), "abcdefghijklmnop");
        let Ok(ClientRequest::Resume(Some(bare))) = parse(r#"{"type":"resume","session":"t"}"#)
        else {
            panic!("chat and last_seq are optional");
        };
        assert_eq!(bare.point, ResumePoint::default());
        assert!(matches!(
            parse(r#"{"type":"resume","session":"t","chat":"short"}"#),
            Ok(ClientRequest::Resume(None))
        ));
        assert_eq!(code(r#"{"type":"resume"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"resume","session":"t","last_seq":-9}"#),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn frames_without_a_payload_are_small() {
        let pad = "0".repeat(9000);
        let padded = format!(r#"{{"type":"typing","active":true,"x":"{pad}"}}"#);
        assert_eq!(code(&padded), ErrorCode::TooLarge);
        let text = "y".repeat(1900);
        let message = format!(r#"{{"type":"msg","text":"{text}","pad":"{pad}"}}"#);
        assert!(parse(&message).is_ok(), "messages carry a payload");
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
}
