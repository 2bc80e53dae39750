//! Frame handling: parse and validate a client `msg`, and render the server's `msg` event,
//! against the same work done through `serde_json::Value`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ephemera_actors::protocol::{parse_client_frame, render_chat_event, ClientRequest, Limits};
use serde_json::{json, Value};

const FRAME: &str = r#"{"type":"msg","text":"hello there, how are you doing today? this is about a hundred bytes of text!!"}"#;

/// The baseline: parse into a Value, check the same rules, re-serialise the text.
fn baseline_parse(frame: &str, limits: &Limits) -> Option<String> {
    let value: Value = serde_json::from_str(frame).ok()?;
    if value["type"] != "msg" {
        return None;
    }
    let text = value["text"].as_str()?;
    if text.trim().is_empty() || text.chars().count() > limits.max_text_chars {
        return None;
    }
    Some(text.to_owned())
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let Ok(ClientRequest::Msg { body }) = parse_client_frame(FRAME, &limits) else {
        panic!("the frame parses");
    };
    let rendered = render_chat_event("msg", 42, false, &body.bytes);
    let ours: Value = serde_json::from_str(&rendered).unwrap();
    let text = baseline_parse(FRAME, &limits).unwrap();
    let theirs = json!({"type":"msg","seq":42,"from":"stranger","text":text});
    assert_eq!(ours, theirs, "both paths produce the same event");

    let mut group = c.benchmark_group("frames/parse_msg");
    group.bench_function("ephemera", |b| {
        b.iter(|| parse_client_frame(black_box(FRAME), &limits).is_ok())
    });
    group.bench_function("baseline_value", |b| {
        b.iter(|| baseline_parse(black_box(FRAME), &limits).is_some())
    });
    group.finish();

    let mut group = c.benchmark_group("frames/render_msg");
    group.bench_function("ephemera", |b| {
        b.iter(|| render_chat_event("msg", black_box(42), false, black_box(&body.bytes)))
    });
    group.bench_function("baseline_value", |b| {
        b.iter(|| {
            serde_json::to_string(&json!({"type":"msg","seq":black_box(42),"from":"stranger","text":black_box(&text)}))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
