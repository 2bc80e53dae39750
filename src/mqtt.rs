//! Optional MQTT publishing of the aggregate statistics (`mqtt_url`): every
//! `mqtt_interval_seconds`, what /stats shows plus the matches and messages of that interval,
//! as one JSON object on `mqtt_topic`. Started and stopped by `startup`. It runs on a thread of
//! its own and only reads atomics, so a broker that is slow or away never holds up a chat.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ephemera_actors::metrics::ActivityCounts;
use ephemera_actors::registry::StatsSnapshot;
use ephemera_actors::Hub;
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::watch;
use zeroize::Zeroizing;

/// The first wait before reconnecting to a broker that went away; each failure doubles it.
const RECONNECT_FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest wait between reconnection attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(30);
/// How long a stopping publisher waits to tell the broker it leaves.
const DISCONNECT_GRACE: Duration = Duration::from_millis(200);
/// The port of a `mqtt://` URL that names none (IANA's MQTT port).
const DEFAULT_PORT: u16 = 1883;

/// Why `mqtt_url` was refused. The messages never repeat the URL, which may hold a password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BrokerUrlError {
    #[error("not a URL; expected e.g. mqtt://broker.example:1883?client_id=ephemera-1")]
    NotAUrl,
    #[error(
        "mqtts:// (TLS) is not supported; use mqtt:// to a broker on a private network or \
         through a TLS tunnel (e.g. stunnel) on this host"
    )]
    TlsUnsupported,
    #[error("the scheme must be mqtt://, not {0}://")]
    Scheme(String),
    #[error("the URL names no broker host")]
    NoHost,
    #[error("the URL has a path; only mqtt://[user[:password]@]host[:port][?client_id=…] is read")]
    Path,
    #[error("unknown query parameter {0:?}; only client_id is read")]
    UnknownParameter(String),
}

/// A parsed `mqtt_url`: where the broker is and who we say we are.
pub struct BrokerUrl {
    host: String,
    port: u16,
    client_id: String,
    username: Option<String>,
    password: Zeroizing<String>,
}

impl BrokerUrl {
    /// Parses `mqtt://[user[:password]@]host[:port][?client_id=ID]`. A URL without a
    /// client id gets a random one, so two servers on one broker never take each other's place.
    pub fn parse(text: &str) -> Result<Self, BrokerUrlError> {
        let url = url::Url::parse(text).map_err(|_| BrokerUrlError::NotAUrl)?;
        match url.scheme() {
            "mqtt" => {}
            "mqtts" => return Err(BrokerUrlError::TlsUnsupported),
            other => return Err(BrokerUrlError::Scheme(other.to_owned())),
        }
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host.trim_matches(['[', ']']).to_owned(),
            _ => return Err(BrokerUrlError::NoHost),
        };
        if !matches!(url.path(), "" | "/") {
            return Err(BrokerUrlError::Path);
        }
        let mut client_id = None;
        for (key, value) in url.query_pairs() {
            match &*key {
                "client_id" if !value.is_empty() => client_id = Some(value.into_owned()),
                "client_id" => {}
                other => return Err(BrokerUrlError::UnknownParameter(other.to_owned())),
            }
        }
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8_lossy()
                .into_owned()
        };
        Ok(Self {
            host,
            port: url.port().unwrap_or(DEFAULT_PORT),
            client_id: client_id.unwrap_or_else(random_client_id),
            username: Some(url.username())
                .filter(|name| !name.is_empty())
                .map(decode),
            password: Zeroizing::new(url.password().map(decode).unwrap_or_default()),
        })
    }

    /// The broker as logs may show it: the user and password are never written out.
    pub fn redacted(&self) -> String {
        let userinfo = if self.username.is_some() { "***@" } else { "" };
        if self.host.contains(':') {
            format!("mqtt://{userinfo}[{}]:{}", self.host, self.port)
        } else {
            format!("mqtt://{userinfo}{}:{}", self.host, self.port)
        }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    fn options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        if let Some(username) = &self.username {
            options.set_credentials(username.clone(), self.password.as_str());
        }
        options
    }
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerUrl")
            .field("broker", &self.redacted())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// `ephemera-` and 12 hex digits: 21 characters, within the 23 every MQTT 3.1.1 broker takes.
fn random_client_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::getrandom(&mut bytes).expect("the operating system's random source works");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("ephemera-{hex}")
}

/// What is published: counts only, nothing about anyone. `matches` and `messages` count the
/// interval since the previous snapshot, the rest are the moment's gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub online: u64,
    pub waiting: u64,
    pub chatting: u64,
    pub matches: u64,
    pub messages: u64,
}

impl Snapshot {
    pub fn new(now: StatsSnapshot, interval: ActivityCounts) -> Self {
        Self {
            online: now.online,
            waiting: now.waiting,
            chatting: now.chatting,
            matches: interval.matches,
            messages: interval.messages,
        }
    }
}

/// What to publish where, and how often.
#[derive(Debug)]
pub struct Publishing {
    pub broker: BrokerUrl,
    pub topic: String,
    pub interval: Duration,
}

/// The running publisher. Dropping it (or `stop`) ends its thread.
pub struct MqttPublisher {
    /// Set to true to stop; a dropped sender stops the publisher just the same.
    stop: watch::Sender<bool>,
}

impl MqttPublisher {
    /// Starts publishing `hub`'s statistics on a thread of its own (with its own runtime), so
    /// that nothing the broker does, or fails to do, runs on a thread that serves chats.
    pub fn start(hub: Arc<Hub>, publishing: Publishing) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = watch::channel(false);
        tracing::info!(
            broker = %publishing.broker.redacted(),
            topic = %publishing.topic,
            interval_seconds = publishing.interval.as_secs_f64(),
            "publishing statistics to mqtt"
        );
        std::thread::Builder::new()
            .name("mqtt-publisher".into())
            .spawn(move || runtime.block_on(publish_until_stopped(hub, publishing, stopped)))?;
        Ok(Self { stop })
    }

    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// Snapshots every interval while a connection task keeps the broker connected.
async fn publish_until_stopped(
    hub: Arc<Hub>,
    publishing: Publishing,
    mut stopped: watch::Receiver<bool>,
) {
    let counts = PublishCounts::register();
    // QoS 0 (at most once): each snapshot is superseded by the next within one interval, so
    // a retransmission would only deliver a stale reading. QoS 1 would keep unacknowledged
    // snapshots in rumqttc's state while the broker is slow and resend them after a
    // reconnect; QoS 0 keeps nothing. A request channel of one: a snapshot the event loop
    // has not taken yet is never queued behind, the new one is dropped and counted instead.
    let (client, event_loop) = AsyncClient::new(publishing.broker.options(), 1);
    let connected = Arc::new(AtomicBool::new(false));
    let connection = tokio::spawn(keep_connected(
        event_loop,
        connected.clone(),
        publishing.broker.redacted(),
        counts.clone(),
    ));
    let publish = async {
        let mut ticks = tokio::time::interval(publishing.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; each snapshot covers one whole interval.
        ticks.tick().await;
        let mut previous = hub.activity_totals();
        loop {
            ticks.tick().await;
            let totals = hub.activity_totals();
            let snapshot = Snapshot::new(hub.stats(), totals.since(previous));
            previous = totals;
            if !connected.load(Ordering::Relaxed) {
                counts.failed.increment(1);
                continue;
            }
            // A struct of five integers always serialises.
            let payload = serde_json::to_vec(&snapshot).expect("a snapshot serialises");
            let handed_over =
                client.try_publish(publishing.topic.as_str(), QoS::AtMostOnce, false, payload);
            if handed_over.is_err() {
                counts.failed.increment(1);
            }
        }
    };
    tokio::select! {
        _ = stopped.wait_for(|&stop| stop) => {}
        _ = publish => {}
    }
    // Say goodbye if the broker is there; a broker that is away gets no wait.
    let _ = client.try_disconnect();
    drop(client);
    let _ = tokio::time::timeout(DISCONNECT_GRACE, connection).await;
}

/// Drives rumqttc's event loop: connects, writes the snapshots, and after a failure waits a
/// growing, jittered delay before the next attempt. Ends once the client is gone or has said
/// goodbye.
async fn keep_connected(
    mut event_loop: rumqttc::EventLoop,
    connected: Arc<AtomicBool>,
    broker: String,
    counts: PublishCounts,
) {
    let mut backoff = Backoff::default();
    // Only a change is logged at warn: an outage is one line, not one per attempt.
    let mut was_connected = true;
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected.store(true, Ordering::Relaxed);
                was_connected = true;
                backoff.reset();
                tracing::info!(broker = %broker, "mqtt broker connected");
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => counts.ok.increment(1),
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(ConnectionError::RequestsDone) => {
                return
            }
            Ok(_) => {}
            Err(error) => {
                connected.store(false, Ordering::Relaxed);
                let delay = backoff.next_delay();
                let retry_in_seconds = delay.as_secs_f64();
                if was_connected {
                    tracing::warn!(
                        broker = %broker,
                        error = %error,
                        retry_in_seconds,
                        "mqtt broker unreachable, retrying with backoff"
                    );
                } else {
                    tracing::debug!(
                        broker = %broker,
                        error = %error,
                        retry_in_seconds,
                        "mqtt broker still unreachable"
                    );
                }
                was_connected = false;
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// `ephemera_mqtt_publishes_total{result}`, registered once per publisher.
#[derive(Clone)]
struct PublishCounts {
    /// Written to the broker's connection.
    ok: metrics::Counter,
    /// Dropped: no connection, or the previous snapshot not yet taken.
    failed: metrics::Counter,
}

impl PublishCounts {
    fn register() -> Self {
        Self {
            ok: metrics::counter!("ephemera_mqtt_publishes_total", "result" => "ok"),
            failed: metrics::counter!("ephemera_mqtt_publishes_total", "result" => "failed"),
        }
    }
}

/// Exponential backoff with jitter: each wait is between half and all of a delay that
/// doubles from `RECONNECT_FIRST_DELAY` up to `RECONNECT_MAX_DELAY`. The jitter keeps servers
/// that lost the same broker from returning to it in step.
#[derive(Debug)]
struct Backoff {
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            delay: RECONNECT_FIRST_DELAY,
        }
    }
}

impl Backoff {
    fn reset(&mut self) {
        self.delay = RECONNECT_FIRST_DELAY;
    }

    fn next_delay(&mut self) -> Duration {
        let mut bytes = [0u8; 4];
        // Without randomness the wait is still a backoff, just not a jittered one.
        let fraction = match getrandom::getrandom(&mut bytes) {
            Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
            Err(_) => 1.0,
        };
        let wait = self.delay.mul_f64(0.5 + 0.5 * fraction);
        self.delay = (self.delay * 2).min(RECONNECT_MAX_DELAY);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_with_credentials_and_a_client_id_is_read_and_logged_without_them() {
        let broker =
            BrokerUrl::parse("mqtt://stats:s%40cret@broker.example:1884?client_id=ephemera-1")
                .unwrap();
        assert_eq!(broker.client_id(), "ephemera-1");
        assert_eq!(broker.username.as_deref(), Some("stats"));
        assert_eq!(broker.password.as_str(), "s@cret");
        assert_eq!(broker.redacted(), "mqtt://***@broker.example:1884");
        assert!(!format!("{broker:?}").contains("cret"));
        assert!(!format!("{broker:?}").contains("stats"));
    }

    #[test]
    fn a_url_without_a_client_id_gets_a_random_one_and_the_default_port() {
        let first = BrokerUrl::parse("mqtt://127.0.0.1").unwrap();
        let second = BrokerUrl::parse("mqtt://127.0.0.1/?client_id=").unwrap();
        assert_eq!(first.port, 1883);
        assert!(first.client_id().starts_with("ephemera-"));
        assert_eq!(first.client_id().len(), 21);
        assert_ne!(first.client_id(), second.client_id());
        assert_eq!(first.redacted(), "mqtt://127.0.0.1:1883");
        let v6 = BrokerUrl::parse("mqtt://[::1]:1999").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.redacted()),
            ("::1", "mqtt://[::1]:1999".into())
        );
    }

    #[test]
    fn other_schemes_tls_paths_and_unknown_parameters_are_refused_without_echoing_the_url() {
        use BrokerUrlError::*;
        for (url, refusal) in [
            ("broker.example:1883", Scheme("broker.example".into())),
            ("not a url", NotAUrl),
            ("mqtts://u:p@broker.example", TlsUnsupported),
            ("http://broker.example", Scheme("http".into())),
            ("mqtt://broker.example/stats", Path),
            (
                "mqtt://u:p@broker.example?keep_alive=5",
                UnknownParameter("keep_alive".into()),
            ),
            ("mqtt:///?client_id=a", NoHost),
        ] {
            let error = BrokerUrl::parse(url).err();
            assert_eq!(error.as_ref(), Some(&refusal), "{url}");
            assert!(!refusal.to_string().contains("u:p"));
        }
    }

    #[test]
    fn a_snapshot_is_five_integers_named_as_the_issue_says() {
        let snapshot = Snapshot::new(
            StatsSnapshot {
                online: 3,
                waiting: 1,
                chatting: 2,
            },
            ActivityCounts {
                matches: 1,
                messages: 7,
            },
        );
        assert_eq!(
            serde_json::to_value(snapshot).unwrap(),
            serde_json::json!({"online":3,"waiting":1,"chatting":2,"matches":1,"messages":7})
        );
    }

    #[test]
    fn reconnect_waits_double_with_jitter_up_to_the_cap_and_start_over_after_a_connect() {
        let mut backoff = Backoff::default();
        let mut full = RECONNECT_FIRST_DELAY;
        for _ in 0..12 {
            let wait = backoff.next_delay();
            assert!(
                wait >= full / 2 && wait <= full,
                "{wait:?} against {full:?}"
            );
            full = (full * 2).min(RECONNECT_MAX_DELAY);
        }
        assert_eq!(full, RECONNECT_MAX_DELAY);
        backoff.reset();
        assert!(backoff.next_delay() <= RECONNECT_FIRST_DELAY);
    }
}
