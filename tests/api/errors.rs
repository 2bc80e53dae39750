//! Bad input of every kind gets a clear error, and the connection keeps serving; limits hold;
//! abusive or dead connections are cut off.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use ephemera::settings::Settings;

async fn malformed_frames_get_bad_request_and_the_connection_stays_open() {
    let server = spawn_server(test_settings());
    let mut a = server.client().await;
    for raw in [
        "not json at all",
        "{\"type\":",
        "[1,2,3]",
        "{\"no_type\":true}",
        "{\"type\":\"dance\"}",
        "{\"type\":\"msg\"}",
        "{\"type\":\"msg\",\"text\":42}",
        "{\"type\":\"typing\",\"active\":\"yes\"}",
        "{\"type\":\"find\",\"adult\":true,\"mode\":\"radio\"}",
        "{\"type\":\"report\",\"reason\":\"boredom\"}",
        "{\"type\":\"media\",\"kind\":\"image\",\"mime\":\"image/svg+xml\",\"data\":\"aGk=\"}",
        "{\"type\":\"media\",\"kind\":\"image\",\"mime\":\"image/png\",\"data\":\"@@@\"}",
    ] {
        a.send_raw(Message::Text(raw.to_owned())).await;
        a.expect_error("bad_request").await;
    }
    a.send_raw(Message::Binary(vec![1, 2, 3])).await;
    a.expect_error("bad_request").await;
    // Still served: it can queue and chat.
    a.send(find_text()).await;
    a.expect("waiting").await;
}

async fn oversized_fields_get_too_large() {
    let server = spawn_server(Settings {
        max_media_bytes: 8,
        ..test_settings()
    });
    let (mut a, _b) = server.matched_pair().await;
    a.say(&"x".repeat(2001)).await;
    a.expect_error("too_large").await;
    a.send(json!({"type":"media","kind":"image","mime":"image/png","data":"AAAAAAAAAAAA"}))
        .await;
    a.expect_error("too_large").await;
    a.send(json!({"type":"signal","data":"s".repeat(64 << 10)}))
        .await;
    a.expect_error("too_large").await;
    let mut c = server.client().await;
    c.send(json!({"type":"find","adult":true,"nick":"n".repeat(25)}))
        .await;
    c.expect_error("too_large").await;
    let interests: Vec<String> = (0..11).map(|i| format!("i{i}")).collect();
    c.send(json!({"type":"find","adult":true,"interests":interests}))
        .await;
    c.expect_error("too_large").await;
    c.send(json!({"type":"find","adult":true,"interests":["i".repeat(33)]}))
        .await;
    c.expect_error("too_large").await;
    // A message at the limit is fine.
    a.say(&"y".repeat(2000)).await;
    assert_eq!(a.expect("msg").await["text"].as_str().unwrap().len(), 2000);
}

async fn a_frame_over_the_frame_limit_is_refused_and_the_connection_closed_with_1009() {
    let server = spawn_server(Settings {
        max_frame_bytes: 4096,
        ..test_settings()
    });
    let (mut a, mut b) = server.matched_pair().await;
    a.say(&"z".repeat(5000)).await;
    a.expect_error("too_large").await;
    a.expect_close(1009).await;
    assert_eq!(b.expect("ended").await["reason"], "stranger_left");
}

async fn find_without_the_adult_flag_gets_age_required() {
    let server = spawn_server(test_settings());
    let mut a = server.client().await;
    a.send(json!({"type":"find"})).await;
    a.expect_error("age_required").await;
    a.send(json!({"type":"find","adult":false})).await;
    a.expect_error("age_required").await;
    a.send(json!({"type":"find","adult":"true"})).await;
    a.expect_error("bad_request").await;
}

async fn chat_frames_outside_a_chat_get_not_chatting() {
    let server = spawn_server(test_settings());
    let mut a = server.client().await;
    for frame in [
        json!({"type":"msg","text":"hi"}),
        json!({"type":"media","kind":"image","mime":"image/png","data":"aGk="}),
        json!({"type":"typing","active":true}),
        json!({"type":"signal","data":{}}),
        json!({"type":"report","reason":"spam"}),
        json!({"type":"leave"}),
        json!({"type":"next"}),
    ] {
        a.send(frame).await;
        a.expect_error("not_chatting").await;
    }
    a.send(find_text()).await;
    a.expect("waiting").await;
    a.say("anyone?").await;
    a.expect_error("not_chatting").await;
}

async fn find_while_chatting_gets_already_chatting() {
    let server = spawn_server(test_settings());
    let (mut a, _b) = server.matched_pair().await;
    a.send(find_text()).await;
    a.expect_error("already_chatting").await;
}

#[tokio::test]
async fn beyond_max_sessions_new_connections_get_server_busy() {
    let server = spawn_server(Settings {
        max_sessions: 2,
        ..test_settings()
    });
    let _a = server.client().await;
    let b = server.client().await;
    let (ws, _) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .unwrap();
    let mut refused = Client::ungreeted(ws);
    refused.expect_error("server_busy").await;
    refused.expect_close(1013).await;
    // A place frees up when a session ends.
    b.close().await;
    server
        .stats_until("the closed session is gone", |s| s["online"] == 1)
        .await;
    let c = server.client().await;
    assert_eq!(c.hello["type"], "hello");
}

async fn more_than_twenty_protocol_errors_in_a_minute_close_the_connection_with_1008() {
    let server = spawn_server(test_settings());
    let mut a = server.client().await;
    for _ in 0..20 {
        a.send_raw(Message::Text("nonsense".to_owned())).await;
        a.expect_error("bad_request").await;
    }
    a.send_raw(Message::Text("one too many".to_owned())).await;
    a.expect_error("bad_request").await;
    a.expect_close(1008).await;
}

async fn origins_other_than_the_server_and_the_allowed_ones_are_refused_with_403() {
    let server = spawn_server(Settings {
        allowed_origins: vec!["https://chat.example".to_owned()],
        ..test_settings()
    });
    let url = server.ws_url();
    assert_eq!(
        Client::connect_with_origin(&url, "https://evil.example")
            .await
            .err(),
        Some(403)
    );
    let own = format!("http://{}", server.addr);
    assert!(Client::connect_with_origin(&url, &own).await.is_ok());
    assert!(Client::connect_with_origin(&url, "https://chat.example")
        .await
        .is_ok());
    // Non-browser clients send no Origin at all.
    assert!(tokio_tungstenite::connect_async(&url).await.is_ok());
}

async fn the_server_pings_and_a_silent_client_counts_as_dropped() {
    let server = spawn_server(Settings {
        heartbeat_interval_seconds: 0.1,
        client_timeout_seconds: 0.5,
        resume_grace_seconds: 5.0,
        ..test_settings()
    });
    let (mut a, mut b) = server.matched_pair().await;
    // A reader sees pings and answers them (tungstenite pongs as it reads), so while A
    // reads it stays alive well past the client timeout.
    let saw_ping = tokio::time::timeout(EXPECT_WITHIN, async {
        use futures_util::StreamExt;
        while let Some(Ok(message)) = a.ws.next().await {
            if matches!(message, Message::Ping(_)) {
                return;
            }
        }
    })
    .await;
    assert!(saw_ping.is_ok(), "server sends pings");
    tokio::join!(
        a.expect_nothing(Duration::from_millis(1200)),
        b.expect_nothing(Duration::from_millis(1200)),
    );
    // Now A stops reading, so it answers no ping: after the timeout it counts as dropped.
    b.expect("stranger_away").await;
    drop(a);
}

async fn a_client_that_stops_reading_is_cut_off_instead_of_buffered() {
    let server = spawn_server(Settings {
        session_outbox_max_bytes: 256 << 10,
        resume_grace_seconds: 30.0,
        ..test_settings()
    });
    let (slow, mut b) = server.matched_pair().await;
    // The slow client never reads again. B sends far more than socket buffers plus the
    // outbox bound can hold; the server must cut the slow one off, and B keeps being served.
    assert!(
        flood_until_stranger_away(&mut b).await,
        "the slow reader was never cut off"
    );
    drop(slow);
}

async fn a_flood_is_acknowledged_or_refused_and_nothing_acknowledged_is_lost() {
    let server = spawn_server(Settings {
        pair_mailbox_capacity: 2,
        ..test_settings()
    });
    let (mut a, mut b) = server.matched_pair().await;
    const SENT: usize = 500;
    // Write the whole flood before reading anything, so it reaches the server in bursts.
    for n in 0..SENT {
        a.ws.feed(Message::Text(
            json!({"type":"msg","text":format!("flood {n}")}).to_string(),
        ))
        .await
        .unwrap();
    }
    futures_util::SinkExt::flush(&mut a.ws).await.unwrap();
    let (mut acknowledged, mut refused) = (Vec::new(), 0);
    while acknowledged.len() + refused < SENT {
        let frame = a.expect_any().await;
        match frame["type"].as_str() {
            Some("msg") => acknowledged.push(frame["text"].as_str().unwrap().to_owned()),
            Some("error") => {
                assert_eq!(frame["code"], "rate_limited");
                assert!(frame["retry_after_ms"].as_u64().unwrap() > 0);
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // With a chat mailbox of 2, a burst of 500 always overflows it on one node (about 430
    // refused here). Across nodes the relay paces the posts into the pair's mailbox, so the
    // flood may or may not meet that bound; what is refused there is refused the same way.
    if !server.is_cluster() {
        assert!(refused > 0, "the flood never hit the chat's bound");
    }
    assert!(!acknowledged.is_empty());
    // Everything acknowledged reached the stranger, in order, once.
    let mut delivered = Vec::new();
    for _ in 0..acknowledged.len() {
        delivered.push(b.expect("msg").await["text"].as_str().unwrap().to_owned());
    }
    assert_eq!(delivered, acknowledged);
    b.expect_nothing(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn past_the_server_wide_outbox_budget_the_slowest_readers_are_cut_off() {
    // The per-session bound is far away; only the server-wide budget can stop this.
    let server = spawn_server(Settings {
        session_outbox_max_bytes: 1 << 30,
        outbox_total_max_bytes: 512 << 10,
        resume_grace_seconds: 30.0,
        ..test_settings()
    });
    let (slow, mut b) = server.matched_pair().await;
    assert!(
        flood_until_stranger_away(&mut b).await,
        "the slow reader was never cut off"
    );
    // Its backlog no longer counts: the budget is free again for others.
    let (mut c, mut d) = server.matched_pair().await;
    c.say("still served").await;
    assert_eq!(d.expect("msg").await["text"], "still served");
    drop(slow);
}

/// `sender` sends 1,900-byte messages (up to about 38 MB), reading each echo, until its
/// stranger is reported away; returns whether that happened.
async fn flood_until_stranger_away(sender: &mut Client) -> bool {
    let text = "m".repeat(1900);
    for _ in 0..20_000 {
        sender.say(&text).await;
        let mut away = false;
        loop {
            let frame = sender.next_frame(EXPECT_WITHIN).await.unwrap().unwrap();
            match frame["type"].as_str() {
                Some("msg") => break,
                Some("stranger_away") => away = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        if away {
            return true;
        }
    }
    false
}

on_one_node_and_on_three!(
    malformed_frames_get_bad_request_and_the_connection_stays_open,
    oversized_fields_get_too_large,
    a_frame_over_the_frame_limit_is_refused_and_the_connection_closed_with_1009,
    find_without_the_adult_flag_gets_age_required,
    chat_frames_outside_a_chat_get_not_chatting,
    find_while_chatting_gets_already_chatting,
    more_than_twenty_protocol_errors_in_a_minute_close_the_connection_with_1008,
    origins_other_than_the_server_and_the_allowed_ones_are_refused_with_403,
    the_server_pings_and_a_silent_client_counts_as_dropped,
    a_client_that_stops_reading_is_cut_off_instead_of_buffered,
    a_flood_is_acknowledged_or_refused_and_nothing_acknowledged_is_lost,
);
