//! The embedded page: every module it imports is served from here, it stays small, and it is
//! sent compressed to browsers that ask. (What it does is tested in a real browser: tests/web.)

use std::collections::BTreeSet;

use crate::helpers::*;

/// What the README promises the page weighs at most, uncompressed, all files together.
const PAGE_BUDGET_BYTES: usize = 72 * 1024;

fn local_references(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in ["src=\"/static/", "href=\"/static/", "from \"./"] {
        for (at, _) in source.match_indices(marker) {
            let rest = &source[at + marker.len()..];
            found.push(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    found
}

#[tokio::test]
async fn every_file_the_page_loads_is_served_here_and_the_whole_stays_small() {
    let server = spawn_server(test_settings());
    let (status, index) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(!index.contains("http://") && !index.contains("https://"));
    let mut total = index.len();
    let mut seen = BTreeSet::new();
    let mut pending = local_references(&index);
    while let Some(file) = pending.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let (status, headers, body) =
            http_get_with_headers(server.addr, &format!("/static/{file}")).await;
        assert_eq!(status, 200, "/static/{file}");
        let expected = if file.ends_with(".js") {
            "text/javascript"
        } else {
            "text/css"
        };
        assert!(headers.contains(expected), "/static/{file}: {headers}");
        assert!(
            !body.contains("//cdn") && !body.contains("https://"),
            "{file} names another site"
        );
        total += body.len();
        pending.extend(local_references(&body));
    }
    let expected: BTreeSet<String> = [
        "app.js",
        "call.js",
        "client.js",
        "notify.js",
        "prefs.js",
        "style.css",
    ]
    .map(String::from)
    .into();
    assert_eq!(seen, expected);
    assert!(total <= PAGE_BUDGET_BYTES, "the page weighs {total} bytes");
}

#[tokio::test]
async fn the_page_is_gzipped_for_browsers_that_accept_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = spawn_server(test_settings());
    let (_, plain) = server.get("/static/app.js").await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /static/app.js HTTP/1.1\r\nHost: {}\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let headers = String::from_utf8_lossy(&response[..split]).to_lowercase();
    assert!(headers.contains("content-encoding: gzip"), "{headers}");
    assert!(
        response.len() - split < plain.len() / 2,
        "gzip should at least halve app.js"
    );
}
