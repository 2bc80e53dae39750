//! Nothing left behind: the server is dumped while a chat is open (the markers must be found,
//! so the search is known to work) and again after the chat ended and every client left and
//! its grace ran out (no marker, message id, chat id or client address may be found, in text or
//! binary form).

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::helpers::*;

const GEOIP_TEST_DATABASE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/geoip/GeoLite2-Country-Test.mmdb"
);
/// Client A's address as its (trusted) proxy forwards it; in the test database it is GB.
const FORWARDED_ADDRESS: &str = "81.2.69.142";

fn start_server() -> (Child, SocketAddr, SocketAddr) {
    let spawned = spawn_binary(
        Command::new(server_binary())
            .args([
                "--listen-addr",
                "127.0.0.1:0",
                "--workers",
                "1",
                "--log-level",
                "warn",
            ])
            .args([
                "--allow-core-dumps",
                "true",
                "--resume-grace-seconds",
                "0.3",
            ])
            .args(["--purge-interval-seconds", "0.05"])
            // With a country database, the lookup must leave nothing behind either.
            .args(["--geoip-db-path", GEOIP_TEST_DATABASE])
            .args(["--trusted-proxies", "127.83.0.0/16"])
            .stderr(Stdio::null()),
    );
    (spawned.child, spawned.addr, spawned.metrics_addr)
}

/// Dumps the live process with gdb's gcore and returns the dump's bytes.
fn dump(pid: u32) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("ephemera-dump-{}-{pid}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = dir.join("core");
    let status = Command::new("gcore")
        .arg("-o")
        .arg(&prefix)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("gcore (from gdb) is installed; the test command installs it");
    assert!(status.success(), "gcore could dump the server");
    let path = dir.join(format!("core.{pid}"));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    bytes
}

struct Secret {
    what: &'static str,
    bytes: Vec<u8>,
}

fn found(dump: &[u8], secrets: &[Secret]) -> Vec<&'static str> {
    secrets
        .iter()
        .filter(|secret| memchr::memmem::find(dump, &secret.bytes).is_some())
        .map(|secret| secret.what)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_after_the_chat_holds_no_message_nick_interest_or_address() {
    let (child, addr, metrics_addr) = start_server();
    let child = KillOnDrop(child);
    // Unique per run, so nothing else in the process can hold them by chance.
    let tag = format!(
        "{:x}",
        std::process::id() as u64 * 2_654_435_761 % 0xffff_ffff
    );
    let message = format!("MSGMARK{tag}hello-secret");
    let reply = format!("RPLMARK{tag}bye-secret");
    let nick = format!("NICK{tag}");
    let interest = format!("intmark{tag}");
    let message_id = format!("IDMARK{tag}");
    let client_ip: IpAddr = "127.83.211.47".parse().unwrap();
    let IpAddr::V4(v4) = client_ip else {
        unreachable!()
    };

    let mut a = Client::connect_forwarded(addr, client_ip, FORWARDED_ADDRESS).await;
    let mut b = Client::connect_from(addr, "127.0.0.1".parse().unwrap()).await;
    a.send(json!({"type":"find","adult":true,"nick":nick,"interests":[interest]}))
        .await;
    a.expect("waiting").await;
    b.send(json!({"type":"find","adult":true,"interests":[interest]}))
        .await;
    b.expect("waiting").await;
    a.expect("matched").await;
    b.expect("matched").await;
    let chat = a.matched_chat();
    a.send(json!({"type":"msg","text":message,"id":message_id}))
        .await;
    a.expect("msg").await;
    b.expect("msg").await;
    b.say(&reply).await;
    b.expect("msg").await;
    a.expect("msg").await;

    let secrets = [
        Secret {
            what: "message",
            bytes: message.clone().into_bytes(),
        },
        Secret {
            what: "reply",
            bytes: reply.clone().into_bytes(),
        },
        Secret {
            what: "nick",
            bytes: nick.clone().into_bytes(),
        },
        Secret {
            what: "interest",
            bytes: interest.clone().into_bytes(),
        },
        Secret {
            what: "message id",
            bytes: message_id.clone().into_bytes(),
        },
        Secret {
            what: "chat id",
            bytes: chat.clone().into_bytes(),
        },
        Secret {
            what: "address as text",
            bytes: b"127.83.211.47".to_vec(),
        },
        Secret {
            what: "forwarded address as text",
            bytes: FORWARDED_ADDRESS.as_bytes().to_vec(),
        },
        Secret {
            what: "forwarded address as bytes",
            bytes: vec![81, 2, 69, 142],
        },
        Secret {
            what: "address as bytes",
            bytes: v4.octets().to_vec(),
        },
    ];

    // While the chat is open, the search finds what it looks for.
    let pid = child.id();
    let open = tokio::task::spawn_blocking(move || dump(pid))
        .await
        .unwrap();
    let seen = found(&open, &secrets);
    for what in [
        "message",
        "reply",
        "nick",
        "interest",
        "message id",
        "chat id",
    ] {
        assert!(
            seen.contains(&what),
            "the open chat's {what} is in memory: the search works"
        );
    }
    assert!(
        seen.contains(&"address as bytes") || seen.contains(&"address as text"),
        "the connected client's address is in memory while it is connected"
    );
    drop(open);

    // The lookup ran (so the search below covers it).
    let (_, metrics) = http_get(metrics_addr, "/metrics").await;
    assert!(
        metrics.contains(
            r#"ephemera_sessions_started_by_country_total{country="GB",continent="EU"} 1"#
        ),
        "A was counted in GB"
    );

    // B leaves with a close frame; A's connection drops, and its grace (0.3 s) runs out.
    b.close().await;
    a.drop_connection();
    stats_until(addr, "every session is gone", |s| s["online"] == 0).await;
    let after = tokio::task::spawn_blocking(move || dump(pid))
        .await
        .unwrap();
    let left = found(&after, &secrets);
    drop(child);
    assert!(
        left.is_empty(),
        "left in the server's memory after the chat: {left:?}"
    );
}
