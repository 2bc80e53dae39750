//! The operator's monitoring, checked with the real tools (Debian's `prometheus` package, which
//! ops/test.sh installs): promtool checks ops/prometheus.yml, the alert rules and their unit
//! tests, and a live scrape; then a real Prometheus scrapes the running binary while strangers
//! chat, and every expression of every dashboard and every alert rule must parse and evaluate,
//! the core panels with data.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// How long Prometheus may take to start, scrape, and have the data a check waits for.
const PROMETHEUS_WITHIN: Duration = Duration::from_secs(30);

/// The panels an operator looks at first: each of their queries must return a positive number
/// once strangers have chatted, not merely parse. (Dashboard uid, panel title.)
const CORE_PANELS: &[(&str, &str)] = &[
    ("ephemera-overview", "Online now"),
    ("ephemera-overview", "Matches per second"),
    ("ephemera-overview", "Messages per second"),
    ("ephemera-overview", "Match wait: p50, p90, p99 by mode"),
    ("ephemera-overview", "Chat duration: p50, p90, p99 by mode"),
    ("ephemera-abuse-health", "Resident memory"),
];

/// The alerts the issue asks for, by name.
const ALERTS: &[&str] = &[
    "EphemeraDown",
    "EphemeraWaitingWithoutMatches",
    "EphemeraErrorRatioHigh",
    "EphemeraMemoryGrowing",
    "EphemeraFileDescriptorsNearLimit",
];

#[test]
fn promtool_accepts_the_prometheus_config_the_alert_rules_and_their_unit_tests() {
    // check config also loads and checks the rule files the config names.
    promtool(&["check", "config", "ops/prometheus.yml"], None);
    promtool(&["check", "rules", "ops/alerts.yml"], None);
    promtool(&["test", "rules", "ops/alerts.test.yml"], None);
}

#[test]
fn both_dashboards_have_stable_uids_and_query_only_through_their_datasource_variable() {
    let dashboards = checked_in_dashboards();
    let uids: BTreeSet<String> = dashboards
        .iter()
        .map(|(_, text)| parse_dashboard(text)["uid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        uids,
        BTreeSet::from(["ephemera-abuse-health".into(), "ephemera-overview".into()]),
        "links and bookmarks reach the dashboards by these uids: keep them"
    );
    for (file, text) in &dashboards {
        let dashboard = parse_dashboard(text);
        let variables = dashboard["templating"]["list"].as_array().unwrap();
        assert!(
            variables
                .iter()
                .any(|variable| variable["name"] == "datasource"
                    && variable["type"] == "datasource"
                    && variable["query"] == "prometheus"),
            "{file} has a datasource variable of type prometheus"
        );
        // Every data source reference, wherever it sits, is the variable: no id or uid of
        // one Grafana's data source is baked in.
        let mut references = Vec::new();
        collect_datasources(&dashboard, &mut references);
        assert!(!references.is_empty());
        for reference in references {
            assert_eq!(
                reference,
                &json!({"type": "prometheus", "uid": "${datasource}"}),
                "{file}: a data source other than ${{datasource}}"
            );
        }
        assert!(
            !text.contains("datasourceId"),
            "{file} names a data source id"
        );
        let panels = dashboard["panels"].as_array().unwrap();
        let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
        assert_eq!(ids.len(), panels.len(), "{file}: panel ids are unique");
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: every panel has a title");
            assert!(
                panel["description"]
                    .as_str()
                    .is_some_and(|d| d.contains('?')),
                "{file}: {title} says, as a question, what it answers"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scraping_a_busy_server_evaluates_every_dashboard_and_alert_expression() {
    let SpawnedBinary {
        child,
        addr,
        metrics_addr,
        ..
    } = spawn_binary(
        Command::new(server_binary())
            .args(["--listen-addr", "127.0.0.1:0", "--workers", "1"])
            .args(["--log-level", "warn"])
            .stderr(Stdio::null()),
    );
    let _server = KillOnDrop(child);

    // The operator's config, pointed at this server and scraping every second. The rules
    // file sits beside it, as in ops/.
    let scratch = ScratchDir::new("prometheus");
    let config = repository_file("ops/prometheus.yml");
    let config = replaced_once(&config, "scrape_interval: 15s", "scrape_interval: 1s");
    let config = replaced_once(
        &config,
        "evaluation_interval: 15s",
        "evaluation_interval: 1s",
    );
    let config = replaced_once(&config, "- 127.0.0.1:9898", &format!("- {metrics_addr}"));
    std::fs::write(scratch.0.join("prometheus.yml"), config).unwrap();
    std::fs::write(
        scratch.0.join("alerts.yml"),
        repository_file("ops/alerts.yml"),
    )
    .unwrap();
    let mut prometheus = start_prometheus(&scratch.0);
    let api = prometheus.addr;

    // The first scrape sees every counter at zero, so the rates below see the chats begin.
    let targets = wait_for(
        &mut prometheus,
        "the server's target is up",
        move || async move {
            let targets = query_api(api, "/api/v1/targets").await;
            let active = targets["data"]["activeTargets"].as_array().cloned();
            let up = active.as_ref().is_some_and(|active| {
                active.len() == 1
                    && active[0]["health"] == "up"
                    && active[0]["labels"]["job"] == "ephemera"
            });
            up.then_some(targets)
        },
    )
    .await;
    assert_eq!(
        targets["data"]["activeTargets"][0]["scrapeUrl"],
        format!("http://{metrics_addr}/metrics")
    );

    let _still_online = drive_chats(addr).await;
    let exposition = http_get(metrics_addr, "/metrics").await.1;
    promtool(&["check", "metrics"], Some(&exposition));

    // The core panels show numbers once Prometheus has scraped the chats.
    let dashboards: Vec<(String, Value)> = checked_in_dashboards()
        .into_iter()
        .map(|(file, text)| (file, parse_dashboard(&text)))
        .collect();
    for (uid, title) in CORE_PANELS {
        let panel = dashboards
            .iter()
            .filter(|(_, dashboard)| dashboard["uid"] == *uid)
            .flat_map(|(_, dashboard)| panels_of(dashboard))
            .find(|panel| panel["title"] == *title)
            .unwrap_or_else(|| panic!("{uid} has a panel {title:?}"));
        for expr in exprs_of(panel) {
            let query = as_prometheus_sees_it(&expr);
            wait_for(
                &mut prometheus,
                &format!("{title}: {query} is positive"),
                || {
                    let query = query.clone();
                    async move {
                        let answer = instant_query(api, &query).await;
                        positive_sample(&answer).then_some(())
                    }
                },
            )
            .await;
        }
    }

    // Every expression of every panel and variable parses and evaluates.
    let mut checked = 0;
    for (file, dashboard) in &dashboards {
        for panel in panels_of(dashboard) {
            for expr in exprs_of(panel) {
                let query = as_prometheus_sees_it(&expr);
                let answer = instant_query(api, &query).await;
                assert_eq!(
                    answer["status"], "success",
                    "{file}, panel {}: {query}: {answer}",
                    panel["title"]
                );
                checked += 1;
            }
        }
        for variable in dashboard["templating"]["list"].as_array().unwrap() {
            let Some(definition) = variable["definition"].as_str() else {
                continue;
            };
            // label_values(series, label) is Grafana's, not PromQL: ask for the same values.
            let inner = definition
                .strip_prefix("label_values(")
                .and_then(|rest| rest.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{file}: a variable Grafana asks with label_values"));
            let (series, label) = inner.split_once(',').unwrap();
            let query = format!("count by ({}) ({series})", label.trim());
            let answer = instant_query(api, &query).await;
            let found = answer["data"]["result"].as_array().is_some_and(|result| {
                result
                    .iter()
                    .any(|sample| sample["metric"][label.trim()].is_string())
            });
            assert!(
                found,
                "{file}: variable {} finds values: {answer}",
                variable["name"]
            );
        }
    }
    assert!(
        checked >= 40,
        "both dashboards' queries were checked ({checked})"
    );

    // Prometheus loaded every rule and evaluates each without error; each expression also
    // answers as a query; and against a healthy server none is pending or firing.
    let rules = wait_for(
        &mut prometheus,
        "every rule evaluated",
        move || async move {
            let rules = query_api(api, "/api/v1/rules").await;
            let all: Vec<Value> = rules["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let evaluated =
                all.len() == ALERTS.len() && all.iter().all(|r| r["health"] != "unknown");
            evaluated.then_some(all)
        },
    )
    .await;
    let names: BTreeSet<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ALERTS.iter().copied().collect());
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        assert!(rule["labels"]["severity"].is_string(), "{rule}");
        assert!(
            rule["duration"].as_f64().is_some_and(|d| d > 0.0),
            "{rule} has a for:"
        );
        assert!(rule["annotations"]["summary"].is_string(), "{rule}");
        assert!(rule["annotations"]["description"].is_string(), "{rule}");
        let query = rule["query"].as_str().unwrap();
        let answer = instant_query(api, query).await;
        assert_eq!(answer["status"], "success", "{}: {answer}", rule["name"]);
        assert_eq!(rule["state"], "inactive", "a healthy server: {rule}");
    }
}

/// Strangers at `addr`, each from an address of its own: a text chat with messages that ends,
/// a video chat with a signal that ends in a report, two errors, and then a text pair left
/// chatting and a video client left waiting, returned so they stay online.
async fn drive_chats(addr: SocketAddr) -> Vec<Client> {
    let source = |last: u8| IpAddr::from([127, 91, 0, last]);
    let (mut a, mut b) = matched_pair_at(addr, source(1), source(2)).await;
    for text in ["hello", "how are you", "bye"] {
        a.say(text).await;
        a.expect("msg").await;
        b.expect("msg").await;
    }
    a.send(json!({"type":"leave"})).await;
    a.expect("ended").await;
    b.expect("ended").await;

    let mut c = Client::connect_from(addr, source(3)).await;
    let mut d = Client::connect_from(addr, source(4)).await;
    for client in [&mut c, &mut d] {
        client.send(find_with("video", &[])).await;
        client.expect("waiting").await;
    }
    c.expect("matched").await;
    d.expect("matched").await;
    c.send(json!({"type":"signal","data":{"sdp":"offer"}}))
        .await;
    d.expect("signal").await;
    d.say("hi").await;
    d.expect("msg").await;
    c.expect("msg").await;
    c.send(json!({"type":"report","reason":"spam"})).await;
    c.expect("ended").await;
    d.expect("ended").await;

    let mut idle = Client::connect_from(addr, source(5)).await;
    idle.say("no one to hear it").await;
    idle.expect_error("not_chatting").await;
    idle.send(json!({"type":"dance"})).await;
    idle.expect_error("bad_request").await;

    let (mut e, f) = matched_pair_at(addr, source(6), source(7)).await;
    e.say("still here").await;
    e.expect("msg").await;
    let mut waiting = Client::connect_from(addr, source(8)).await;
    waiting.send(find_with("video", &[])).await;
    waiting.expect("waiting").await;
    vec![a, b, c, d, idle, e, f, waiting]
}

/// Runs promtool with `args` in the repository, with `stdin` if given; fails with its output.
fn promtool(args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("promtool ({error}): install Debian's prometheus package; ops/test.sh does")
        });
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool {}: {}\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

struct RunningPrometheus {
    /// Its HTTP API, on a loopback port of its own (never 9090, where Debian's packaged service
    /// may listen).
    addr: SocketAddr,
    log: PathBuf,
    process: KillOnDrop,
}

/// Starts Prometheus on `dir/prometheus.yml`, with its storage in `dir`, and waits until it is
/// ready.
fn start_prometheus(dir: &Path) -> RunningPrometheus {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = dir.join("prometheus.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let process = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|error| {
            panic!("prometheus ({error}): install Debian's prometheus package; ops/test.sh does")
        });
    RunningPrometheus {
        addr,
        log,
        process: KillOnDrop(process),
    }
}

/// Polls `check` until it returns something, or fails naming `what` with Prometheus' log.
async fn wait_for<T, F, Fut>(prometheus: &mut RunningPrometheus, what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PROMETHEUS_WITHIN;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        let exited = prometheus.process.0.try_wait().unwrap();
        if exited.is_some() || tokio::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(&prometheus.log).unwrap_or_default();
            let exited = exited.map(|status| format!(" (prometheus exited: {status})"));
            let exited = exited.unwrap_or_default();
            panic!("never happened: {what}{exited}\nprometheus' log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A GET of Prometheus' HTTP API, as JSON (an error answer too); `Null` while it is not up.
async fn query_api(addr: SocketAddr, path: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return Value::Null;
    };
    // HTTP/1.0, so the answer comes whole, never chunked, and the connection closes after it.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Value::Null;
    }
    let mut response = String::new();
    if stream.read_to_string(&mut response).await.is_err() {
        return Value::Null;
    }
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

async fn instant_query(addr: SocketAddr, query: &str) -> Value {
    query_api(
        addr,
        &format!("/api/v1/query?query={}", percent_encoded(query)),
    )
    .await
}

/// Whether an instant query's answer holds a sample above zero (not NaN).
fn positive_sample(answer: &Value) -> bool {
    let value_of = |sample: &Value| -> Option<f64> { sample["value"][1].as_str()?.parse().ok() };
    answer["status"] == "success"
        && answer["data"]["result"]
            .as_array()
            .is_some_and(|result| result.iter().filter_map(value_of).any(|v| v > 0.0))
}

fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// A panel's expression with Grafana's variables given the values Grafana would give them
/// here. A variable this does not know fails the test, so a new one is not sent as is.
fn as_prometheus_sees_it(expr: &str) -> String {
    let query = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "5m")
        .replace("$job", "ephemera");
    assert!(
        !query.contains('$'),
        "a Grafana variable the test does not know: {expr}"
    );
    query
}

fn parse_dashboard(text: &str) -> Value {
    serde_json::from_str(text).expect("a dashboard is JSON")
}

/// Every panel, those inside collapsed rows too.
fn panels_of(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    panels
}

fn exprs_of(panel: &Value) -> Vec<String> {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .collect()
}

/// Every value under a `datasource` key, anywhere in the dashboard.
fn collect_datasources<'a>(value: &'a Value, found: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "datasource" {
                    found.push(inner);
                } else {
                    collect_datasources(inner, found);
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| collect_datasources(item, found)),
        _ => {}
    }
}

/// `text` with `from` replaced by `to`, where `from` must occur exactly once (ops/prometheus.yml
/// keeps those lines for this test).
fn replaced_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "ops/prometheus.yml has {from:?} once, for the test to replace"
    );
    text.replace(from, to)
}

/// A directory of the test's own under the system's temporary directory, removed on drop
/// (after what was declared later, such as a Prometheus writing into it, has stopped).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(what: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(format!("ephemera-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        ScratchDir(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
