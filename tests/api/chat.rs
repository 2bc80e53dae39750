//! Chatting: hello, matching, messages with echo, typing, media, signal, and how chats end.

use serde_json::json;

use crate::helpers::*;

async fn hello_describes_a_fresh_session_and_its_limits() {
    let server = spawn_server(test_settings());
    let client = server.client().await;
    let hello = &client.hello;
    assert_eq!(hello["protocol"], 1);
    assert_eq!(hello["resumed"], false);
    assert_eq!(hello["state"], "idle");
    assert_eq!(client.token().len(), 22);
    assert!(client
        .token()
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert!(hello["online"].as_u64().unwrap() >= 1);
    assert_eq!(hello["limits"]["max_text_chars"], 2000);
    assert_eq!(hello["limits"]["max_media_bytes"], 1 << 20);
    assert_eq!(hello["limits"]["event_log_max_events"], 256);
    assert!(hello["ice_servers"].is_array());
    assert!(hello["pow"].is_null());
    let other = server.client().await;
    assert_ne!(client.token(), other.token());
}

async fn two_clients_match_and_chat_with_echoes_carrying_the_same_seq() {
    let server = spawn_server(test_settings());
    let mut a = server
        .waiting_client(json!({"type":"find","adult":true,"nick":"Ann"}))
        .await;
    let mut b = server.client().await;
    b.send(json!({"type":"find","adult":true,"nick":"Bo"}))
        .await;
    b.expect("waiting").await;
    let matched_a = a.expect("matched").await;
    let matched_b = b.expect("matched").await;
    assert_eq!(matched_a["seq"], 1);
    assert_eq!(matched_b["seq"], 1);
    assert_eq!(matched_a["mode"], "text");
    assert_eq!(matched_a["stranger"]["nick"], "Bo");
    assert_eq!(matched_b["stranger"]["nick"], "Ann");
    assert_ne!(
        matched_a["initiator"].as_bool().unwrap(),
        matched_b["initiator"].as_bool().unwrap(),
        "exactly one member is the initiator"
    );

    a.say("hello, stranger ✓ 👋").await;
    let echo = a.expect("msg").await;
    let received = b.expect("msg").await;
    assert_eq!(echo["from"], "you");
    assert_eq!(received["from"], "stranger");
    assert_eq!(echo["seq"], 2);
    assert_eq!(received["seq"], echo["seq"]);
    assert_eq!(received["text"], "hello, stranger ✓ 👋");

    b.say("hi!").await;
    assert_eq!(b.expect("msg").await["seq"], 3);
    let reply = a.expect("msg").await;
    assert_eq!(
        (reply["seq"].as_u64(), reply["text"].as_str()),
        (Some(3), Some("hi!"))
    );
}

async fn a_stranger_without_a_nick_is_shown_as_null() {
    let server = spawn_server(test_settings());
    let (mut a, _b) = {
        let mut a = server.waiting_client(find_text()).await;
        let mut b = server.client().await;
        b.send(json!({"type":"find","adult":true,"nick":"   "}))
            .await;
        b.expect("waiting").await;
        let matched = a.expect("matched").await;
        assert!(matched["stranger"]["nick"].is_null());
        assert_eq!(matched["common"], json!([]));
        (a, b)
    };
    a.expect_nothing(std::time::Duration::from_millis(100))
        .await;
}

async fn typing_and_signal_are_relayed_without_seq_and_not_echoed() {
    let server = spawn_server(test_settings());
    let (mut a, mut b) = server.matched_pair_with(find_with("video", &[])).await;
    a.send(json!({"type":"typing","active":true})).await;
    let typing = b.expect("typing").await;
    assert_eq!(typing["active"], true);
    assert!(typing.get("seq").is_none());
    a.send(json!({"type":"typing","active":false})).await;
    assert_eq!(b.expect("typing").await["active"], false);

    let offer =
        json!({"sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n", "type": "offer", "n": [1, 2.5, null]});
    b.send(json!({"type":"signal","data": offer})).await;
    let signal = a.expect("signal").await;
    assert_eq!(signal["data"], offer);
    assert!(signal.get("seq").is_none());
    // Nothing was echoed to the senders, and a chat event still gets the next seq.
    a.say("after typing").await;
    assert_eq!(a.expect("msg").await["seq"], 2);
    assert_eq!(b.expect("msg").await["seq"], 2);
}

async fn media_goes_across_with_its_kind_and_mime() {
    let server = spawn_server(test_settings());
    let (mut a, mut b) = server.matched_pair().await;
    // A 1x1 PNG.
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    a.send(json!({"type":"media","kind":"image","mime":"image/png","data":png}))
        .await;
    let echo = a.expect("media").await;
    let received = b.expect("media").await;
    assert_eq!(echo["from"], "you");
    assert_eq!(received["from"], "stranger");
    assert_eq!(received["seq"], echo["seq"]);
    assert_eq!(received["kind"], "image");
    assert_eq!(received["mime"], "image/png");
    assert_eq!(received["data"], png);
    a.send(json!({"type":"media","kind":"audio","mime":"audio/ogg","data":"T2dnUw=="}))
        .await;
    assert_eq!(b.expect("media").await["kind"], "audio");
}

async fn leave_ends_the_chat_for_both_and_leaves_the_leaver_idle() {
    let server = spawn_server(test_settings());
    let (mut a, mut b) = server.matched_pair().await;
    a.send(json!({"type":"leave"})).await;
    let ended_a = a.expect("ended").await;
    let ended_b = b.expect("ended").await;
    assert_eq!(ended_a["reason"], "you_left");
    assert_eq!(ended_b["reason"], "stranger_left");
    assert_eq!(ended_a["seq"], 2);
    assert_eq!(ended_b["seq"], 2);
    // Both are idle: chatting is refused, and neither was queued again.
    a.say("anyone?").await;
    a.expect_error("not_chatting").await;
    b.say("anyone?").await;
    b.expect_error("not_chatting").await;
}

async fn next_ends_the_chat_and_queues_again_at_once() {
    let server = spawn_server(test_settings());
    let (mut a, mut b) = server.matched_pair().await;
    a.send(json!({"type":"next"})).await;
    assert_eq!(a.expect("ended").await["reason"], "you_left");
    a.expect("waiting").await;
    assert_eq!(b.expect("ended").await["reason"], "stranger_left");
    // A third client meets the one who pressed next, not the one left behind.
    let mut c = server.client().await;
    c.send(find_text()).await;
    c.expect("waiting").await;
    a.expect("matched").await;
    c.expect("matched").await;
    b.expect_nothing(std::time::Duration::from_millis(100))
        .await;
}

async fn report_ends_the_chat_with_reasons_for_each_side() {
    let server = spawn_server(test_settings());
    let (mut a, mut b) = server.matched_pair().await;
    a.send(json!({"type":"report","reason":"harassment"})).await;
    assert_eq!(a.expect("ended").await["reason"], "you_reported");
    assert_eq!(b.expect("ended").await["reason"], "stranger_left");
}

async fn leave_while_waiting_takes_the_session_out_of_the_queue() {
    let server = spawn_server(test_settings());
    let mut a = server.waiting_client(find_text()).await;
    a.send(json!({"type":"leave"})).await;
    // The matchmaker takes the leave before anyone else arrives.
    server
        .stats_until("the queue is empty", |s| s["waiting"] == 0)
        .await;
    let mut b = server.waiting_client(find_text()).await;
    b.expect_nothing(std::time::Duration::from_millis(200))
        .await;
    a.expect_nothing(std::time::Duration::from_millis(10)).await;
}

async fn a_close_frame_ends_the_chat_at_once() {
    let server = spawn_server(test_settings());
    let (a, mut b) = server.matched_pair().await;
    a.close().await;
    let ended = b.expect("ended").await;
    assert_eq!(ended["reason"], "stranger_left");
}

async fn a_dropped_connection_makes_the_stranger_wait_then_lose_it() {
    let server = spawn_server(test_settings());
    let (a, mut b) = server.matched_pair().await;
    a.drop_connection();
    b.expect("stranger_away").await;
    // The grace is 0.5 s in the test settings.
    assert_eq!(b.expect("ended").await["reason"], "stranger_lost");
}

on_one_node_and_on_three!(
    hello_describes_a_fresh_session_and_its_limits,
    two_clients_match_and_chat_with_echoes_carrying_the_same_seq,
    a_stranger_without_a_nick_is_shown_as_null,
    typing_and_signal_are_relayed_without_seq_and_not_echoed,
    media_goes_across_with_its_kind_and_mime,
    leave_ends_the_chat_for_both_and_leaves_the_leaver_idle,
    next_ends_the_chat_and_queues_again_at_once,
    report_ends_the_chat_with_reasons_for_each_side,
    leave_while_waiting_takes_the_session_out_of_the_queue,
    a_close_frame_ends_the_chat_at_once,
    a_dropped_connection_makes_the_stranger_wait_then_lose_it,
);
