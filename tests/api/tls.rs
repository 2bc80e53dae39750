//! TLS: with a certificate and key set, the server speaks only wss:// and https://. The
//! certificate is generated here, for localhost.

use std::sync::Arc;

use futures_util::StreamExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use ephemera::settings::Settings;

#[tokio::test]
async fn with_a_certificate_the_server_speaks_wss_and_not_plain_http() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("ephemera-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();
    let server = spawn_server(Settings {
        tls_cert_path: cert_path.to_str().unwrap().to_owned(),
        tls_key_path: key_path.to_str().unwrap().to_owned(),
        ..test_settings()
    });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the TLS handshake succeeds with the generated certificate");
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("the websocket upgrades over TLS");
    let Some(Ok(Message::Text(hello))) = ws.next().await else {
        panic!("no hello over TLS");
    };
    assert!(hello.contains("\"type\":\"hello\""));

    // Plain HTTP on the TLS port gets no page.
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(EXPECT_WITHIN, plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_certificate_without_a_key_is_refused_at_start() {
    let overrides = ephemera::settings::Overrides {
        tls_cert_path: Some("/nonexistent/cert.pem".to_owned()),
        ..Default::default()
    };
    assert!(Settings::load(&overrides).is_err());
}
