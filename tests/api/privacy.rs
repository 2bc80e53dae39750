//! Client keys: sessions per client are bounded, the server shows a client what it holds about
//! it, and forwarded addresses are believed only from trusted proxies.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;
use ephemera::settings::Settings;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

async fn privacy_me(server: &TestServer, from: &str, headers: &str) -> Value {
    let (status, _, body) = http_request(server.addr, ip(from), "/api/privacy/me", headers).await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn one_client_may_hold_only_so_many_sessions_and_others_are_unaffected() {
    let server = spawn_server(Settings {
        max_sessions_per_client: 2,
        ..test_settings()
    });
    let _one = Client::connect_from(server.addr, ip("127.10.0.1")).await;
    let two = Client::connect_from(server.addr, ip("127.10.0.1")).await;
    let mut third = Client::connect_from_ungreeted(server.addr, ip("127.10.0.1")).await;
    let refusal = third.expect_error("rate_limited").await;
    assert!(refusal["retry_after_ms"].as_u64().unwrap() > 0);
    third.expect_close(1013).await;
    // Another address is its own client.
    let other = Client::connect_from(server.addr, ip("127.10.0.2")).await;
    assert_eq!(other.hello["type"], "hello");
    // A closed session frees its place.
    two.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while privacy_me(&server, "127.10.0.1", "").await["open_sessions"] != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Client::connect_from(server.addr, ip("127.10.0.1")).await;
}

#[tokio::test]
async fn privacy_me_shows_the_caller_what_is_held_about_it_and_nothing_else() {
    let server = spawn_server(test_settings());
    let _a = Client::connect_from(server.addr, ip("127.20.0.1")).await;
    let _b = Client::connect_from(server.addr, ip("127.20.0.1")).await;
    let _c = Client::connect_from(server.addr, ip("127.20.0.2")).await;
    let mine = privacy_me(&server, "127.20.0.1", "").await;
    assert_eq!(mine["open_sessions"], 2);
    let prefix = mine["client_key_prefix"].as_str().unwrap();
    assert_eq!(prefix.len(), 8);
    assert!(prefix.bytes().all(|b| b.is_ascii_hexdigit()));
    let theirs = privacy_me(&server, "127.20.0.2", "").await;
    assert_eq!(theirs["open_sessions"], 1);
    assert_ne!(theirs["client_key_prefix"], mine["client_key_prefix"]);
    let nobody = privacy_me(&server, "127.20.0.3", "").await;
    assert_eq!(nobody["open_sessions"], 0);
    // The response holds no address in any form.
    let text = mine.to_string();
    assert!(!text.contains("127.20.0.1") && !text.contains("7f140001"));
}

#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let server = spawn_server(Settings {
        trusted_proxies: vec!["127.30.0.0/24".to_owned()],
        ..test_settings()
    });
    let direct = privacy_me(&server, "127.40.0.9", "").await;
    let via_proxy = privacy_me(
        &server,
        "127.30.0.1",
        "X-Forwarded-For: 127.66.0.1, 127.40.0.9, 127.30.0.5\r\n",
    )
    .await;
    assert_eq!(
        via_proxy["client_key_prefix"], direct["client_key_prefix"],
        "the nearest untrusted hop is the client"
    );
    let other_header = privacy_me(
        &server,
        "127.30.0.1",
        "Forwarded: for=\"127.40.0.9:5555\";proto=http\r\n",
    )
    .await;
    assert_ne!(
        other_header["client_key_prefix"], direct["client_key_prefix"],
        "only the configured header (x-forwarded-for by default) is believed"
    );
    let standard_server = spawn_server(Settings {
        trusted_proxies: vec!["127.30.0.0/24".to_owned()],
        client_address_header: ephemera::settings::AddressHeader::Forwarded,
        ..test_settings()
    });
    let direct_to_standard = privacy_me(&standard_server, "127.40.0.9", "").await;
    let standard = privacy_me(
        &standard_server,
        "127.30.0.1",
        "X-Forwarded-For: 127.41.0.1\r\nForwarded: for=\"127.40.0.9:5555\";proto=http\r\n",
    )
    .await;
    assert_eq!(
        standard["client_key_prefix"],
        direct_to_standard["client_key_prefix"]
    );
    // An untrusted peer cannot pretend to be someone else.
    let spoofed = privacy_me(&server, "127.50.0.1", "X-Forwarded-For: 127.40.0.9\r\n").await;
    let itself = privacy_me(&server, "127.50.0.1", "").await;
    assert_eq!(spoofed["client_key_prefix"], itself["client_key_prefix"]);
    assert_ne!(spoofed["client_key_prefix"], direct["client_key_prefix"]);
}

/// `target` and `reporter` meet (each from its own address) and the reporter reports.
async fn report(server: &TestServer, target: &mut Client, reporter_ip: &str) {
    target.send(find_text()).await;
    target.expect("waiting").await;
    let mut reporter = Client::connect_from(server.addr, ip(reporter_ip)).await;
    reporter.send(find_text()).await;
    reporter.expect("waiting").await;
    target.expect("matched").await;
    reporter.expect("matched").await;
    reporter
        .send(serde_json::json!({"type":"report","reason":"harassment"}))
        .await;
    assert_eq!(reporter.expect("ended").await["reason"], "you_reported");
    assert_eq!(target.expect("ended").await["reason"], "stranger_left");
}

fn ban_settings() -> Settings {
    Settings {
        report_ban_threshold: 2,
        rematch_cooldown_seconds: 0.0,
        ..test_settings()
    }
}

#[tokio::test]
async fn reports_from_distinct_strangers_ban_the_reported_client() {
    let server = spawn_server(ban_settings());
    let mut target = Client::connect_from(server.addr, ip("127.80.0.9")).await;
    report(&server, &mut target, "127.80.0.1").await;
    let standing = privacy_me(&server, "127.80.0.9", "").await;
    assert_eq!(standing["abuse"]["reports_in_window"], 1);
    assert!(standing["abuse"]["banned_for_ms"].is_null());
    report(&server, &mut target, "127.80.0.2").await;

    target.send(find_text()).await;
    let refusal = target.expect_error("banned").await;
    let left = refusal["retry_after_ms"].as_u64().unwrap();
    assert!(
        left > 590_000 && left <= 600_000,
        "the first ban lasts ban_first_seconds"
    );
    // A new connection from the same network is banned too.
    let mut again = Client::connect_from(server.addr, ip("127.80.0.9")).await;
    again.send(find_text()).await;
    again.expect_error("banned").await;
    let standing = privacy_me(&server, "127.80.0.9", "").await;
    assert_eq!(standing["abuse"]["bans_so_far"], 1);
    assert!(standing["abuse"]["banned_for_ms"].as_u64().unwrap() > 0);
    // The reporters are not affected.
    let mut reporter = Client::connect_from(server.addr, ip("127.80.0.1")).await;
    reporter.send(find_text()).await;
    reporter.expect("waiting").await;
}

/// In a cluster the reported member's node knows its client: reports made in chats run on
/// other nodes count there, and ban it there.
#[tokio::test]
async fn reports_made_on_other_nodes_count_where_the_reported_client_is() {
    on_three_nodes(async {
        let server = spawn_server(ban_settings());
        let nodes = &server.cluster().nodes;
        let mut target = Client::connect_from(nodes[0].addr, ip("127.84.0.9")).await;
        // Three reporters from two nodes: more reporters than nodes, so more than one address.
        let reporters = [(1, "127.84.0.1"), (2, "127.84.0.2"), (1, "127.84.0.3")];
        for (node, reporter_ip) in reporters {
            target.send(find_text()).await;
            target.expect("waiting").await;
            let mut reporter = Client::connect_from(nodes[node].addr, ip(reporter_ip)).await;
            reporter.send(find_text()).await;
            reporter.expect("waiting").await;
            target.expect("matched").await;
            reporter.expect("matched").await;
            reporter
                .send(serde_json::json!({"type":"report","reason":"spam"}))
                .await;
            assert_eq!(reporter.expect("ended").await["reason"], "you_reported");
            assert_eq!(target.expect("ended").await["reason"], "stranger_left");
        }
        // Both chats ran on the reporters' nodes; the reports counted on the target's.
        let standing = privacy_me(&nodes[0], "127.84.0.9", "").await;
        assert_eq!(standing["abuse"]["bans_so_far"], 1, "{standing}");
        target.send(find_text()).await;
        target.expect_error("banned").await;
        for reporter_node in &nodes[1..] {
            let standing = privacy_me(reporter_node, "127.84.0.9", "").await;
            assert_eq!(standing["abuse"]["reports_in_window"], 0, "{standing}");
        }
    })
    .await
}

/// Reads frames until one of `frame_type` (a stranger's away and back may come first).
async fn until(client: &mut Client, frame_type: &str) -> Value {
    let mut skipped = Vec::new();
    loop {
        let Some(Ok(frame)) = client.next_frame(EXPECT_WITHIN).await else {
            panic!("no {frame_type} after {skipped:?}");
        };
        if frame["type"] == frame_type {
            return frame;
        }
        skipped.push(frame);
    }
}

/// `first` waits (on its node) until Redis has it, then `joiner` finds: the chat runs on the
/// joiner's node, with `first` a member from another node.
async fn meet_across(server: &TestServer, first: &mut Client, joiner: &mut Client) {
    first.send(find_text()).await;
    first.expect("waiting").await;
    let deadline = tokio::time::Instant::now() + EXPECT_WITHIN;
    while redis_keys(server.cluster().redis_port, "eph:w:*").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never queued in Redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    joiner.send(find_text()).await;
    joiner.expect("waiting").await;
    first.expect("matched").await;
    joiner.expect("matched").await;
}

/// A new session from `reporter_ip` on `node` waits, meets `target` (the chat runs on the
/// target's node), and reports it; returns the target's `ended`.
async fn report_from_node(
    server: &TestServer,
    node: usize,
    reporter_ip: &str,
    target: &mut Client,
) -> Value {
    let node = server.cluster().nodes[node].addr;
    let mut reporter = Client::connect_from(node, ip(reporter_ip)).await;
    meet_across(server, &mut reporter, target).await;
    reporter
        .send(serde_json::json!({"type":"report","reason":"spam"}))
        .await;
    let ended = until(target, "ended").await;
    reporter.close().await;
    ended
}

/// A reporter that is the remote member of the chat, with a new session each time, is still
/// one reporter: its node names its client, not its session.
#[tokio::test]
async fn one_reporter_on_another_node_cannot_ban_anyone_alone() {
    on_three_nodes(async {
        let server = spawn_server(ban_settings());
        let nodes = &server.cluster().nodes;
        let mut target = Client::connect_from(nodes[0].addr, ip("127.85.0.9")).await;
        for _ in 0..3 {
            let ended = report_from_node(&server, 1, "127.85.0.1", &mut target).await;
            assert_eq!(ended["reason"], "stranger_left");
        }
        let standing = privacy_me(&nodes[0], "127.85.0.9", "").await;
        assert_eq!(standing["abuse"]["reports_in_window"], 1, "{standing}");
        assert!(standing["abuse"]["banned_for_ms"].is_null(), "{standing}");
    })
    .await
}

/// One address reporting once from each node is one key on each node, so three reporters:
/// as many as the nodes they come from, which is never enough for a ban.
#[tokio::test]
async fn one_address_reporting_from_every_node_cannot_ban_alone() {
    on_three_nodes(async {
        let server = spawn_server(ban_settings());
        let nodes = &server.cluster().nodes;
        let mut target = Client::connect_from(nodes[0].addr, ip("127.87.0.9")).await;
        for node in [1, 2, 0] {
            report_from_node(&server, node, "127.87.0.1", &mut target).await;
        }
        let standing = privacy_me(&nodes[0], "127.87.0.9", "").await;
        assert_eq!(standing["abuse"]["reports_in_window"], 3, "{standing}");
        assert!(standing["abuse"]["banned_for_ms"].is_null(), "{standing}");
    })
    .await
}

/// A member that moves onto its chat's node is reported there against its real client.
#[tokio::test]
async fn a_member_that_moved_is_reported_against_its_own_client() {
    on_three_nodes(async {
        let server = spawn_server(Settings {
            resume_grace_seconds: 5.0,
            ..ban_settings()
        });
        let nodes = &server.cluster().nodes;
        let mut abuser = Client::connect_from(nodes[1].addr, ip("127.86.0.9")).await;
        for reporter_ip in ["127.86.0.1", "127.86.0.2"] {
            let mut reporter = Client::connect_from(nodes[0].addr, ip(reporter_ip)).await;
            meet_across(&server, &mut abuser, &mut reporter).await;
            // The abuser's session moves to node 0, where the chat runs.
            // It saw this chat's `matched` (seq 1), no more.
            let (token, chat) = (abuser.token(), abuser.matched_chat());
            abuser.drop_connection();
            let url = format!("/ws?resume={token}&chat={chat}&last_seq=1");
            abuser = Client::connect_from_path(nodes[0].addr, ip("127.86.0.9"), &url).await;
            assert_eq!(abuser.hello["resumed"], true, "{}", abuser.hello);
            reporter
                .send(serde_json::json!({"type":"report","reason":"harassment"}))
                .await;
            assert_eq!(
                until(&mut reporter, "ended").await["reason"],
                "you_reported"
            );
            until(&mut abuser, "ended").await;
        }
        let standing = privacy_me(&nodes[0], "127.86.0.9", "").await;
        assert_eq!(standing["abuse"]["bans_so_far"], 1, "{standing}");
        abuser.send(find_text()).await;
        abuser.expect_error("banned").await;
    })
    .await
}

#[tokio::test]
async fn one_reporter_cannot_ban_anyone_alone() {
    let server = spawn_server(ban_settings());
    let mut target = Client::connect_from(server.addr, ip("127.81.0.9")).await;
    report(&server, &mut target, "127.81.0.1").await;
    report(&server, &mut target, "127.81.0.1").await;
    target.send(find_text()).await;
    target.expect("waiting").await;
    let standing = privacy_me(&server, "127.81.0.9", "").await;
    assert_eq!(
        standing["abuse"]["reports_in_window"], 1,
        "one key's reports count once"
    );
}

/// Waits, polling /api/privacy/me, until the salt behind `from`'s client key has rotated.
async fn after_a_salt_rotation(server: &TestServer, from: &str) {
    let before = privacy_me(server, from, "").await["client_key_prefix"].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Polling stands in for a clock the test cannot move: the salt rotates on the purge
    // timer, on real time, after the short configured period.
    while privacy_me(server, from, "").await["client_key_prefix"] == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the salt never rotated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_ban_reaches_the_clients_sessions_made_under_an_older_salt() {
    let server = spawn_server(Settings {
        salt_rotation_seconds: 0.4,
        ..ban_settings()
    });
    let mut older = Client::connect_from(server.addr, ip("127.82.0.9")).await;
    after_a_salt_rotation(&server, "127.82.0.9").await;
    // The same network connects again under the new salt and is reported there.
    let mut newer = Client::connect_from(server.addr, ip("127.82.0.9")).await;
    report(&server, &mut newer, "127.82.0.1").await;
    report(&server, &mut newer, "127.82.0.2").await;
    older.send(find_text()).await;
    older.expect_error("banned").await;
}

#[tokio::test]
async fn the_session_bound_holds_across_salt_rotations() {
    let server = spawn_server(Settings {
        salt_rotation_seconds: 0.3,
        max_sessions_per_client: 2,
        ..test_settings()
    });
    let _first = Client::connect_from(server.addr, ip("127.83.0.9")).await;
    after_a_salt_rotation(&server, "127.83.0.9").await;
    after_a_salt_rotation(&server, "127.83.0.9").await;
    let _second = Client::connect_from(server.addr, ip("127.83.0.9")).await;
    let mut third = Client::connect_from_ungreeted(server.addr, ip("127.83.0.9")).await;
    third.expect_error("rate_limited").await;
    assert_eq!(
        privacy_me(&server, "127.83.0.9", "").await["open_sessions"],
        2
    );
}
