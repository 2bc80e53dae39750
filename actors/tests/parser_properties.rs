//! Properties of the frame parser over generated input: whatever a client sends, parsing
//! answers (a request, or a refusal a person can read) without panicking, and what it accepts
//! renders back to exactly what was sent. The load generator's `fuzz` scenario does the same
//! against a running server, over real sockets.

use base64::Engine as _;
use ephemera_actors::protocol::{
    base64_decoded_len, parse_client_frame, render_chat_event, ClientRequest, ErrorCode, Limits,
    MAX_MESSAGE_ID_CHARS,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const TYPES: &[&str] = &[
    "find", "msg", "typing", "media", "signal", "next", "leave", "report", "resume", "hello",
];
const FIELDS: &[&str] = &[
    "text",
    "adult",
    "mode",
    "interests",
    "nick",
    "pow",
    "active",
    "kind",
    "mime",
    "data",
    "reason",
    "id",
    "session",
    "chat",
    "last_seq",
];

/// Any JSON value, nested a few levels, with strings from all of Unicode.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A frame of a known (or nearly known) type whose fields hold values of any type: the shapes
/// a client gets almost right.
fn misshapen_frame() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(TYPES),
        prop::collection::vec((prop::sample::select(FIELDS), any_json()), 0..6),
    )
        .prop_map(|(frame_type, fields)| {
            let mut frame = Map::new();
            frame.insert("type".into(), json!(frame_type));
            for (name, value) in fields {
                frame.insert(name.into(), value);
            }
            Value::Object(frame)
        })
}

fn the_refusal_is_readable(text: &str) -> Result<(), TestCaseError> {
    if let Err(error) = parse_client_frame(text, &Limits::V1) {
        prop_assert!(!error.message.is_empty());
        prop_assert!(matches!(
            error.code,
            ErrorCode::BadRequest | ErrorCode::TooLarge
        ));
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_text_is_answered_without_a_panic(text in ".{0,300}") {
        the_refusal_is_readable(&text)?;
    }

    #[test]
    fn any_json_is_answered_without_a_panic(value in any_json()) {
        the_refusal_is_readable(&value.to_string())?;
    }

    #[test]
    fn misshapen_frames_are_answered_without_a_panic(frame in misshapen_frame()) {
        the_refusal_is_readable(&frame.to_string())?;
    }

    #[test]
    fn a_cut_or_spliced_frame_is_answered_without_a_panic(
        frame in misshapen_frame(),
        cut in any::<prop::sample::Index>(),
        splice in ".{0,8}",
    ) {
        let text = frame.to_string();
        let at = cut.index(text.len() + 1);
        if text.is_char_boundary(at) {
            the_refusal_is_readable(&text[..at])?;
            the_refusal_is_readable(&format!("{}{splice}{}", &text[..at], &text[at..]))?;
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed(depth in 100usize..5000) {
        let deep = format!(r#"{{"type":"signal","data":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
        the_refusal_is_readable(&deep)?;
    }

    /// Every message within the limits is taken, and both members' copies say exactly what was
    /// sent; only the sender's carries its id.
    #[test]
    fn an_accepted_message_renders_back_to_what_was_sent(
        text in "\\PC{0,200}",
        id in prop::option::of("\\PC{1,64}"),
    ) {
        prop_assume!(!text.trim().is_empty());
        let mut frame = json!({"type":"msg","text":text});
        if let Some(id) = &id {
            frame["id"] = json!(id);
        }
        let parsed = parse_client_frame(&frame.to_string(), &Limits::V1);
        let Ok(ClientRequest::Msg { body }) = parsed else {
            return Err(TestCaseError::fail(format!("refused: {parsed:?}")));
        };
        let echo: Value = serde_json::from_str(&render_chat_event("msg", 5, true, &body.bytes)).unwrap();
        let seen: Value =
            serde_json::from_str(&render_chat_event("msg", 5, false, &body.bytes[body.id_len..]))
                .unwrap();
        prop_assert_eq!(&echo["text"], &json!(text));
        prop_assert_eq!(&seen["text"], &json!(text));
        let sent_id = id.map(Value::String);
        prop_assert_eq!(echo.get("id"), sent_id.as_ref());
        prop_assert!(seen.get("id").is_none());
    }

    #[test]
    fn ids_longer_than_the_limit_are_refused(extra in 1usize..20) {
        let id = "i".repeat(MAX_MESSAGE_ID_CHARS + extra);
        let frame = json!({"type":"msg","text":"hi","id":id}).to_string();
        prop_assert_eq!(
            parse_client_frame(&frame, &Limits::V1).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }

    /// The size check reads base64's length without decoding; it must agree with a decoder.
    #[test]
    fn media_size_is_checked_exactly(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
        prop_assert_eq!(base64_decoded_len(&data), Some(bytes.len()));
    }
}
