//! Video chats: the ICE servers each hello carries, TURN credentials minted per session by the
//! TURN REST scheme, and relay-only mode. (The browser tests run a real call through coturn.)

use std::time::{SystemTime, UNIX_EPOCH};

use ephemera::settings::{Overrides, Settings};
use ephemera_actors::ice::turn_rest_password;

use crate::helpers::*;

fn turn_settings() -> Settings {
    Settings {
        ice_urls: vec!["stun:127.0.0.1:3478".into()],
        turn_urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
        turn_shared_secret: "test-secret".into(),
        turn_credential_ttl_seconds: 120.0,
        relay_only: true,
        ..test_settings()
    }
}

#[tokio::test]
async fn hello_carries_stun_as_configured_and_turn_with_fresh_expiring_credentials() {
    let server = spawn_server(turn_settings());
    let first = server.client().await;
    let second = server.client().await;
    assert_eq!(first.hello["relay_only"], true);

    let servers = first.hello["ice_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0]["urls"][0], "stun:127.0.0.1:3478");
    assert!(servers[0].get("username").is_none());
    assert_eq!(servers[1]["urls"][0], "turn:127.0.0.1:3478?transport=udp");
    let username = servers[1]["username"].as_str().unwrap();
    let credential = servers[1]["credential"].as_str().unwrap();
    assert_eq!(credential, turn_rest_password(b"test-secret", username));

    let expiry: u64 = username.split(':').next().unwrap().parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 115..=now + 125).contains(&expiry),
        "expiry {expiry}, now {now}"
    );
    assert!(
        !username.contains(&first.token()),
        "the username must not name the session"
    );
    let other = second.hello["ice_servers"][1]["username"].as_str().unwrap();
    assert_ne!(username, other, "each session gets its own credential");
}

#[tokio::test]
async fn without_turn_hello_offers_no_relay_and_no_credentials() {
    let server = spawn_server(test_settings());
    let client = server.client().await;
    assert_eq!(client.hello["relay_only"], false);
    assert_eq!(client.hello["ice_servers"], serde_json::json!([]));
}

#[tokio::test]
async fn the_privacy_page_says_calls_are_relayed_in_relay_only_mode() {
    let server = spawn_server(turn_settings());
    let (status, body) = server.get("/privacy").await;
    assert_eq!(status, 200);
    assert!(body.contains("never learns your network address"), "{body}");
    assert!(!body.contains("test-secret"));
}

#[test]
fn relay_only_needs_a_turn_server_and_turn_needs_its_secret() {
    let relay_without_turn = Overrides {
        relay_only: Some(true),
        ..Default::default()
    };
    assert!(Settings::load(&relay_without_turn).is_err());
    let turn_without_secret = Overrides {
        turn_urls: Some(vec!["turn:127.0.0.1:3478".into()]),
        ..Default::default()
    };
    assert!(Settings::load(&turn_without_secret).is_err());
    let complete = Overrides {
        turn_urls: Some(vec!["turn:127.0.0.1:3478".into()]),
        turn_shared_secret: Some("s".into()),
        relay_only: Some(true),
        ..Default::default()
    };
    assert!(Settings::load(&complete).unwrap().relay_only);
}
