//! The fuzzers' repertoire: each `Kind` of mutation builds an `Action`, the bytes (and pauses)
//! one fuzz connection sends next. Every kind is something a broken or hostile client can
//! send; the server must answer each with an error or a close, and never crash or leak.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::raw_ws::{opcode, LengthField, RawFrame};
use super::rng::SplitMix64;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Kind {
    /// Well-formed frames of every type, so fuzzers also queue, match each other and chat.
    ValidFrame,
    WrongFieldType,
    MissingField,
    ExtraField,
    HugeString,
    NumberOutOfRange,
    /// Random valid UTF-8 made of JSON-ish tokens.
    RandomText,
    /// Random bytes in a text frame (almost never UTF-8).
    RandomBytes,
    InvalidUtf8,
    /// Nesting up to 100,000 levels deep.
    DeepJson,
    /// Arrays and objects of hundreds of thousands of tiny elements, under the frame limit.
    WideJson,
    /// One frame of exactly the frame limit, or a few bytes under it.
    JsonNearLimit,
    /// One frame a little over the frame limit.
    JsonOverLimit,
    BinaryFrame,
    /// A message in many fragments, control frames between them.
    FragmentedMessage,
    /// A fragmented message that stops before its last fragment.
    FragmentsNeverEnd,
    ContinuationWithoutStart,
    /// Fragments that add up to more than the frame limit.
    FragmentsOverLimit,
    /// A header announcing 2^40 bytes (and other absurd lengths), then a little payload.
    OversizedHeader,
    /// Pings and pongs with 125-byte payloads, the most a control frame may carry.
    ControlFrameMax,
    PingFlood,
    /// Control frames over 125 bytes or fragmented.
    ControlFrameInvalid,
    /// Close frames with odd codes, a one-byte payload, reasons that are not UTF-8.
    CloseOdd,
    /// Reserved bits, reserved opcodes, an unmasked frame, a non-minimal length.
    FrameHeaderInvalid,
    /// `resume` as the connection's first frame, random or stale token, chat and last_seq.
    ResumeFrameFirst,
    /// `resume` later on, where it is always a bad request.
    ResumeFrameLater,
    /// The upgrade URL carries `resume`, `chat` and `last_seq`: random, garbage, or the
    /// connection's own earlier token. Counted once per connection opened with it.
    ResumeUrl,
    /// The TCP connection reset halfway through a frame, no close frame.
    TcpAbort,
    /// A frame written a few bytes at a time.
    SlowDrip,
}

impl Kind {
    pub(crate) const ALL: [Kind; 29] = [
        Kind::ValidFrame,
        Kind::WrongFieldType,
        Kind::MissingField,
        Kind::ExtraField,
        Kind::HugeString,
        Kind::NumberOutOfRange,
        Kind::RandomText,
        Kind::RandomBytes,
        Kind::InvalidUtf8,
        Kind::DeepJson,
        Kind::WideJson,
        Kind::JsonNearLimit,
        Kind::JsonOverLimit,
        Kind::BinaryFrame,
        Kind::FragmentedMessage,
        Kind::FragmentsNeverEnd,
        Kind::ContinuationWithoutStart,
        Kind::FragmentsOverLimit,
        Kind::OversizedHeader,
        Kind::ControlFrameMax,
        Kind::PingFlood,
        Kind::ControlFrameInvalid,
        Kind::CloseOdd,
        Kind::FrameHeaderInvalid,
        Kind::ResumeFrameFirst,
        Kind::ResumeFrameLater,
        Kind::ResumeUrl,
        Kind::TcpAbort,
        Kind::SlowDrip,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::ValidFrame => "valid_frame",
            Kind::WrongFieldType => "wrong_field_type",
            Kind::MissingField => "missing_field",
            Kind::ExtraField => "extra_field",
            Kind::HugeString => "huge_string",
            Kind::NumberOutOfRange => "number_out_of_range",
            Kind::RandomText => "random_text",
            Kind::RandomBytes => "random_bytes",
            Kind::InvalidUtf8 => "invalid_utf8",
            Kind::DeepJson => "deep_json",
            Kind::WideJson => "wide_json",
            Kind::JsonNearLimit => "json_near_limit",
            Kind::JsonOverLimit => "json_over_limit",
            Kind::BinaryFrame => "binary_frame",
            Kind::FragmentedMessage => "fragmented_message",
            Kind::FragmentsNeverEnd => "fragments_never_end",
            Kind::ContinuationWithoutStart => "continuation_without_start",
            Kind::FragmentsOverLimit => "fragments_over_limit",
            Kind::OversizedHeader => "oversized_header",
            Kind::ControlFrameMax => "control_frame_max",
            Kind::PingFlood => "ping_flood",
            Kind::ControlFrameInvalid => "control_frame_invalid",
            Kind::CloseOdd => "close_odd",
            Kind::FrameHeaderInvalid => "frame_header_invalid",
            Kind::ResumeFrameFirst => "resume_frame_first",
            Kind::ResumeFrameLater => "resume_frame_later",
            Kind::ResumeUrl => "resume_url",
            Kind::TcpAbort => "tcp_abort",
            Kind::SlowDrip => "slow_drip",
        }
    }

    /// How often `pick_kind` draws this kind, relative to the others. Frames of megabytes
    /// cost both sides most, and kinds that end the connection cut short the ones that need
    /// a session in a chat, so both come less often than the cheap ones.
    fn weight(self) -> u64 {
        match self {
            Kind::ValidFrame => 16,
            Kind::HugeString
            | Kind::DeepJson
            | Kind::WideJson
            | Kind::JsonNearLimit
            | Kind::JsonOverLimit
            | Kind::FragmentsOverLimit => 1,
            Kind::RandomBytes
            | Kind::InvalidUtf8
            | Kind::ContinuationWithoutStart
            | Kind::OversizedHeader
            | Kind::ControlFrameInvalid
            | Kind::CloseOdd
            | Kind::FrameHeaderInvalid
            | Kind::TcpAbort
            | Kind::FragmentsNeverEnd
            | Kind::PingFlood
            | Kind::SlowDrip => 2,
            // Drawn at connection time, not here.
            Kind::ResumeFrameFirst | Kind::ResumeUrl => 0,
            _ => 6,
        }
    }
}

/// A kind for the next action on an open connection (first-frame and URL kinds are chosen
/// when a connection opens).
pub(crate) fn pick_kind(rng: &mut SplitMix64) -> Kind {
    let total: u64 = Kind::ALL.iter().map(|kind| kind.weight()).sum();
    let mut ticket = rng.below(total);
    for kind in Kind::ALL {
        if ticket < kind.weight() {
            return kind;
        }
        ticket -= kind.weight();
    }
    Kind::ValidFrame
}

/// What a mutation may know about its connection.
pub(crate) struct MutationContext<'a> {
    /// The frame limit the server announced in `hello` (2 MiB by default).
    pub(crate) max_frame_bytes: usize,
    /// A token of an earlier session of this fuzzer that dropped without a close frame, so
    /// may still be waiting for a resume.
    pub(crate) earlier_token: Option<&'a str>,
}

pub(crate) enum Step {
    Send(Vec<u8>),
    Pause(Duration),
    /// Reset the TCP connection: no close frame, no FIN.
    Reset,
}

pub(crate) struct Action {
    pub(crate) steps: Vec<Step>,
    /// WebSocket frames (whole or partial) the steps write.
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
    /// The protocol says the server must end the connection after this (1002, 1007, 1009,
    /// or its answer to a close frame).
    pub(crate) must_close: bool,
    /// A fragmented message was started and not finished: until the connection ends, a
    /// continuation is legal and a new data frame is not, whatever the next kind expects.
    pub(crate) leaves_message_open: bool,
}

/// Collects an action's frames, writing consecutive frames as one buffer.
struct Steps {
    steps: Vec<Step>,
    pending: Vec<u8>,
    frames: u64,
    bytes: u64,
}

impl Steps {
    fn new() -> Self {
        Self {
            steps: Vec::new(),
            pending: Vec::new(),
            frames: 0,
            bytes: 0,
        }
    }

    fn frame(&mut self, frame: RawFrame) {
        let before = self.pending.len();
        frame.encode_into(&mut self.pending);
        self.bytes += (self.pending.len() - before) as u64;
        self.frames += 1;
    }

    /// Bytes of a frame written in pieces, or cut short; `count_frame` on one piece each.
    fn raw(&mut self, bytes: &[u8], count_frame: bool) {
        self.pending.extend_from_slice(bytes);
        self.bytes += bytes.len() as u64;
        self.frames += u64::from(count_frame);
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.steps
                .push(Step::Send(std::mem::take(&mut self.pending)));
        }
    }

    fn pause(&mut self, pause: Duration) {
        self.flush();
        self.steps.push(Step::Pause(pause));
    }

    fn reset(&mut self) {
        self.flush();
        self.steps.push(Step::Reset);
    }

    fn finish(mut self, must_close: bool) -> Action {
        self.flush();
        Action {
            leaves_message_open: false,
            steps: self.steps,
            frames: self.frames,
            bytes: self.bytes,
            must_close,
        }
    }
}

fn masked(rng: &mut SplitMix64, opcode: u8, payload: Vec<u8>) -> RawFrame {
    RawFrame::new(opcode, payload, rng.next_u64() as u32)
}

pub(crate) fn build(kind: Kind, rng: &mut SplitMix64, context: &MutationContext<'_>) -> Action {
    let mut steps = Steps::new();
    let max = context.max_frame_bytes;
    let must_close = match kind {
        Kind::ValidFrame => {
            let payload = any_valid_frame(rng);
            text(rng, &mut steps, payload)
        }
        Kind::WrongFieldType => {
            let payload = wrong_field_type(rng);
            text(rng, &mut steps, payload)
        }
        Kind::MissingField => {
            let payload = missing_field(rng);
            text(rng, &mut steps, payload)
        }
        Kind::ExtraField => {
            let payload = extra_field(rng);
            text(rng, &mut steps, payload)
        }
        Kind::HugeString => {
            let payload = huge_string(rng, max);
            text(rng, &mut steps, payload)
        }
        Kind::NumberOutOfRange => {
            let payload = number_out_of_range(rng, context);
            text(rng, &mut steps, payload)
        }
        Kind::RandomText => {
            let payload = random_text(rng).into_bytes();
            text(rng, &mut steps, payload)
        }
        Kind::RandomBytes => {
            let len = rng.between(1, 4096);
            let bytes = rng.bytes(len);
            let is_text = std::str::from_utf8(&bytes).is_ok();
            let frame = masked(rng, opcode::TEXT, bytes);
            steps.frame(frame);
            // 1007 unless the bytes happen to be UTF-8.
            !is_text
        }
        Kind::InvalidUtf8 => invalid_utf8(rng, &mut steps),
        Kind::DeepJson => {
            let payload = deep_json(rng, max);
            text(rng, &mut steps, payload)
        }
        Kind::WideJson => {
            let payload = wide_json(rng, max);
            text(rng, &mut steps, payload)
        }
        Kind::JsonNearLimit => json_near_limit(rng, &mut steps, max),
        Kind::JsonOverLimit => {
            let len = max + 1 + rng.below(4096) as usize;
            let opcode = rng.pick(&[opcode::TEXT, opcode::TEXT, opcode::BINARY]);
            let json = json_of_length(rng, len);
            let frame = masked(rng, opcode, json);
            steps.frame(frame);
            true
        }
        Kind::BinaryFrame => {
            binary_frame(rng, &mut steps, max);
            false
        }
        Kind::FragmentedMessage => {
            fragmented_message(rng, &mut steps);
            false
        }
        Kind::FragmentsNeverEnd => fragments_never_end(rng, &mut steps, max),
        Kind::ContinuationWithoutStart => {
            let len = rng.between(0, 300);
            let fin = rng.one_in(2);
            let payload = random_text_of(rng, len);
            let frame = masked(rng, opcode::CONTINUATION, payload).fin(fin);
            steps.frame(frame);
            true
        }
        Kind::FragmentsOverLimit => {
            let mut total = 0;
            let mut first = true;
            while total <= max {
                let len = rng.between(max / 8, max / 2).max(1);
                total += len;
                let opcode = if first {
                    opcode::TEXT
                } else {
                    opcode::CONTINUATION
                };
                first = false;
                let frame = masked(rng, opcode, vec![b'a'; len]).fin(total > max);
                steps.frame(frame);
            }
            true
        }
        Kind::OversizedHeader => {
            let claimed = rng.pick(&[
                1 << 40,
                1 << 40,
                (1 << 63) - 1,
                1 << 63,
                u64::MAX,
                1 << 32,
                max as u64 + 1,
            ]);
            let opcode = rng.pick(&[
                opcode::TEXT,
                opcode::TEXT,
                opcode::BINARY,
                opcode::CONTINUATION,
                opcode::PING,
            ]);
            let len = rng.between(0, 4096);
            let payload = rng_text(rng, len);
            let mut frame = masked(rng, opcode, payload);
            frame.length = LengthField::Claimed(claimed);
            steps.frame(frame);
            true
        }
        Kind::ControlFrameMax => {
            for _ in 0..rng.between(1, 3) {
                let opcode = rng.pick(&[opcode::PING, opcode::PONG]);
                let len = rng.pick(&[125, 125, 0, 1, 124]);
                let payload = rng.bytes(len);
                let frame = masked(rng, opcode, payload);
                steps.frame(frame);
            }
            false
        }
        Kind::PingFlood => {
            for _ in 0..rng.between(20, 400) {
                let len = rng.between(0, 125);
                let payload = rng.bytes(len);
                let frame = masked(rng, opcode::PING, payload);
                steps.frame(frame);
            }
            // The server may close past its control-frame budget (1008), or keep going.
            false
        }
        Kind::ControlFrameInvalid => {
            control_frame_invalid(rng, &mut steps);
            true
        }
        Kind::CloseOdd => {
            close_odd(rng, &mut steps);
            true
        }
        Kind::FrameHeaderInvalid => frame_header_invalid(rng, &mut steps),
        Kind::ResumeFrameFirst | Kind::ResumeFrameLater => {
            let payload = resume_frame(rng, context);
            text(rng, &mut steps, payload)
        }
        Kind::ResumeUrl => false,
        Kind::TcpAbort => {
            let frame = if rng.one_in(4) {
                let len = rng.between(1000, 200_000);
                let json = json_of_length(rng, len);
                masked(rng, opcode::TEXT, json)
            } else {
                let json = any_valid_frame(rng);
                masked(rng, opcode::TEXT, json)
            };
            let bytes = frame.encode();
            let cut = rng.between(0, bytes.len().saturating_sub(1));
            steps.raw(&bytes[..cut], true);
            steps.reset();
            false
        }
        Kind::SlowDrip => {
            let json = any_valid_frame(rng);
            let bytes = masked(rng, opcode::TEXT, json).encode();
            // At most about 40 pieces, so a drip lasts well under two seconds.
            let smallest = (bytes.len() / 40).max(1);
            let mut offset = 0;
            while offset < bytes.len() {
                let end = (offset + rng.between(smallest, smallest + 6)).min(bytes.len());
                steps.raw(&bytes[offset..end], offset == 0);
                steps.pause(Duration::from_millis(rng.between(1, 30) as u64));
                offset = end;
            }
            false
        }
    };
    let mut action = steps.finish(must_close);
    action.leaves_message_open = kind == Kind::FragmentsNeverEnd
        && !must_close
        && !matches!(action.steps.last(), Some(Step::Reset));
    action
}

/// One text frame of `payload`; the server must keep the connection open (a JSON-level
/// mistake is a `bad_request`, however malformed).
fn text(rng: &mut SplitMix64, steps: &mut Steps, payload: Vec<u8>) -> bool {
    let frame = masked(rng, opcode::TEXT, payload);
    steps.frame(frame);
    false
}

const CLIENT_TYPES: [&str; 9] = [
    "find", "msg", "typing", "media", "signal", "next", "leave", "report", "resume",
];

/// A frame type; `with_resume` allows `resume` (a bad request past the first frame).
fn pick_type(rng: &mut SplitMix64, with_resume: bool) -> &'static str {
    // Finds and messages most, so fuzzers get into chats and stay there a while.
    if rng.one_in(3) {
        return rng.pick(&["find", "msg", "msg"]);
    }
    let types = if with_resume {
        &CLIENT_TYPES[..]
    } else {
        &CLIENT_TYPES[..8]
    };
    rng.pick(types)
}

const INTERESTS: [&str; 6] = ["fuzz", "music", "chess", "cats", "rust", "  Mixed Case  "];

/// A frame of `frame_type` that the protocol accepts (in the right state).
fn valid_object(rng: &mut SplitMix64, frame_type: &str) -> Map<String, Value> {
    let mut frame = Map::new();
    frame.insert("type".into(), json!(frame_type));
    match frame_type {
        "find" => {
            frame.insert("adult".into(), json!(true));
            if rng.one_in(4) {
                frame.insert("mode".into(), json!("video"));
            }
            if rng.one_in(2) {
                let count = rng.between(1, 3);
                let interests: Vec<&str> = (0..count).map(|_| rng.pick(&INTERESTS)).collect();
                frame.insert("interests".into(), json!(interests));
            }
            if rng.one_in(3) {
                let len = rng.between(1, 24);
                frame.insert("nick".into(), json!(random_words(rng, len)));
            }
        }
        "msg" => {
            let len = rng.between(1, 300);
            frame.insert("text".into(), json!(random_words(rng, len)));
            if rng.one_in(2) {
                frame.insert("id".into(), json!(random_id(rng, 64)));
            }
        }
        "typing" => {
            frame.insert("active".into(), json!(rng.one_in(2)));
        }
        "media" => {
            let (kind, mime) = rng.pick(&[
                ("image", "image/png"),
                ("image", "image/jpeg"),
                ("image", "image/webp"),
                ("image", "image/gif"),
                ("audio", "audio/webm"),
                ("audio", "audio/ogg"),
            ]);
            let len = if rng.one_in(16) {
                rng.between(64 << 10, 512 << 10)
            } else {
                rng.between(1, 2048)
            };
            frame.insert("kind".into(), json!(kind));
            frame.insert("mime".into(), json!(mime));
            frame.insert("data".into(), json!(base64(&rng.bytes(len))));
        }
        "signal" => {
            let data = match rng.below(4) {
                0 => json!({"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}),
                1 => json!({"candidate":"candidate:1 1 udp 2122260223 10.0.0.1 50000 typ host"}),
                2 => Value::Null,
                _ => json!([1, "two", {"three": 3.0}]),
            };
            frame.insert("data".into(), data);
        }
        "report" => {
            let reason = rng.pick(&["spam", "harassment", "nudity", "minor", "other"]);
            frame.insert("reason".into(), json!(reason));
        }
        "resume" => {
            frame.insert("session".into(), json!(random_id(rng, 22)));
            frame.insert("chat".into(), json!(random_id(rng, 16)));
            frame.insert("last_seq".into(), json!(rng.below(300)));
        }
        _ => {}
    }
    frame
}

/// A valid frame of a type `pick_type` chose.
fn any_valid_frame(rng: &mut SplitMix64) -> Vec<u8> {
    let frame_type = pick_type(rng, false);
    valid_frame(rng, frame_type)
}

fn valid_frame(rng: &mut SplitMix64, frame_type: &str) -> Vec<u8> {
    Value::Object(valid_object(rng, frame_type))
        .to_string()
        .into_bytes()
}

/// Values of every JSON type, to put where a field wants another type.
fn wrong_values() -> [Value; 13] {
    [
        json!(123),
        json!(-1),
        json!(1.5),
        json!(true),
        json!(false),
        Value::Null,
        json!([]),
        json!({}),
        json!(""),
        json!("yes"),
        json!([1, "a"]),
        json!({"type": "msg"}),
        json!("\u{0}\u{FEFF}\u{202E}"),
    ]
}

fn wrong_field_type(rng: &mut SplitMix64) -> Vec<u8> {
    let frame_type = pick_type(rng, true);
    let mut frame = valid_object(rng, frame_type);
    // The field to spoil, `type` included.
    let keys: Vec<String> = frame.keys().cloned().collect();
    let key = rng.pick_ref(&keys).clone();
    let wrong = rng.pick_ref(&wrong_values()).clone();
    frame.insert(key, wrong);
    Value::Object(frame).to_string().into_bytes()
}

fn missing_field(rng: &mut SplitMix64) -> Vec<u8> {
    let frame_type = pick_type(rng, true);
    let mut frame = valid_object(rng, frame_type);
    let keys: Vec<String> = frame.keys().cloned().collect();
    frame.remove(rng.pick_ref(&keys));
    Value::Object(frame).to_string().into_bytes()
}

fn extra_field(rng: &mut SplitMix64) -> Vec<u8> {
    let frame_type = pick_type(rng, true);
    let mut frame = valid_object(rng, frame_type);
    for _ in 0..rng.between(1, 5) {
        let (key, value) = match rng.below(7) {
            0 => ("x".to_owned(), json!(1)),
            1 => ("__proto__".to_owned(), json!({"admin": true})),
            2 => (String::new(), json!("empty key")),
            3 => ("ключ🙂".to_owned(), json!("unicode key")),
            4 => ("nested".to_owned(), nested_value(rng.between(1, 100))),
            5 => (random_id(rng, 200), json!(null)),
            _ => ("id".to_owned(), json!(random_id(rng, 65) + "-too-long")),
        };
        frame.insert(key, value);
    }
    let mut text = Value::Object(frame).to_string();
    if rng.one_in(3) {
        // A key twice: serde refuses a duplicate field, others take the last one.
        text.insert_str(1, &format!("\"type\":\"{}\",", pick_type(rng, true)));
    }
    text.into_bytes()
}

fn nested_value(depth: usize) -> Value {
    let mut value = json!(0);
    for _ in 0..depth {
        value = json!({ "a": [value] });
    }
    value
}

/// Characters of the huge strings: multi-byte ones, and ones JSON must escape.
const STRING_UNITS: [&str; 10] = [
    "x", "é", "漢", "🙂", "\\", "\"", "\u{0}", "\n", "\u{FEFF}", "\u{202E}",
];

fn huge_string(rng: &mut SplitMix64, max_frame_bytes: usize) -> Vec<u8> {
    let frame_type = pick_type(rng, true);
    let mut frame = valid_object(rng, frame_type);
    let field = rng.pick(&[
        "text", "nick", "mime", "reason", "session", "chat", "kind", "mode", "type", "id",
    ]);
    let unit = rng.pick(&STRING_UNITS);
    // The unit's size once escaped in JSON, so the frame stays under the limit.
    let unit_bytes = serde_json::to_string(unit).map_or(8, |quoted| quoted.len() - 2);
    let target = rng.between(64 << 10, max_frame_bytes.saturating_sub(2048).max(64 << 10));
    let huge = unit.repeat(target / unit_bytes);
    if rng.one_in(8) {
        frame.insert("interests".into(), json!([huge]));
    } else {
        frame.insert(field.into(), json!(huge));
    }
    Value::Object(frame).to_string().into_bytes()
}

const NUMBERS: [&str; 17] = [
    "-1",
    "-0",
    "1e400",
    "-1e400",
    "18446744073709551616",
    "18446744073709551615",
    "-9223372036854775809",
    "9007199254740993",
    "1.5",
    "0.1e-400",
    "123456789012345678901234567890123456789",
    "1E+308",
    "4294967296",
    "NaN",
    "Infinity",
    "0x10",
    "01",
];

fn number_out_of_range(rng: &mut SplitMix64, context: &MutationContext<'_>) -> Vec<u8> {
    let (frame_type, field) = rng.pick(&[
        ("resume", "last_seq"),
        ("resume", "last_seq"),
        ("typing", "active"),
        ("find", "adult"),
        ("msg", "id"),
        ("msg", "text"),
        ("media", "data"),
        ("signal", "data"),
        ("report", "reason"),
        ("find", "type"),
    ]);
    let mut frame = if frame_type == "resume" {
        match serde_json::from_slice(&resume_frame(rng, context)) {
            Ok(Value::Object(frame)) => frame,
            _ => valid_object(rng, frame_type),
        }
    } else {
        valid_object(rng, frame_type)
    };
    const PLACEHOLDER: &str = "@@number@@";
    frame.insert(field.into(), json!(PLACEHOLDER));
    let number = if rng.one_in(8) {
        // A number of up to 200,000 digits.
        let digits = rng.between(1000, 200_000);
        "9".repeat(digits)
    } else {
        rng.pick(&NUMBERS).to_owned()
    };
    Value::Object(frame)
        .to_string()
        .replace(&format!("\"{PLACEHOLDER}\""), &number)
        .into_bytes()
}

const TOKENS: [&str; 24] = [
    "{", "}", "[", "]", "\"", ":", ",", " ", "\\", "type", "\"type\"", "\"msg\"", "\"find\"",
    "null", "true", "false", "1e9", "-", "\\u0000", "\\ud800", "é", "🙂", "\u{0}", "\t",
];

fn random_text(rng: &mut SplitMix64) -> String {
    match rng.below(8) {
        0 => String::new(),
        1 => " \n\t ".repeat(rng.between(1, 50)),
        _ => {
            let mut text = String::new();
            if rng.one_in(2) {
                text.push('{');
            }
            for _ in 0..rng.between(1, 200) {
                let token = rng.pick(&TOKENS);
                text.push_str(token);
            }
            text
        }
    }
}

fn random_text_of(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    let mut text = random_text(rng).into_bytes();
    text.truncate(len);
    text
}

/// Printable ASCII of `len` bytes (cheap, and valid UTF-8).
fn rng_text(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    rng.bytes(len)
        .into_iter()
        .map(|byte| b' ' + byte % 95)
        .collect()
}

/// Byte sequences that are not UTF-8: a lone continuation byte, overlong forms, a UTF-16
/// surrogate, a code point past U+10FFFF, bytes that never occur, a sequence cut short.
const NOT_UTF8: [&[u8]; 12] = [
    &[0x80],
    &[0xBF],
    &[0xC0, 0xAF],
    &[0xC1, 0xBF],
    &[0xE0, 0x80, 0xAF],
    &[0xED, 0xA0, 0x80],
    &[0xF4, 0x90, 0x80, 0x80],
    &[0xF5, 0x80, 0x80, 0x80],
    &[0xFE],
    &[0xFF],
    &[0xE2, 0x82],
    &[0xF0, 0x9F, 0x98],
];

fn invalid_utf8(rng: &mut SplitMix64, steps: &mut Steps) -> bool {
    let mut json = any_valid_frame(rng);
    let bad = rng.pick(&NOT_UTF8);
    match rng.below(4) {
        // Cut off at the end of the frame.
        0 => json.extend_from_slice(bad),
        // Split across fragments: each fragment alone might pass, the whole does not.
        1 => {
            let at = rng.between(1, json.len() - 1);
            let (head, tail) = json.split_at(at);
            let mut first = head.to_vec();
            first.extend_from_slice(&bad[..1]);
            let mut second = bad[1..].to_vec();
            second.extend_from_slice(tail);
            let first = masked(rng, opcode::TEXT, first).fin(false);
            steps.frame(first);
            let second = masked(rng, opcode::CONTINUATION, second);
            steps.frame(second);
            return true;
        }
        // A JSON escape of a lone surrogate: valid UTF-8, but not a valid string; JSON-level.
        2 => {
            let text = format!(r#"{{"type":"msg","text":"a\ud800b{}"}}"#, "\\udc00");
            let frame = masked(rng, opcode::TEXT, text.into_bytes());
            steps.frame(frame);
            return false;
        }
        _ => {
            let at = rng.between(0, json.len());
            json.splice(at..at, bad.iter().copied());
        }
    }
    let frame = masked(rng, opcode::TEXT, json);
    steps.frame(frame);
    true
}

fn deep_json(rng: &mut SplitMix64, max_frame_bytes: usize) -> Vec<u8> {
    let depth = if rng.one_in(4) {
        rng.between(129, 10_000)
    } else {
        100_000
    };
    let mut json = String::new();
    match rng.below(5) {
        0 => json.push_str(&"[".repeat(depth)),
        1 => {
            json.push_str(&"[".repeat(depth));
            json.push_str(&"]".repeat(depth));
        }
        2 => {
            json.push_str(&r#"{"a":"#.repeat(depth));
            json.push('1');
            json.push_str(&"}".repeat(depth));
        }
        3 => {
            // Deep inside a field the server keeps as raw JSON.
            json.push_str(r#"{"type":"signal","data":"#);
            json.push_str(&"[".repeat(depth));
            json.push_str(&"]".repeat(depth));
            json.push('}');
        }
        _ => {
            json.push_str(r#"{"type":"msg","text":"deep","extra":"#);
            json.push_str(&r#"{"x":["#.repeat(depth));
            json.push_str(&"]}".repeat(depth));
            json.push('}');
        }
    }
    json.truncate(max_frame_bytes);
    json.into_bytes()
}

fn wide_json(rng: &mut SplitMix64, max_frame_bytes: usize) -> Vec<u8> {
    let target = rng.between(64 << 10, max_frame_bytes.saturating_sub(64).max(64 << 10));
    let (head, element, tail) = rng.pick(&[
        (
            r#"{"type":"find","adult":true,"interests":["#,
            r#""a","#,
            r#""a"]}"#,
        ),
        (r#"{"type":"signal","data":["#, "0,", "0]}"),
        (r#"{"type":"signal","data":{"#, r#""k":0,"#, r#""k":0}}"#),
        (r#"{"type":"msg","text":"wide","unknown":["#, "{},", "{}]}"),
        (
            r#"{"type":"media","kind":"image","mime":"image/png","data":["#,
            "[],",
            "[]]}",
        ),
        ("[", "1,", "1]"),
    ]);
    let count = (target - head.len() - tail.len()) / element.len();
    let mut json = String::with_capacity(target);
    json.push_str(head);
    for _ in 0..count {
        json.push_str(element);
    }
    json.push_str(tail);
    json.into_bytes()
}

/// `{"type":"msg","text":"xxx…"}` of exactly `len` bytes (at least 25).
fn json_of_length(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    let (head, tail) = rng.pick(&[
        (r#"{"type":"msg","text":""#, r#""}"#),
        (r#"{"type":"signal","data":""#, r#""}"#),
        (r#"{"type":"find","adult":true,"nick":""#, r#""}"#),
    ]);
    let fill = len.saturating_sub(head.len() + tail.len());
    let mut json = Vec::with_capacity(len);
    json.extend_from_slice(head.as_bytes());
    json.resize(head.len() + fill, b'x');
    json.extend_from_slice(tail.as_bytes());
    json
}

fn json_near_limit(rng: &mut SplitMix64, steps: &mut Steps, max_frame_bytes: usize) -> bool {
    let len = match rng.below(3) {
        0 => max_frame_bytes,
        1 => max_frame_bytes - 1,
        _ => max_frame_bytes - rng.below(64) as usize,
    };
    let json = json_of_length(rng, len);
    if rng.one_in(3) {
        // The same bytes in up to eight fragments: the limit is on the whole message.
        let pieces = rng.between(2, 8);
        let piece_bytes = json.len().div_ceil(pieces);
        let chunks: Vec<&[u8]> = json.chunks(piece_bytes).collect();
        for (index, chunk) in chunks.iter().enumerate() {
            let opcode = if index == 0 {
                opcode::TEXT
            } else {
                opcode::CONTINUATION
            };
            let frame = masked(rng, opcode, chunk.to_vec()).fin(index + 1 == chunks.len());
            steps.frame(frame);
        }
    } else {
        let frame = masked(rng, opcode::TEXT, json);
        steps.frame(frame);
    }
    false
}

fn binary_frame(rng: &mut SplitMix64, steps: &mut Steps, max_frame_bytes: usize) {
    let payload = match rng.below(5) {
        0 => Vec::new(),
        1 => any_valid_frame(rng),
        2 => vec![0xA5; rng.between(64 << 10, max_frame_bytes / 2)],
        _ => {
            let len = rng.between(1, 4096);
            rng.bytes(len)
        }
    };
    let frame = masked(rng, opcode::BINARY, payload);
    steps.frame(frame);
}

/// A control frame a client may put between fragments.
fn interleaved_control(rng: &mut SplitMix64) -> RawFrame {
    let opcode = rng.pick(&[opcode::PING, opcode::PONG]);
    let len = rng.between(0, 125);
    let payload = rng.bytes(len);
    masked(rng, opcode, payload)
}

fn fragmented_message(rng: &mut SplitMix64, steps: &mut Steps) {
    let payload = match rng.below(4) {
        0 => random_text(rng).into_bytes(),
        1 => wrong_field_type(rng),
        _ => {
            // Multi-byte characters, so some cuts fall inside one (valid: UTF-8 is checked
            // on the whole message).
            let mut frame = valid_object(rng, "msg");
            frame.insert("text".into(), json!("é漢🙂 ".repeat(rng.between(1, 100))));
            Value::Object(frame).to_string().into_bytes()
        }
    };
    let pieces = rng.between(2, 50);
    let mut cuts: Vec<usize> = (1..pieces).map(|_| rng.between(0, payload.len())).collect();
    cuts.sort_unstable();
    cuts.push(payload.len());
    let first_opcode = if rng.one_in(8) {
        opcode::BINARY
    } else {
        opcode::TEXT
    };
    let mut start = 0;
    for (index, &end) in cuts.iter().enumerate() {
        let opcode = if index == 0 {
            first_opcode
        } else {
            opcode::CONTINUATION
        };
        let frame = masked(rng, opcode, payload[start..end].to_vec()).fin(end == payload.len());
        steps.frame(frame);
        start = end;
        if end < payload.len() {
            if rng.one_in(3) {
                let control = interleaved_control(rng);
                steps.frame(control);
            }
            if rng.one_in(8) {
                steps.pause(Duration::from_millis(rng.between(1, 50) as u64));
            }
        }
        if end == payload.len() {
            break;
        }
    }
}

fn fragments_never_end(rng: &mut SplitMix64, steps: &mut Steps, max_frame_bytes: usize) -> bool {
    let first_bytes = if rng.one_in(4) {
        // Most of a frame's worth, held by the server while it waits for the rest.
        rng.between(
            256 << 10,
            max_frame_bytes.saturating_sub(64 << 10).max(256 << 10),
        )
    } else {
        rng.between(1, 500)
    };
    let first = masked(rng, opcode::TEXT, vec![b'['; first_bytes]).fin(false);
    steps.frame(first);
    for _ in 0..rng.between(0, 5) {
        let len = rng.between(0, 100);
        let more = masked(rng, opcode::CONTINUATION, vec![b'['; len]).fin(false);
        steps.frame(more);
        if rng.one_in(2) {
            let control = interleaved_control(rng);
            steps.frame(control);
        }
    }
    steps.pause(Duration::from_millis(rng.between(100, 2000) as u64));
    match rng.below(3) {
        0 => {
            steps.reset();
            false
        }
        // A new message inside the unfinished one: 1002.
        1 => {
            let json = valid_frame(rng, "typing");
            let frame = masked(rng, opcode::TEXT, json);
            steps.frame(frame);
            true
        }
        // Left unfinished; the connection's next data frame breaks it.
        _ => false,
    }
}

fn control_frame_invalid(rng: &mut SplitMix64, steps: &mut Steps) {
    let frame = match rng.below(4) {
        0 => {
            let len = rng.between(126, 1000);
            let payload = rng.bytes(len);
            let opcode = rng.pick(&[opcode::PING, opcode::PONG]);
            masked(rng, opcode, payload)
        }
        1 => {
            let mut payload = 1000u16.to_be_bytes().to_vec();
            payload.resize(rng.between(126, 600), b'r');
            masked(rng, opcode::CLOSE, payload)
        }
        2 => {
            let payload = rng.bytes(10);
            masked(rng, opcode::PING, payload).fin(false)
        }
        _ => {
            // A fragmented close.
            masked(rng, opcode::CLOSE, 1000u16.to_be_bytes().to_vec()).fin(false)
        }
    };
    steps.frame(frame);
}

const CLOSE_CODES: [u16; 19] = [
    0, 1, 999, 1000, 1001, 1004, 1005, 1006, 1012, 1014, 1015, 1016, 2999, 3000, 3999, 4000, 4999,
    5000, 65535,
];

fn close_odd(rng: &mut SplitMix64, steps: &mut Steps) {
    let payload = match rng.below(6) {
        0 => Vec::new(),
        // A one-byte payload: half a status code.
        1 => vec![0x03],
        _ => {
            let mut payload = rng.pick(&CLOSE_CODES).to_be_bytes().to_vec();
            match rng.below(4) {
                0 => {}
                1 => payload.extend_from_slice("bye é".as_bytes()),
                2 => {
                    let not_utf8 = rng.pick(&NOT_UTF8);
                    payload.extend_from_slice(not_utf8);
                }
                _ => payload.resize(125, b'r'),
            }
            payload
        }
    };
    let frame = masked(rng, opcode::CLOSE, payload);
    steps.frame(frame);
}

/// Returns whether the server must close (everything but a non-minimal length, which RFC
/// 6455 forbids but many servers accept).
fn frame_header_invalid(rng: &mut SplitMix64, steps: &mut Steps) -> bool {
    let json = valid_frame(rng, "typing");
    let mut frame = masked(rng, opcode::TEXT, json);
    let must_close = match rng.below(4) {
        0 => {
            frame.reserved_bits = rng.between(1, 7) as u8;
            true
        }
        1 => {
            frame.opcode = rng.pick(&[3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]);
            true
        }
        2 => {
            frame.mask = None;
            true
        }
        _ => {
            frame.length = rng.pick(&[LengthField::Sixteen, LengthField::SixtyFour]);
            false
        }
    };
    steps.frame(frame);
    must_close
}

/// A `resume` frame: random, garbage or this fuzzer's own earlier token; a chat id that may
/// be anything; a `last_seq` that may be absent, huge or not a number.
fn resume_frame(rng: &mut SplitMix64, context: &MutationContext<'_>) -> Vec<u8> {
    let session = match (rng.below(6), context.earlier_token) {
        (0 | 1, Some(token)) => json!(token),
        (2, _) => json!(""),
        (3, _) => json!("é🙂".repeat(rng.between(1, 2000))),
        (4, _) => json!(rng.below(1 << 20)),
        _ => json!(random_id(rng, 22)),
    };
    let mut frame = json!({"type": "resume", "session": session});
    match rng.below(4) {
        0 => {}
        1 => frame["chat"] = json!(random_id(rng, 16)),
        2 => {
            let len = rng.between(0, 300);
            frame["chat"] = json!(random_id(rng, len));
        }
        _ => frame["chat"] = json!(null),
    }
    let mut text = frame.to_string();
    let last_seq = match rng.below(6) {
        0 => None,
        1 => Some("0".to_owned()),
        2 => Some(rng.below(1000).to_string()),
        3 => Some(rng.next_u64().to_string()),
        4 => Some("\"12\"".to_owned()),
        _ => Some(rng.pick(&NUMBERS).to_owned()),
    };
    if let Some(last_seq) = last_seq {
        text.pop();
        text.push_str(&format!(",\"last_seq\":{last_seq}}}"));
    }
    text.into_bytes()
}

/// The query of an upgrade URL that asks to resume (`?resume=…&chat=…&last_seq=…`), from
/// this fuzzer's earlier token or from garbage.
pub(crate) fn resume_query(rng: &mut SplitMix64, earlier_token: Option<&str>) -> String {
    let token = match (rng.below(5), earlier_token) {
        (0 | 1, Some(token)) => token.to_owned(),
        (2, _) => String::new(),
        (3, _) => {
            let len = rng.between(1, 3000);
            percent_encoded(&rng.bytes(len))
        }
        _ => random_id(rng, 22),
    };
    let mut query = format!("?resume={token}");
    if rng.one_in(2) {
        query.push_str(&format!("&chat={}", random_id(rng, 16)));
    }
    match rng.below(5) {
        0 => {}
        1 => query.push_str(&format!("&last_seq={}", rng.below(100))),
        2 => query.push_str(&format!("&last_seq={}", rng.next_u64())),
        3 => query.push_str("&last_seq=-1&last_seq=99999999999999999999999"),
        _ => query.push_str(&format!(
            "&last_seq={}",
            percent_encoded(rng.pick(&NUMBERS).as_bytes())
        )),
    }
    if rng.one_in(8) {
        query.push_str("&resume=");
    }
    query
}

fn percent_encoded(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => (*byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// A base64url string of `len` random characters (the alphabet of tokens and chat ids).
fn random_id(rng: &mut SplitMix64, len: usize) -> String {
    const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..len)
        .map(|_| URL_SAFE[rng.below(64) as usize] as char)
        .collect()
}

/// Text of about `len` characters with words, punctuation and multi-byte characters.
fn random_words(rng: &mut SplitMix64, len: usize) -> String {
    const WORDS: [&str; 10] = [
        "hello", "fuzz", "é", "漢字", "🙂", "<b>", "&amp;", "\"q\"", "\\", "x",
    ];
    let mut text = String::new();
    while text.chars().count() < len {
        let word = rng.pick(&WORDS);
        text.push_str(word);
        text.push(' ');
    }
    text.chars().take(len.max(1)).collect()
}

/// Standard base64 with padding, for `media` data.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * index) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> MutationContext<'static> {
        MutationContext {
            max_frame_bytes: 2 << 20,
            earlier_token: Some("AAAAAAAAAAAAAAAAAAAAAA"),
        }
    }

    #[test]
    fn every_kind_builds_an_action_that_sends_something() {
        let mut rng = SplitMix64::new(42);
        for kind in Kind::ALL {
            for _ in 0..20 {
                let action = build(kind, &mut rng, &context());
                if kind == Kind::ResumeUrl {
                    continue;
                }
                assert!(action.frames > 0, "{kind:?} sends at least one frame");
                assert!(!action.steps.is_empty(), "{kind:?} has steps");
            }
        }
    }

    #[test]
    fn near_limit_frames_fit_the_limit_and_over_limit_frames_do_not() {
        let mut rng = SplitMix64::new(7);
        let max = context().max_frame_bytes as u64;
        for _ in 0..20 {
            let near = build(Kind::JsonNearLimit, &mut rng, &context());
            // Payload plus at most eight headers of 14 bytes.
            assert!(near.bytes <= max + 8 * 14 && near.bytes > max - 200);
            let over = build(Kind::JsonOverLimit, &mut rng, &context());
            assert!(over.bytes > max + 14);
            assert!(over.must_close);
        }
    }

    #[test]
    fn valid_frames_are_json_objects_of_their_type() {
        let mut rng = SplitMix64::new(3);
        for frame_type in CLIENT_TYPES {
            let frame: Value = serde_json::from_slice(&valid_frame(&mut rng, frame_type))
                .expect("valid frames are JSON");
            assert_eq!(frame["type"], frame_type);
        }
        assert_eq!(base64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw==");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[test]
    fn the_weights_never_draw_a_connection_time_kind() {
        let mut rng = SplitMix64::new(9);
        for _ in 0..10_000 {
            let kind = pick_kind(&mut rng);
            assert!(kind != Kind::ResumeFrameFirst && kind != Kind::ResumeUrl);
        }
    }
}
