//! Helpers for the actors' own unit tests: in-process clients that speak JSON.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::hub::InProcessClient;
use crate::{ChatConfig, Hub};

pub fn hub() -> Arc<Hub> {
    Hub::start(ChatConfig::unlimited())
}

pub async fn client(hub: &Arc<Hub>, last_octet: u8) -> InProcessClient {
    client_with_hello(hub, last_octet).await.0
}

/// A client from 127.0.8.`last_octet`, and the `hello` it was greeted with.
pub async fn client_with_hello(hub: &Arc<Hub>, last_octet: u8) -> (InProcessClient, Value) {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 8, last_octet));
    let client = hub.connect_in_process(ip, 64).await;
    let hello = expect(&client, "hello").await;
    (client, hello)
}

pub async fn next(client: &InProcessClient) -> Value {
    let text = client.next_text(10_000).await.expect("a frame arrives");
    serde_json::from_str(&text).expect("frames are JSON")
}

pub async fn expect(client: &InProcessClient, frame_type: &str) -> Value {
    let frame = next(client).await;
    assert_eq!(frame["type"], frame_type, "unexpected {frame}");
    frame
}

pub async fn send(client: &InProcessClient, frame: Value) {
    client.send_text(&frame.to_string()).await;
}

/// Two clients in one chat, both past `matched`.
pub async fn matched(hub: &Arc<Hub>, mode: &str) -> (InProcessClient, InProcessClient) {
    let (a, b) = (client(hub, 1).await, client(hub, 2).await);
    for member in [&a, &b] {
        send(member, json!({"type":"find","adult":true,"mode":mode})).await;
        expect(member, "waiting").await;
    }
    expect(&a, "matched").await;
    expect(&b, "matched").await;
    (a, b)
}

/// Reads past text frames until the connection's close frame; returns its code.
pub async fn closed_with(client: &InProcessClient) -> Option<u16> {
    for _ in 0..10_000 {
        match client.out.try_recv() {
            Some(crate::connection::Outgoing::Close { code, .. }) => return Some(code),
            Some(_) => {}
            None => tokio::task::yield_now().await,
        }
    }
    None
}
