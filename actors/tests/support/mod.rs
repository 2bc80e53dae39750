//! A client of the actors without sockets, for the tests in this folder: frames go in
//! through a channel, what the client would receive comes out of a channel sink.
#![allow(dead_code)] // Each test file uses its own part.

use std::net::IpAddr;

use ephemera_actors::connection::ClientFrame;
use ephemera_actors::hub::InProcessClient;
use ephemera_actors::Hub;
use serde_json::{json, Value};

pub const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

pub struct TestClient {
    pub connection: InProcessClient,
    /// The `hello` the connection began with.
    pub hello: Value,
}

impl TestClient {
    pub async fn connect(hub: &std::sync::Arc<Hub>) -> TestClient {
        Self::connect_from(hub, LOOPBACK).await
    }

    /// Connects as the client at `ip` (distinct addresses are distinct clients).
    pub async fn connect_from(hub: &std::sync::Arc<Hub>, ip: IpAddr) -> TestClient {
        let mut client = TestClient {
            connection: hub.connect_in_process(ip, 64).await,
            hello: Value::Null,
        };
        client.hello = client.next().await;
        assert_eq!(client.hello["type"], "hello");
        client
    }

    pub async fn send(&self, frame: Value) {
        self.connection.send_text(&frame.to_string()).await;
    }

    /// The next text frame; lets the actors run until one is there.
    pub async fn next(&mut self) -> Value {
        let text = self
            .connection
            .next_text(10_000)
            .await
            .expect("a frame arrives");
        serde_json::from_str(&text).unwrap()
    }

    /// Lets the actors run a while and checks nothing was sent.
    pub async fn nothing(&mut self) {
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        assert!(
            self.connection.out.is_empty(),
            "unexpected frame: {:?}",
            self.connection.out.try_recv()
        );
    }

    pub async fn find(&mut self, interests: &[&str]) {
        self.send(json!({"type":"find","adult":true,"interests":interests}))
            .await;
        assert_eq!(self.next().await["type"], "waiting");
    }
}

impl TestClient {
    /// The whole `hello` the connection began with is read by `connect`; this reads the next
    /// text frame and checks its type.
    pub async fn expect(&mut self, frame_type: &str) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["type"], frame_type, "unexpected {frame}");
        frame
    }

    /// The connection drops without a close frame.
    pub async fn drop_connection(&self) {
        self.connection
            .frames
            .send(ClientFrame::Dropped)
            .await
            .unwrap();
    }

    pub async fn say(&self, text: &str) {
        self.send(json!({"type":"msg","text":text})).await;
    }
}
