//! Shared test helpers: `spawn_server` runs the real server on its own actix system thread,
//! and `Client` is a real WebSocket client speaking protocol v1.

use std::net::SocketAddr;
use std::time::Duration;

use ephemera::settings::Settings;
use ephemera::startup::Server;
pub use futures_util::SinkExt as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame it expects before failing.
pub const EXPECT_WITHIN: Duration = Duration::from_secs(10);

/// Settings with short durations, so tests that wait on time take a fraction of a second.
pub fn test_settings() -> Settings {
    Settings {
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        heartbeat_interval_seconds: 5.0,
        client_timeout_seconds: 30.0,
        resume_grace_seconds: 0.5,
        interest_timeout_seconds: 0.5,
        purge_interval_seconds: 0.05,
        shutdown_drain_seconds: 5.0,
        workers: 2,
        // Every test client comes from loopback; the per-client bound has tests of its own.
        max_sessions_per_client: 100_000,
        // Rate limits are lifted (the bench profile) except in their own tests.
        max_connections_per_minute: 0,
        max_finds_per_minute: 0,
        max_messages_per_second: 0,
        max_media_per_minute: 0,
        pow_auto_threshold_per_second: 0.0,
        ..Settings::default()
    }
}

pub struct TestServer {
    /// Where clients connect: the server, or the load balancer in front of a cluster.
    pub addr: SocketAddr,
    /// The admin listener (/metrics); a cluster's first node's.
    pub metrics_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<()>>,
    /// Set when `addr` is HAProxy in front of three nodes (`on_three_nodes`).
    cluster: Option<TestCluster>,
}

/// Three nodes on one Redis behind HAProxy running ops/haproxy.cfg. Fields drop in order: the
/// proxy, then the nodes, then Redis, so no node is left talking to a Redis that is gone.
pub struct TestCluster {
    _proxy: KillOnDrop,
    pub nodes: Vec<TestServer>,
    _redis: KillOnDrop,
    pub redis_port: u16,
}

/// The cluster secret of every test cluster.
pub const CLUSTER_SECRET: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

tokio::task_local! {
    /// Set while a test runs through `on_three_nodes`: `spawn_server` then starts a cluster.
    static THREE_NODES: ();
}

/// Runs `test` with every `spawn_server` in it starting three nodes on one real Redis behind
/// a real HAProxy (`ops/haproxy.cfg`), reached round-robin: so the core protocol tests hold
/// across nodes as they do on one.
pub async fn on_three_nodes<F: std::future::Future>(test: F) -> F::Output {
    THREE_NODES.scope((), test).await
}

/// Declares each named test (a plain `async fn` of the module) twice: `on_one_node::<name>`
/// against one server and `on_three_nodes::<name>` against a cluster of three.
macro_rules! on_one_node_and_on_three {
    ($($test:ident),* $(,)?) => {
        mod on_one_node {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test().await
                }
            )*
        }
        mod on_three_nodes {
            $(
                #[tokio::test]
                async fn $test() {
                    crate::helpers::on_three_nodes(super::$test()).await
                }
            )*
        }
    };
}
pub(crate) use on_one_node_and_on_three;

/// Starts the real server with `settings` on a port of its own; inside `on_three_nodes`, a
/// cluster of three with these settings behind HAProxy.
pub fn spawn_server(settings: Settings) -> TestServer {
    if THREE_NODES.try_with(|_| ()).is_ok() {
        return spawn_cluster(settings);
    }
    spawn_node(settings)
}

fn spawn_cluster(settings: Settings) -> TestServer {
    let (redis, redis_port) = start_redis();
    let node_settings = Settings {
        cluster_redis_url: format!("redis://127.0.0.1:{redis_port}/"),
        cluster_secret: CLUSTER_SECRET.to_owned(),
        trusted_proxies: vec!["127.0.0.1".to_owned()],
        ..settings
    };
    let nodes: Vec<TestServer> = (0..3).map(|_| spawn_node(node_settings.clone())).collect();
    let addresses: Vec<SocketAddr> = nodes.iter().map(|node| node.addr).collect();
    let (proxy_child, proxy) = start_proxy(&addresses);
    wait_until_ready(proxy);
    TestServer {
        addr: proxy,
        metrics_addr: nodes[0].metrics_addr,
        shutdown: None,
        stopped: None,
        cluster: Some(TestCluster {
            _proxy: proxy_child,
            nodes,
            _redis: redis,
            redis_port,
        }),
    }
}

/// Waits (blocking: the servers run on threads of their own) until `addr` answers /readyz.
fn wait_until_ready(addr: SocketAddr) {
    use std::io::{Read as _, Write as _};
    let deadline = std::time::Instant::now() + EXPECT_WITHIN;
    loop {
        let answer = std::net::TcpStream::connect(addr).and_then(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(1)))?;
            stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        });
        if answer.is_ok_and(|answer| answer.starts_with("HTTP/1.1 200")) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{addr} never got ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs ops/haproxy.cfg in front of `nodes`, with this test's ports in place of the example's.
pub fn start_proxy(nodes: &[SocketAddr]) -> (KillOnDrop, SocketAddr) {
    let port = free_port();
    let mut config =
        repository_file("ops/haproxy.cfg").replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"));
    for (n, node) in nodes.iter().enumerate() {
        config = config.replace(&format!("127.0.0.1:808{}", n + 1), &node.to_string());
    }
    let path = std::env::temp_dir().join(format!(
        "ephemera-haproxy-{}-{port}.cfg",
        std::process::id()
    ));
    std::fs::write(&path, config).unwrap();
    let check = std::process::Command::new(system_binary("haproxy"))
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "ops/haproxy.cfg is valid: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = std::process::Command::new(system_binary("haproxy"))
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (KillOnDrop(child), SocketAddr::from(([127, 0, 0, 1], port)))
}

fn spawn_node(settings: Settings) -> TestServer {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (stopped_tx, stopped_rx) = oneshot::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let listener = std::net::TcpListener::bind(settings.listen_addr).unwrap();
            let (server, http) = Server::start_on(&settings, listener).await.unwrap();
            ready_tx
                .send((server.local_addr, server.metrics_addr))
                .unwrap();
            let http = actix_web::rt::spawn(http);
            if shutdown_rx.await.is_ok() {
                server.shutdown().await;
                let _ = http.await;
                let _ = stopped_tx.send(());
            }
        })
    });
    let (addr, metrics_addr) = ready_rx.recv_timeout(EXPECT_WITHIN).expect("server starts");
    TestServer {
        addr,
        metrics_addr,
        shutdown: Some(shutdown_tx),
        stopped: Some(stopped_rx),
        cluster: None,
    }
}

impl TestServer {
    /// Whether `addr` is a cluster's load balancer (the test runs `on_three_nodes`).
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The cluster behind `addr` (in a test run through `on_three_nodes`).
    pub fn cluster(&self) -> &TestCluster {
        self.cluster
            .as_ref()
            .expect("a cluster: the test runs on_three_nodes")
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Asks the server to shut down as on SIGTERM, and waits until it has stopped.
    pub async fn shutdown(&mut self) {
        if let Some(cluster) = &mut self.cluster {
            for node in &mut cluster.nodes {
                Box::pin(node.shutdown()).await;
            }
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(rx) = self.stopped.take() {
            tokio::time::timeout(EXPECT_WITHIN, rx)
                .await
                .expect("server stops within the drain time")
                .expect("server thread reports its stop");
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// A client with a `find` already answered by `waiting`.
    pub async fn waiting_client(&self, find: Value) -> Client {
        let mut client = self.client().await;
        client.send(find).await;
        client.expect("waiting").await;
        client
    }

    /// Two clients matched with each other in text mode.
    pub async fn matched_pair(&self) -> (Client, Client) {
        self.matched_pair_with(find_text()).await
    }

    /// Two clients matched after both sent `find`.
    pub async fn matched_pair_with(&self, find: Value) -> (Client, Client) {
        let mut a = self.waiting_client(find.clone()).await;
        let mut b = self.client().await;
        b.send(find).await;
        b.expect("waiting").await;
        a.expect("matched").await;
        b.expect("matched").await;
        (a, b)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    /// The Prometheus exposition, from the admin listener.
    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.metrics_addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until the server's /stats satisfy `done`: the server acts on its own threads, so
    /// a test waits on the fact it needs, not on a guessed sleep.
    /// A cluster's /stats are per node: this waits on their sum (see `summed_stats`).
    pub async fn stats_until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let Some(cluster) = &self.cluster else {
            return stats_until(self.addr, what, done).await;
        };
        poll_stats(what, done, || async {
            let mut each = Vec::new();
            for node in &cluster.nodes {
                each.push(stats_of(node.addr).await);
            }
            summed_stats(&each)
        })
        .await
    }
}

/// Two clients of the server at `addr`, from `a` and `b`, matched in a text chat: for servers
/// run from the binary, where there is no `TestServer`.
pub async fn matched_pair_at(
    addr: SocketAddr,
    a: std::net::IpAddr,
    b: std::net::IpAddr,
) -> (Client, Client) {
    let mut first = Client::connect_from(addr, a).await;
    let mut second = Client::connect_from(addr, b).await;
    first.send(find_text()).await;
    first.expect("waiting").await;
    second.send(find_text()).await;
    second.expect("waiting").await;
    first.expect("matched").await;
    second.expect("matched").await;
    (first, second)
}

/// Test settings with a resume grace long enough for a test to drop and come back.
pub fn long_grace() -> Settings {
    Settings {
        resume_grace_seconds: 5.0,
        ..test_settings()
    }
}

/// A `find` for text mode with the adult flag set.
pub fn find_text() -> Value {
    json!({"type": "find", "adult": true})
}

pub fn find_with(mode: &str, interests: &[&str]) -> Value {
    json!({"type": "find", "adult": true, "mode": mode, "interests": interests})
}

/// The nodes' /stats as one: numbers added up, anything else taken from the first node.
fn summed_stats(each: &[Value]) -> Value {
    match each.first() {
        Some(Value::Object(first)) => Value::Object(
            first
                .keys()
                .map(|key| {
                    let fields: Vec<Value> = each.iter().map(|stats| stats[key].clone()).collect();
                    (key.clone(), summed_stats(&fields))
                })
                .collect(),
        ),
        Some(Value::Number(_)) => json!(each.iter().filter_map(Value::as_u64).sum::<u64>()),
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

/// Polls /stats at `addr` until `done` holds (see `TestServer::stats_until`).
pub async fn stats_until(addr: SocketAddr, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    poll_stats(what, done, || stats_of(addr)).await
}

async fn stats_of(addr: SocketAddr) -> Value {
    let (_, body) = http_get(addr, "/stats").await;
    serde_json::from_str(&body).expect("/stats is JSON")
}

/// Reads stats with `read` until `done` holds of them, or fails the test after a while.
async fn poll_stats<F: std::future::Future<Output = Value>>(
    what: &str,
    done: impl Fn(&Value) -> bool,
    read: impl Fn() -> F,
) -> Value {
    let deadline = tokio::time::Instant::now() + EXPECT_WITHIN;
    loop {
        let stats = read().await;
        if done(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what} ({stats})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A minimal HTTP/1.1 GET, enough for the small endpoints.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_get_with_headers(addr, path).await;
    (status, body)
}

/// Like `http_get`, with the response's header block, lowercased.
pub async fn http_get_with_headers(addr: SocketAddr, path: &str) -> (u16, String, String) {
    http_request(addr, [127, 0, 0, 1].into(), path, "").await
}

/// A GET from a chosen loopback source address, with extra header lines (each ending in
/// CRLF); returns status, lowercased headers and body.
pub async fn http_request(
    addr: SocketAddr,
    source: std::net::IpAddr,
    path: &str,
    extra_headers: &str,
) -> (u16, String, String) {
    http_exchange(addr, source, "GET", path, extra_headers, b"").await
}

/// A POST of `body` as JSON from a chosen loopback source address, with extra header lines.
pub async fn http_post_json(
    addr: SocketAddr,
    source: std::net::IpAddr,
    path: &str,
    extra_headers: &str,
    body: &str,
) -> (u16, String, String) {
    let headers = format!("Content-Type: application/json\r\n{extra_headers}");
    http_exchange(addr, source, "POST", path, &headers, body.as_bytes()).await
}

/// One HTTP/1.1 request on its own connection (Connection: close); returns status, lowercased
/// headers and body. A body gets its Content-Length.
pub async fn http_exchange(
    addr: SocketAddr,
    source: std::net::IpAddr,
    method: &str,
    path: &str,
    extra_headers: &str,
    body: &[u8],
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let length = if body.is_empty() && method == "GET" {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra_headers}{length}Connection: close\r\n\r\n"
    );
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await.unwrap();
    let mut response = Vec::new();
    // A server that answers before reading the whole body may reset the connection; what it
    // answered is still in the buffer.
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response[9..12].parse().unwrap();
    let (headers, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, headers.to_lowercase(), body.to_owned())
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub hello: Value,
    /// The highest chat seq received, as a real client would track it for resume.
    pub last_seq: u64,
    /// The id of the last chat this client was matched into (v1.1).
    pub chat: Option<String>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Client::greeted(ws).await
    }

    /// A client over an open socket, before the server's first frame is read.
    pub fn ungreeted(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client {
            ws,
            hello: Value::Null,
            last_seq: 0,
            chat: None,
        }
    }

    /// A client over an open socket, once the server's `hello` is read.
    async fn greeted(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        let mut client = Client::ungreeted(ws);
        client.hello = client.expect("hello").await;
        client
    }

    /// Connects from a chosen loopback source address, as a distinct client would.
    pub async fn connect_from(server: SocketAddr, source: std::net::IpAddr) -> Client {
        let mut client = Client::connect_from_ungreeted(server, source).await;
        client.hello = client.expect("hello").await;
        client
    }

    /// Like `connect_from`, before the server's first frame is read (it may be a refusal).
    pub async fn connect_from_ungreeted(server: SocketAddr, source: std::net::IpAddr) -> Client {
        Client::connect_from_path_ungreeted(server, source, "/ws").await
    }

    /// Like `connect_from`, to `path` (a resume's query, say).
    pub async fn connect_from_path(
        server: SocketAddr,
        source: std::net::IpAddr,
        path: &str,
    ) -> Client {
        let mut client = Client::connect_from_path_ungreeted(server, source, path).await;
        client.hello = client.expect("hello").await;
        client
    }

    async fn connect_from_path_ungreeted(
        server: SocketAddr,
        source: std::net::IpAddr,
        path: &str,
    ) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let stream = socket.connect(server).await.expect("tcp connects");
        let url = format!("ws://{server}{path}");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket connects");
        Client::ungreeted(ws)
    }

    /// Connects from `source`, a trusted proxy that forwards `forwarded_for` as its client
    /// (X-Forwarded-For); the server must list `source` in `trusted_proxies`.
    pub async fn connect_forwarded(
        server: SocketAddr,
        source: std::net::IpAddr,
        forwarded_for: &str,
    ) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let stream = socket.connect(server).await.expect("tcp connects");
        let mut request = format!("ws://{server}/ws").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("x-forwarded-for", forwarded_for.parse().unwrap());
        let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket connects");
        Client::greeted(ws).await
    }

    /// Connects with an Origin header; returns the HTTP status of a refused upgrade.
    pub async fn connect_with_origin(url: &str, origin: &str) -> Result<Client, u16> {
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(Client::greeted(ws).await),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(other) => panic!("unexpected connect error: {other}"),
        }
    }

    /// The id of the chat this client was last matched into (v1.1), as the last `matched`
    /// read by `expect` recorded it.
    pub fn matched_chat(&self) -> String {
        self.chat.clone().expect("the client was matched")
    }

    pub fn token(&self) -> String {
        self.hello["session"].as_str().unwrap().to_owned()
    }

    pub async fn resume(server: &TestServer, token: &str, last_seq: u64) -> Client {
        let url = format!("{}?resume={token}&last_seq={last_seq}", server.ws_url());
        let mut client = Client::connect(&url).await;
        client.last_seq = last_seq;
        client
    }

    /// Resumes as the bundled page does (v1.1): a plain connection whose first frame is
    /// `resume`, so the token is never in a URL. Returns the client past the second `hello`.
    pub async fn resume_by_frame(
        server: &TestServer,
        token: &str,
        chat: Option<&str>,
        last_seq: u64,
    ) -> Client {
        let mut client = Client::connect(&server.ws_url()).await;
        assert_eq!(
            client.hello["resumed"], false,
            "the first hello is a fresh session"
        );
        client
            .send(json!({"type":"resume","session":token,"chat":chat,"last_seq":last_seq}))
            .await;
        client.hello = client.expect("hello").await;
        client.last_seq = last_seq;
        client
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string()))
            .await
            .expect("frame sent");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("frame sent");
    }

    pub async fn say(&mut self, text: &str) {
        self.send(json!({"type": "msg", "text": text})).await;
    }

    /// The next JSON frame, or `None` when the connection closed.
    pub async fn next_frame(
        &mut self,
        within: Duration,
    ) -> Option<Result<Value, Option<CloseFrame<'static>>>> {
        // One deadline for the whole wait: pings arriving must not extend it.
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match message {
                Ok(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(&text).expect("server sends JSON");
                    if let Some(seq) = value["seq"].as_u64() {
                        self.last_seq = self.last_seq.max(seq);
                    }
                    if let Some(chat) = value["chat"].as_str() {
                        self.chat = Some(chat.to_owned());
                    }
                    return Some(Ok(value));
                }
                Ok(Message::Close(frame)) => return Some(Err(frame)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The next frame, which must be of type `frame_type`.
    pub async fn expect(&mut self, frame_type: &str) -> Value {
        match self.next_frame(EXPECT_WITHIN).await {
            Some(Ok(frame)) => {
                assert_eq!(frame["type"], frame_type, "unexpected frame {frame}");
                frame
            }
            other => panic!("expected {frame_type}, got {other:?}"),
        }
    }

    /// The next JSON frame, whatever its type.
    pub async fn expect_any(&mut self) -> Value {
        match self.next_frame(EXPECT_WITHIN).await {
            Some(Ok(frame)) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame, which must be an error with `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let frame = self.expect("error").await;
        assert_eq!(frame["code"], code, "unexpected error {frame}");
        assert!(frame["message"].as_str().is_some_and(|m| !m.is_empty()));
        frame
    }

    /// The connection must close with a close frame of `code`.
    pub async fn expect_close(&mut self, code: u16) {
        loop {
            match self.next_frame(EXPECT_WITHIN).await {
                Some(Ok(_)) => continue,
                Some(Err(Some(frame))) => {
                    assert_eq!(u16::from(frame.code), code, "close code");
                    return;
                }
                other => panic!("expected a close frame {code}, got {other:?}"),
            }
        }
    }

    /// Nothing arrives for `quiet` (pings aside).
    pub async fn expect_nothing(&mut self, quiet: Duration) {
        if let Some(frame) = self.next_frame(quiet).await {
            panic!("expected silence, got {frame:?}");
        }
    }

    /// Closes politely with a close frame.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
        // Read until the server's close comes back, so the close is complete.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Drops the TCP connection without a close frame, as a network failure would.
    pub fn drop_connection(self) {
        drop(self.ws);
    }
}

/// The server binary under test: the release build when the test command provides it (its
/// memory and speed are what operators get), else this profile's.
pub fn server_binary() -> std::path::PathBuf {
    std::env::var_os("EPHEMERA_TEST_BINARY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_BIN_EXE_ephemera")))
}

/// Starts the real binary from `command` (with stdout piped) and reads the banner it prints,
/// which names the address it listens on and then its admin (metrics) address. The admin
/// listener gets a port of its own unless the command chose one, so servers run side by side.
pub fn spawn_binary(command: &mut std::process::Command) -> SpawnedBinary {
    use std::io::BufRead;
    if !command.get_args().any(|arg| arg == "--metrics-addr") {
        command.args(["--metrics-addr", "127.0.0.1:0"]);
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the server binary starts");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    stdout.read_line(&mut banner).unwrap();
    let mut metrics_line = String::new();
    stdout.read_line(&mut metrics_line).unwrap();
    let address_in = |line: &str| -> Option<SocketAddr> {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix("http://"))
            .and_then(|rest| rest.split('/').next())
            .and_then(|host| host.parse().ok())
    };
    let addr =
        address_in(&banner).unwrap_or_else(|| panic!("the banner names the address: {banner:?}"));
    let metrics_addr = address_in(&metrics_line)
        .unwrap_or_else(|| panic!("the banner names the metrics address: {metrics_line:?}"));
    SpawnedBinary {
        child,
        addr,
        metrics_addr,
        banner,
        stdout,
    }
}

/// A child process that is killed when the test lets go of it, even when the test fails
/// halfway, so no server outlives its test.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct SpawnedBinary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// The admin listener (/metrics).
    pub metrics_addr: SocketAddr,
    pub banner: String,
    /// The rest of its standard output.
    pub stdout: std::io::BufReader<std::process::ChildStdout>,
}

/// A file of the repository, read at run time (the ops files are data, not code).
pub fn repository_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("{}: {error}", full.display()))
}

/// The Grafana dashboards operators load (every `.json` in dashboards/), by file name, sorted,
/// with their text: the series checks cover a dashboard added later without being told.
pub fn checked_in_dashboards() -> Vec<(String, String)> {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut dashboards: Vec<(String, String)> = std::fs::read_dir(&folder)
        .expect("dashboards/ exists")
        .map(|entry| entry.expect("dashboards/ is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    dashboards.sort();
    dashboards
}

/// A program from Debian that lives in an sbin directory, which not every user's PATH has.
pub fn system_binary(name: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} is installed (the test command installs it)"))
}

/// A free loopback port (bound and released; good enough for a test's own servers).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// redis-server on a free loopback port with persistence off (nothing on disk), killed when
/// dropped; returns it and its URL.
pub fn start_redis() -> (KillOnDrop, u16) {
    let port = free_port();
    (start_redis_on(port), port)
}

/// The keys in the Redis on `port` that match `pattern`.
pub fn redis_keys(port: u16, pattern: &str) -> Vec<String> {
    let keys = std::process::Command::new(system_binary("redis-cli"))
        .args(["-p", &port.to_string(), "--scan", "--pattern", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&keys.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// redis-server on `port` (again, after a restart), empty.
pub fn start_redis_on(port: u16) -> KillOnDrop {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(system_binary("redis-server"))
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let stdout = child.stdout.take().unwrap();
    for line in std::io::BufReader::new(stdout).lines() {
        if line.unwrap().contains("Ready to accept connections") {
            break;
        }
    }
    KillOnDrop(child)
}
