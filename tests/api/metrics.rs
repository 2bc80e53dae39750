//! Statistics that cannot identify anyone: after a busy run (chats in both modes, shared
//! interests, media, typing, signals, errors, reports, resumes, rate limits), every exported
//! series is one docs/metrics.md lists, every label is one of the allowed names, and every
//! value comes from its small fixed set.

use std::collections::{BTreeSet, HashMap};

use serde_json::json;

use crate::helpers::*;
use ephemera::settings::Settings;
use ephemera_actors::metrics::{Disconnect, Refusal, SERIES};
use ephemera_actors::protocol::{ErrorCode, ReportReason};

/// Series names docs/metrics.md lists (the first column of its tables).
fn documented_series() -> BTreeSet<String> {
    include_str!("../../docs/metrics.md")
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.starts_with("ephemera_") || name.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// One exposition line: the series name and its labels.
fn parse_sample(line: &str) -> (String, Vec<(String, String)>) {
    let (series, _value) = line.rsplit_once(' ').expect("a sample has a value");
    let Some((name, labels)) = series.split_once('{') else {
        return (series.to_owned(), Vec::new());
    };
    let labels = labels
        .trim_end_matches('}')
        .split("\",")
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').expect("label=value");
            (key.to_owned(), value.trim_matches('"').to_owned())
        })
        .collect();
    (name.to_owned(), labels)
}

/// The allowed values of each label name.
fn allowed_values() -> HashMap<&'static str, BTreeSet<String>> {
    let set = |values: &[&str]| values.iter().map(|v| v.to_string()).collect();
    let mut reasons: BTreeSet<String> = Refusal::ALL.iter().map(|r| r.label().into()).collect();
    reasons.extend(Disconnect::ALL.iter().map(|d| d.label().to_owned()));
    reasons.extend(ReportReason::ALL.iter().map(|r| r.as_str().to_owned()));
    HashMap::from([
        ("mode", set(&["text", "video", "any"])),
        ("state", set(&["online", "waiting", "chatting"])),
        ("interests", set(&["shared", "none"])),
        ("kind", set(&["msg", "media", "typing", "signal"])),
        (
            "code",
            ErrorCode::ALL.iter().map(|c| c.as_str().into()).collect(),
        ),
        ("reason", reasons),
        ("version", set(&[env!("CARGO_PKG_VERSION")])),
        (
            "result",
            set(&[
                "ok",
                "failed",
                "accepted",
                "invalid_email",
                "unknown_topic",
                "bad_request",
                "unsupported_type",
                "too_large",
                "forbidden_origin",
                "rate_limited",
                "timeout",
                "unavailable",
            ]),
        ),
        ("action", set(&["sign_up", "delete"])),
        (
            "continent",
            set(&["AF", "AN", "AS", "EU", "NA", "OC", "SA", "unknown"]),
        ),
    ])
}

/// Reads frames until one of `frame_type` (the others of a busy chat are not this test's).
async fn until(client: &mut Client, frame_type: &str) -> serde_json::Value {
    loop {
        let frame = client.expect_any().await;
        if frame["type"] == frame_type {
            return frame;
        }
    }
}

fn is_country(value: &str) -> bool {
    value == "unknown" || (value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_busy_run_every_series_and_label_is_documented_and_from_a_fixed_set() {
    let server = spawn_server(Settings {
        max_messages_per_second: 2,
        ..long_grace()
    });
    // Chats in both modes, with and without a shared interest, each a little busy.
    for (mode, interests) in [("text", vec!["chess"]), ("video", vec![]), ("text", vec![])] {
        let find = find_with(mode, &interests);
        let (mut a, mut b) = server.matched_pair_with(find).await;
        a.send(json!({"type":"typing","active":true})).await;
        a.send(json!({"type":"msg","text":"hello there","id":"m1"}))
            .await;
        until(&mut a, "msg").await;
        a.send(json!({"type":"msg","text":"hello there","id":"m1"}))
            .await;
        until(&mut a, "msg").await;
        let image = json!({"type":"media","kind":"image","mime":"image/png","data":"aGVsbG8="});
        b.send(image).await;
        until(&mut b, "media").await;
        if mode == "video" {
            a.send(json!({"type":"signal","data":{"sdp":"offer"}}))
                .await;
        }
        // Errors of several codes, and the message rate limit.
        a.send(json!({"type":"find","adult":true})).await;
        assert_eq!(until(&mut a, "error").await["code"], "already_chatting");
        a.send(json!({"type":"dance"})).await;
        assert_eq!(until(&mut a, "error").await["code"], "bad_request");
        for _ in 0..3 {
            b.say("quick").await;
        }
        // A resume, then a report that ends the chat.
        let token = b.token();
        let last_seq = b.last_seq;
        b.drop_connection();
        let mut b = Client::resume(&server, &token, last_seq).await;
        a.send(json!({"type":"report","reason":"spam"})).await;
        until(&mut a, "ended").await;
        until(&mut b, "ended").await;
    }
    let mut idle = server.client().await;
    idle.send(json!({"type":"leave"})).await;
    idle.expect_error("not_chatting").await;
    idle.send(json!({"type":"find"})).await;
    idle.expect_error("age_required").await;

    let body = server.metrics().await;
    let documented = documented_series();
    let declared: BTreeSet<String> = SERIES.iter().map(|s| s.name.to_owned()).collect();
    assert!(
        declared.is_subset(&documented),
        "declared but not in docs/metrics.md: {:?}",
        declared.difference(&documented).collect::<Vec<_>>()
    );
    let allowed = allowed_values();
    let mut seen = BTreeSet::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, labels) = parse_sample(line);
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| documented.contains(*base))
            .unwrap_or(&name)
            .to_owned();
        assert!(documented.contains(&base), "undocumented series: {line}");
        for (key, value) in labels {
            match key.as_str() {
                "le" => assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "{line}"),
                "country" => assert!(is_country(&value), "{line}"),
                _ => {
                    let values = allowed.get(key.as_str());
                    assert!(
                        values.is_some(),
                        "label {key} is not an allowed name: {line}"
                    );
                    assert!(
                        values.is_some_and(|v| v.contains(&value)),
                        "{key}={value} is not an allowed value: {line}"
                    );
                }
            }
        }
        seen.insert(base);
    }
    // The busy run reached the series it was meant to.
    for name in [
        "ephemera_matches_total",
        "ephemera_match_wait_seconds",
        "ephemera_chat_duration_seconds",
        "ephemera_chat_event_bytes_total",
        "ephemera_relayed_bytes_total",
        "ephemera_errors_sent_total",
        "ephemera_reports_total",
        "ephemera_resent_messages_total",
        "ephemera_sessions_resumed_total",
        "ephemera_purge_tick_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(seen.contains(name), "{name} was not exported");
    }
    for sample in [
        r#"ephemera_matches_total{mode="text",interests="shared"}"#,
        r#"ephemera_matches_total{mode="video",interests="none"}"#,
        r#"ephemera_reports_total{reason="spam"}"#,
        r#"ephemera_errors_sent_total{code="already_chatting"}"#,
        r#"ephemera_relayed_total{kind="signal"}"#,
    ] {
        assert!(body.contains(sample), "{sample} was not counted");
    }
}

fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn sessions_are_counted_by_country_and_continent_and_nothing_finer() {
    let server = spawn_server(Settings {
        geoip_db_path: concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/geoip/GeoLite2-Country-Test.mmdb"
        )
        .into(),
        trusted_proxies: vec!["127.0.0.0/8".into()],
        ..test_settings()
    });
    let series = |country: &str, continent: &str| {
        format!(
            r#"ephemera_sessions_started_by_country_total{{country="{country}",continent="{continent}"}}"#
        )
    };
    let before = server.metrics().await;
    let mut clients = Vec::new();
    for address in [
        "81.2.69.142",
        "81.2.69.142",
        "89.160.20.112",
        "216.160.83.56",
        "10.9.8.7",
    ] {
        let proxy = "127.0.0.1".parse().unwrap();
        clients.push(Client::connect_forwarded(server.addr, proxy, address).await);
    }
    let after = server.metrics().await;
    for (country, continent, started) in [("GB", "EU", 2.0), ("SE", "EU", 1.0), ("US", "NA", 1.0)] {
        let name = series(country, continent);
        assert_eq!(
            sample(&after, &name) - sample(&before, &name),
            started,
            "{name}"
        );
    }
    // Other tests' servers in this process count unknown sessions too: at least this one.
    let unknown = series("unknown", "unknown");
    assert!(sample(&after, &unknown) - sample(&before, &unknown) >= 1.0);
    // Nothing finer than a country is exported, and no address.
    assert!(!after.contains("81.2.69"));
    assert!(!after.contains("city"));
    drop(clients);
}
