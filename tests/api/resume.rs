//! Resume: a dropped client comes back within the grace and gets exactly what it missed.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

async fn resume_within_grace_replays_exactly_the_missed_events() {
    let server = spawn_server(long_grace());
    let (mut a, mut b) = server.matched_pair().await;
    a.say("before the drop").await;
    a.expect("msg").await;
    b.expect("msg").await;
    let (token, last_seq) = (a.token(), a.last_seq);
    assert_eq!(last_seq, 2);
    a.drop_connection();
    b.expect("stranger_away").await;

    // Typing while away is not logged and not replayed. It goes first: the echoes of the
    // messages after it show the chat handled it while A was still away.
    b.send(json!({"type":"typing","active":true})).await;
    for text in ["missed one", "missed two", "missed three"] {
        b.say(text).await;
        b.expect("msg").await;
    }

    let mut a = Client::resume(&server, &token, last_seq).await;
    assert_eq!(a.hello["resumed"], true);
    assert_eq!(a.hello["state"], "chatting");
    assert_eq!(a.token(), token);
    let mut replayed = Vec::new();
    for _ in 0..3 {
        let frame = a.expect("msg").await;
        assert_eq!(frame["from"], "stranger");
        replayed.push((
            frame["seq"].as_u64().unwrap(),
            frame["text"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(
        replayed,
        vec![
            (3, "missed one".to_owned()),
            (4, "missed two".to_owned()),
            (5, "missed three".to_owned())
        ]
    );
    b.expect("stranger_back").await;

    // The chat carries on live, with no gap and nothing doubled.
    a.say("I'm back").await;
    assert_eq!(a.expect("msg").await["seq"], 6);
    assert_eq!(b.expect("msg").await["seq"], 6);
    a.expect_nothing(Duration::from_millis(100)).await;
}

async fn resume_replays_own_echoes_the_client_never_saw() {
    let server = spawn_server(long_grace());
    let (mut a, mut b) = server.matched_pair().await;
    let token = a.token();
    a.say("sent just before the drop").await;
    b.expect("msg").await;
    // The client drops before reading its echo; it resumes from seq 1 (matched).
    a.drop_connection();
    let mut a = Client::resume(&server, &token, 1).await;
    let echo = a.expect("msg").await;
    assert_eq!(
        (echo["seq"].as_u64(), echo["from"].as_str()),
        (Some(2), Some("you"))
    );
}

async fn resume_from_zero_replays_the_whole_log_including_matched() {
    let server = spawn_server(long_grace());
    let (mut a, mut b) = server.matched_pair().await;
    b.say("one").await;
    a.expect("msg").await;
    let token = a.token();
    a.drop_connection();
    let mut a = Client::resume(&server, &token, 0).await;
    assert_eq!(a.expect("matched").await["seq"], 1);
    assert_eq!(a.expect("msg").await["seq"], 2);
}

async fn a_client_that_was_away_when_the_chat_ended_learns_why_on_resume() {
    let server = spawn_server(long_grace());
    let (a, mut b) = server.matched_pair().await;
    let token = a.token();
    a.drop_connection();
    b.expect("stranger_away").await;
    b.send(json!({"type":"leave"})).await;
    b.expect("ended").await;
    let mut a = Client::resume(&server, &token, 1).await;
    assert_eq!(a.hello["state"], "idle");
    assert_eq!(a.expect("ended").await["reason"], "stranger_left");
}

async fn a_resume_takes_over_a_connection_not_yet_noticed_dead() {
    let server = spawn_server(long_grace());
    let (mut a, mut b) = server.matched_pair().await;
    let token = a.token();
    let mut a2 = Client::resume(&server, &token, 1).await;
    assert_eq!(a2.hello["resumed"], true);
    a.expect_close(4001).await;
    b.say("to the new connection").await;
    assert_eq!(a2.expect("msg").await["text"], "to the new connection");
}

async fn a_waiting_session_keeps_its_place_in_the_queue_while_away() {
    let server = spawn_server(long_grace());
    let a = server.waiting_client(find_text()).await;
    let token = a.token();
    a.drop_connection();
    // The server notices a dropped socket on its own; nothing it exposes says when, so give it
    // a moment of real time (a resume before it noticed is a takeover, tested elsewhere).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut b = server.waiting_client(find_text()).await;
    b.expect("matched").await;
    b.expect("stranger_away").await;
    let mut a = Client::resume(&server, &token, 0).await;
    assert_eq!(a.hello["state"], "chatting");
    assert_eq!(a.expect("matched").await["seq"], 1);
    b.expect("stranger_back").await;
}

async fn resume_after_the_grace_gets_a_fresh_session() {
    let server = spawn_server(test_settings());
    let (a, mut b) = server.matched_pair().await;
    let token = a.token();
    a.drop_connection();
    b.expect("stranger_away").await;
    assert_eq!(b.expect("ended").await["reason"], "stranger_lost");
    let a = Client::resume(&server, &token, 2).await;
    assert_eq!(a.hello["resumed"], false);
    assert_eq!(a.hello["state"], "idle");
    assert_ne!(a.token(), token);
}

async fn an_unknown_or_malformed_token_gets_a_fresh_session() {
    let server = spawn_server(test_settings());
    for token in ["AAAAAAAAAAAAAAAAAAAAAA", "not-a-token", "%00%01"] {
        let client = Client::resume(&server, token, 5).await;
        assert_eq!(client.hello["resumed"], false);
        assert_ne!(client.token(), token);
    }
}

async fn a_query_that_does_not_parse_gets_a_fresh_session_not_an_http_error() {
    let server = spawn_server(long_grace());
    let a = server.waiting_client(find_text()).await;
    let token = a.token();
    for query in [
        format!("resume={token}&last_seq=-9"),
        format!("resume={token}&last_seq=lots"),
        format!("resume={token}&last_seq=18446744073709551616"),
        "resume=%FF%FE&last_seq=1".to_owned(),
        format!("resume={token}&chat=not-a-chat-id&last_seq=1"),
        "last_seq=3&last_seq=4".to_owned(),
    ] {
        let client = Client::connect(&format!("{}?{query}", server.ws_url())).await;
        assert_eq!(client.hello["resumed"], false, "{query}");
        assert_ne!(client.token(), token, "{query}");
    }
    drop(a);
}

async fn a_resume_frame_resumes_over_a_plain_connection_so_the_token_is_in_no_url() {
    let server = spawn_server(long_grace());
    let (a, mut b) = server.matched_pair().await;
    let chat = a.matched_chat();
    let token = a.token();
    a.drop_connection();
    b.expect("stranger_away").await;
    b.say("missed").await;
    b.expect("msg").await;
    let mut a = Client::resume_by_frame(&server, &token, Some(&chat), 1).await;
    assert_eq!(a.hello["resumed"], true);
    assert_eq!(a.hello["state"], "chatting");
    assert_eq!(a.token(), token);
    assert_eq!(a.expect("msg").await["text"], "missed");
    b.expect("stranger_back").await;
    let stats = server
        .stats_until("the doorway session is gone", |s| s["online"] == 2)
        .await;
    assert_eq!(stats["chatting"], 2);
}

async fn naming_the_old_chat_in_the_query_brings_its_end_and_the_new_chat_from_its_start() {
    let server = spawn_server(long_grace());
    let (mut a, mut b) = server.matched_pair().await;
    let old_chat = a.matched_chat();
    let token = a.token();
    a.send(json!({"type":"next"})).await;
    a.drop_connection();
    assert_eq!(b.expect("ended").await["reason"], "stranger_left");
    let mut c = server.waiting_client(find_text()).await;
    let new_chat = c.expect("matched").await["chat"].clone();
    c.expect("stranger_away").await;
    c.say("welcome").await;
    c.expect("msg").await;

    let url = format!(
        "{}?resume={token}&chat={old_chat}&last_seq=1",
        server.ws_url()
    );
    let mut a = Client::connect(&url).await;
    assert_eq!(a.hello["resumed"], true);
    let ended = a.expect("ended").await;
    assert_eq!(
        (ended["seq"].as_u64(), ended["reason"].as_str()),
        (Some(2), Some("you_left"))
    );
    let matched = a.expect("matched").await;
    assert_eq!(matched["chat"], new_chat);
    assert_eq!(a.expect("msg").await["text"], "welcome");
    c.expect("stranger_back").await;
}

async fn a_message_whose_echo_was_lost_in_a_drop_is_resent_and_delivered_exactly_once() {
    let server = spawn_server(long_grace());
    let (mut a, mut b) = server.matched_pair().await;
    let chat = a.matched_chat();
    let token = a.token();
    a.send(json!({"type":"msg","text":"just before the cut","id":"line-7"}))
        .await;
    // The stranger has it: the server logged it. The sender drops before its echo is read.
    assert_eq!(b.expect("msg").await["text"], "just before the cut");
    a.drop_connection();
    b.expect("stranger_away").await;

    // The page resends every unconfirmed line with its id right after the second hello.
    let mut a = Client::resume_by_frame(&server, &token, Some(&chat), 1).await;
    a.send(json!({"type":"msg","text":"just before the cut","id":"line-7"}))
        .await;
    let replayed = a.expect("msg").await;
    let answer = a.expect("msg").await;
    assert_eq!(
        replayed, answer,
        "the replayed echo and the answer to the resend are one"
    );
    assert_eq!(
        (answer["seq"].as_u64(), answer["id"].as_str()),
        (Some(2), Some("line-7"))
    );
    b.expect("stranger_back").await;
    b.expect_nothing(Duration::from_millis(200)).await;
}

on_one_node_and_on_three!(
    resume_within_grace_replays_exactly_the_missed_events,
    resume_replays_own_echoes_the_client_never_saw,
    resume_from_zero_replays_the_whole_log_including_matched,
    a_client_that_was_away_when_the_chat_ended_learns_why_on_resume,
    a_resume_takes_over_a_connection_not_yet_noticed_dead,
    a_waiting_session_keeps_its_place_in_the_queue_while_away,
    resume_after_the_grace_gets_a_fresh_session,
    an_unknown_or_malformed_token_gets_a_fresh_session,
    a_query_that_does_not_parse_gets_a_fresh_session_not_an_http_error,
    a_resume_frame_resumes_over_a_plain_connection_so_the_token_is_in_no_url,
    naming_the_old_chat_in_the_query_brings_its_end_and_the_new_chat_from_its_start,
    a_message_whose_echo_was_lost_in_a_drop_is_resent_and_delivered_exactly_once,
);
