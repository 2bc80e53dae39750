//! Rate limits: over a limit a client gets `rate_limited` with `retry_after_ms`; one that
//! keeps going is disconnected; other clients are unaffected.

use std::net::IpAddr;

use serde_json::json;

use crate::helpers::*;
use ephemera::settings::Settings;

fn retry_after(frame: &serde_json::Value) -> u64 {
    frame["retry_after_ms"].as_u64().expect("retry_after_ms")
}

#[tokio::test]
async fn messages_past_the_per_second_limit_are_refused_and_never_delivered() {
    let server = spawn_server(Settings {
        max_messages_per_second: 3,
        ..test_settings()
    });
    let (mut a, mut b) = server.matched_pair().await;
    for n in 0..5 {
        a.say(&format!("m{n}")).await;
    }
    // Refusals come straight from the session, echoes through the chat, so they interleave.
    let (mut echoed, mut refused) = (Vec::new(), 0);
    for _ in 0..5 {
        let frame = a.expect_any().await;
        if frame["type"] == "msg" {
            echoed.push(frame["text"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(frame["code"], "rate_limited");
            assert!((1..=1000).contains(&retry_after(&frame)));
            refused += 1;
        }
    }
    assert_eq!(echoed, ["m0", "m1", "m2"]);
    assert_eq!(refused, 2);
    for n in 0..3 {
        assert_eq!(b.expect("msg").await["text"], format!("m{n}"));
    }
    b.expect_nothing(std::time::Duration::from_millis(100))
        .await;
}

#[tokio::test]
async fn media_past_the_per_minute_limit_is_refused() {
    let server = spawn_server(Settings {
        max_media_per_minute: 1,
        ..test_settings()
    });
    let (mut a, _b) = server.matched_pair().await;
    let image = json!({"type":"media","kind":"image","mime":"image/png","data":"aGk="});
    a.send(image.clone()).await;
    a.expect("media").await;
    a.send(image).await;
    let refusal = a.expect_error("rate_limited").await;
    assert!(
        retry_after(&refusal) > 1000,
        "the next one is a minute away"
    );
}

#[tokio::test]
async fn finds_and_nexts_past_the_per_minute_limit_are_refused() {
    let server = spawn_server(Settings {
        max_finds_per_minute: 2,
        ..test_settings()
    });
    let mut a = server.client().await;
    a.send(find_text()).await;
    a.expect("waiting").await;
    a.send(json!({"type":"next"})).await;
    a.expect("waiting").await;
    a.send(find_text()).await;
    a.expect_error("rate_limited").await;
    // The client can see its own state.
    let (_, _, body) = http_request(
        server.addr,
        "127.0.0.1".parse().unwrap(),
        "/api/privacy/me",
        "",
    )
    .await;
    let me: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(me["rate_limited"]["finds_for_ms"].as_u64().unwrap() > 0);
    assert!(me["rate_limited"]["connections_for_ms"].is_null());
    assert_eq!(me["limits"]["finds_per_minute"], 2);
}

#[tokio::test]
async fn new_connections_past_the_per_minute_limit_are_refused_per_client() {
    let server = spawn_server(Settings {
        max_connections_per_minute: 2,
        ..test_settings()
    });
    let flooder: IpAddr = "127.60.0.1".parse().unwrap();
    let _one = Client::connect_from(server.addr, flooder).await;
    let _two = Client::connect_from(server.addr, flooder).await;
    let mut third = Client::connect_from_ungreeted(server.addr, flooder).await;
    third.expect_error("rate_limited").await;
    third.expect_close(1013).await;
    let other = Client::connect_from(server.addr, "127.60.0.2".parse().unwrap()).await;
    assert_eq!(other.hello["type"], "hello");
}

#[tokio::test]
async fn a_client_that_keeps_going_past_its_limit_is_disconnected() {
    let server = spawn_server(Settings {
        max_messages_per_second: 1,
        ..test_settings()
    });
    let (mut a, mut b) = server.matched_pair().await;
    for n in 0..30 {
        a.say(&format!("spam {n}")).await;
    }
    a.expect_close(1008).await;
    // The stranger got the one message allowed, then the chat ended.
    assert_eq!(b.expect("msg").await["text"], "spam 0");
    assert_eq!(b.expect("ended").await["reason"], "stranger_left");
}
