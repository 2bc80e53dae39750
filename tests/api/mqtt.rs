//! Statistics published to a real MQTT broker: mosquitto, started here on a loopback port.
//! Snapshots arrive with the five counts, and a broker that goes away and comes back costs
//! the chat nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::Value;

use crate::helpers::*;
use ephemera::settings::Settings;

const TOPIC: &str = "ephemera-test/stats";

/// mosquitto lives in /usr/sbin, which is not on every user's PATH.
fn mosquitto_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
        .expect("mosquitto is installed (Debian's mosquitto; the test command installs it)")
}

/// Starts mosquitto on 127.0.0.1:`port` with a minimal configuration in `dir`, and waits
/// until it accepts connections. It is killed when the guard is dropped.
async fn start_broker(port: u16, dir: &Path) -> KillOnDrop {
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let broker = KillOnDrop(
        std::process::Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto starts"),
    );
    let deadline = tokio::time::Instant::now() + EXPECT_WITHIN;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    while tokio::net::TcpStream::connect(address).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mosquitto never listened on {address}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker
}

/// A port nobody listens on right now, for a broker that must come back on the same one.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A client subscribed to the statistics topic, as an operator's dashboard would be.
struct Subscriber {
    events: EventLoop,
    _client: AsyncClient,
}

impl Subscriber {
    /// Connects to the broker on `port` and returns once the subscription is acknowledged.
    async fn connect(port: u16, name: &str) -> Subscriber {
        let options = MqttOptions::new(name, "127.0.0.1", port);
        let (client, events) = AsyncClient::new(options, 10);
        client.subscribe(TOPIC, QoS::AtMostOnce).await.unwrap();
        let mut subscriber = Subscriber {
            events,
            _client: client,
        };
        subscriber
            .until(|event| matches!(event, Event::Incoming(Packet::SubAck(_))))
            .await;
        subscriber
    }

    async fn until(&mut self, wanted: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + EXPECT_WITHIN;
        loop {
            match tokio::time::timeout_at(deadline, self.events.poll()).await {
                Ok(Ok(event)) if wanted(&event) => return event,
                Ok(Ok(_)) => {}
                Ok(Err(error)) => panic!("the subscriber lost the broker: {error}"),
                Err(_) => panic!("nothing wanted arrived from the broker in time"),
            }
        }
    }

    /// The next snapshot, which must be a JSON object of exactly the five integer counts.
    async fn next_snapshot(&mut self) -> Value {
        let event = self
            .until(|event| matches!(event, Event::Incoming(Packet::Publish(p)) if p.topic == TOPIC))
            .await;
        let Event::Incoming(Packet::Publish(publish)) = event else {
            unreachable!("until returned the publish it waited for")
        };
        let snapshot: Value = serde_json::from_slice(&publish.payload).expect("a JSON snapshot");
        let fields = snapshot.as_object().expect("a JSON object");
        let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["chatting", "matches", "messages", "online", "waiting"],
            "{snapshot}"
        );
        assert!(fields.values().all(Value::is_u64), "{snapshot}");
        snapshot
    }
}

fn count(body: &str, result: &str) -> f64 {
    let series = format!("ephemera_mqtt_publishes_total{{result=\"{result}\"}} ");
    body.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_reach_the_broker_and_a_broker_that_goes_away_costs_the_chat_nothing() {
    let dir = std::env::temp_dir().join(format!("ephemera-mqtt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let broker = start_broker(port, &dir).await;
    let mut server = spawn_server(Settings {
        mqtt_url: format!("mqtt://stats:hunter2@127.0.0.1:{port}?client_id=ephemera-under-test"),
        mqtt_topic: TOPIC.into(),
        mqtt_interval_seconds: 0.2,
        ..test_settings()
    });
    let mut subscriber = Subscriber::connect(port, "dashboard-1").await;
    // A first snapshot shows the publisher is connected and we are subscribed: every count of
    // the chat below lands in a snapshot this subscriber sees.
    let first = subscriber.next_snapshot().await;
    assert_eq!(first["online"], 0, "{first}");
    // The privacy page says the totals leave, and how often; never where to, nor the login.
    let (_, privacy) = server.get("/privacy").await;
    assert!(privacy.contains("Every 0.2 seconds"), "{privacy}");
    assert!(!privacy.contains("hunter2") && !privacy.contains(&port.to_string()));

    let (mut a, mut b) = server.matched_pair().await;
    for n in 0..5 {
        a.say(&format!("before {n}")).await;
        a.expect("msg").await;
        b.expect("msg").await;
    }
    // The chat's counts may fall into two intervals: add them up until it is all there.
    let (mut matches, mut messages) = (0, 0);
    let last = loop {
        let snapshot = subscriber.next_snapshot().await;
        matches += snapshot["matches"].as_u64().unwrap();
        messages += snapshot["messages"].as_u64().unwrap();
        if matches >= 1 && messages >= 5 {
            break snapshot;
        }
    };
    assert_eq!((matches, messages), (1, 5), "each counted once");
    assert_eq!(
        (&last["online"], &last["waiting"], &last["chatting"]),
        (&2.into(), &0.into(), &2.into()),
        "{last}"
    );

    // The broker goes away. Once the publisher has noticed (a snapshot dropped), the chat
    // goes on as before: every message delivered, in order, within the usual wait.
    let failed_before = count(&server.metrics().await, "failed");
    drop(subscriber);
    drop(broker);
    let deadline = tokio::time::Instant::now() + EXPECT_WITHIN;
    while count(&server.metrics().await, "failed") <= failed_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot was dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in 0..50 {
        a.say(&format!("away {n}")).await;
    }
    for n in 0..50 {
        let text = format!("away {n}");
        let echo = a.expect("msg").await;
        let seen = b.expect("msg").await;
        assert_eq!(
            (&echo["text"], &echo["from"]),
            (&text.as_str().into(), &"you".into())
        );
        assert_eq!(
            (&seen["text"], &seen["from"]),
            (&text.as_str().into(), &"stranger".into())
        );
    }

    // The broker comes back on the same port; the publisher reconnects by itself.
    let _broker = start_broker(port, &dir).await;
    let mut subscriber = Subscriber::connect(port, "dashboard-2").await;
    let back = subscriber.next_snapshot().await;
    assert_eq!(
        (&back["online"], &back["chatting"]),
        (&2.into(), &2.into()),
        "{back}"
    );
    let metrics = server.metrics().await;
    assert!(count(&metrics, "ok") >= 3.0, "{metrics}");

    a.close().await;
    b.close().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
