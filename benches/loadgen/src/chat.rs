//! The `chat` scenario: pairs exchange messages; delivery rate, latency and exactly-once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::client::{matched_client, next_frame, progress, send};
use crate::Cli;

#[derive(Default)]
pub(crate) struct ChatReport {
    pub(crate) id: usize,
    pub(crate) partner: Option<usize>,
    pub(crate) sent: u64,
    pub(crate) echoed: u64,
    pub(crate) received: u64,
    pub(crate) errors: Vec<String>,
    pub(crate) latency: Option<Histogram<u64>>,
}

pub(crate) struct ChatPlan {
    pub(crate) url: String,
    pub(crate) sources: u32,
    pub(crate) rate_per_member: f64,
    pub(crate) window: usize,
    pub(crate) message_bytes: usize,
    pub(crate) send_for: Duration,
    pub(crate) epoch: Instant,
}

/// One chatting member: sends `id:n:sent_at_us:` padded to size, checks everything back.
pub(crate) async fn chat_member(
    plan: Arc<ChatPlan>,
    id: usize,
    all_matched: Arc<Barrier>,
) -> ChatReport {
    let mut report = ChatReport {
        id,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
        ..ChatReport::default()
    };
    let mut ws = match matched_client(&plan.url, id, plan.sources).await {
        Ok(ws) => ws,
        Err(error) => {
            report.errors.push(error);
            all_matched.wait().await;
            return report;
        }
    };
    all_matched.wait().await;
    let started = Instant::now();
    let (mut last_seq, mut next_from_partner) = (1u64, 0u64);
    let interval =
        (plan.rate_per_member > 0.0).then(|| Duration::from_secs_f64(1.0 / plan.rate_per_member));
    let mut next_send = tokio::time::Instant::now();
    loop {
        let sending = started.elapsed() < plan.send_for;
        let window_open = report.sent - report.echoed < plan.window as u64;
        let due = interval.is_none() || tokio::time::Instant::now() >= next_send;
        if sending && window_open && due {
            let at_us = plan.epoch.elapsed().as_micros();
            let mut text = format!("{id}:{}:{at_us}:", report.sent);
            while text.len() < plan.message_bytes {
                text.push('x');
            }
            if let Err(error) = send(&mut ws, &json!({"type":"msg","text":text})).await {
                report.errors.push(error);
                break;
            }
            report.sent += 1;
            if let Some(interval) = interval {
                next_send += interval;
            }
            continue;
        }
        if !sending && report.echoed == report.sent {
            // Everything acknowledged; stay a little for the stranger's last messages.
            let quiet = Duration::from_millis(500);
            match next_frame(&mut ws, quiet).await {
                // The stranger finished first and left: normal once sending is over.
                Some(frame) if frame["type"] == "ended" => break,
                Some(frame) => check_chat_frame(
                    &frame,
                    &mut report,
                    &mut last_seq,
                    &mut next_from_partner,
                    &plan,
                ),
                None => break,
            }
            continue;
        }
        let wait = if sending && interval.is_some() && window_open {
            next_send.saturating_duration_since(tokio::time::Instant::now())
        } else {
            Duration::from_secs(10)
        };
        match tokio::time::timeout(wait, next_frame(&mut ws, Duration::from_secs(10))).await {
            Ok(Some(frame)) if !sending && frame["type"] == "ended" => break,
            Ok(Some(frame)) => check_chat_frame(
                &frame,
                &mut report,
                &mut last_seq,
                &mut next_from_partner,
                &plan,
            ),
            Ok(None) => {
                report
                    .errors
                    .push("connection lost or silent for 10 s".to_owned());
                break;
            }
            Err(_) => {}
        }
    }
    let _ = ws.close(None).await;
    report
}

pub(crate) fn check_chat_frame(
    frame: &Value,
    report: &mut ChatReport,
    last_seq: &mut u64,
    next_from_partner: &mut u64,
    plan: &ChatPlan,
) {
    if frame["type"] != "msg" {
        if frame["type"] == "error" || frame["type"] == "ended" {
            report.errors.push(format!("unexpected {frame}"));
        }
        return;
    }
    let seq = frame["seq"].as_u64().unwrap_or(0);
    if seq != *last_seq + 1 {
        report
            .errors
            .push(format!("seq {seq} after {last_seq}: a gap or a duplicate"));
    }
    *last_seq = seq;
    let text = frame["text"].as_str().unwrap_or_default();
    let mut parts = text.splitn(4, ':');
    let (Some(sender), Some(n), Some(at_us)) = (parts.next(), parts.next(), parts.next()) else {
        report.errors.push("a message that was not ours".to_owned());
        return;
    };
    let (sender, n, at_us): (usize, u64, u128) = (
        sender.parse().unwrap_or(usize::MAX),
        n.parse().unwrap_or(u64::MAX),
        at_us.parse().unwrap_or(0),
    );
    if frame["from"] == "you" {
        if sender != report.id || n != report.echoed {
            report
                .errors
                .push(format!("echo {sender}:{n} out of order"));
        }
        report.echoed += 1;
        return;
    }
    if *report.partner.get_or_insert(sender) != sender {
        report
            .errors
            .push(format!("message from {sender}, not from the stranger"));
    }
    if n != *next_from_partner {
        report.errors.push(format!(
            "stranger's message {n} where {next_from_partner} was due"
        ));
    }
    *next_from_partner = n + 1;
    report.received += 1;
    let latency_us = plan.epoch.elapsed().as_micros().saturating_sub(at_us) as u64;
    if let Some(histogram) = report.latency.as_mut() {
        let _ = histogram.record(latency_us.max(1));
    }
}

#[derive(Serialize)]
pub(crate) struct ChatSummary {
    pub(crate) scenario: &'static str,
    pub(crate) members: usize,
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) lost: u64,
    pub(crate) errors: usize,
    pub(crate) first_errors: Vec<String>,
    pub(crate) delivered_per_second: f64,
    pub(crate) latency_p50_us: u64,
    pub(crate) latency_p99_us: u64,
    pub(crate) latency_p999_us: u64,
}

pub(crate) async fn run_chat(cli: &Cli, pairs: usize, plan: ChatPlan) -> ChatSummary {
    let members = pairs * 2;
    let plan = Arc::new(plan);
    let all_matched = Arc::new(Barrier::new(members));
    let bar = progress(members as u64, "chatting");
    let tasks: Vec<_> = (0..members)
        .map(|id| tokio::spawn(chat_member(plan.clone(), id, all_matched.clone())))
        .collect();
    let mut reports = Vec::with_capacity(members);
    for task in tasks {
        reports.push(task.await.unwrap_or_default());
        bar.inc(1);
    }
    bar.finish_and_clear();
    summarise_chat(&reports, plan.send_for, cli)
}

pub(crate) fn summarise_chat(
    reports: &[ChatReport],
    send_for: Duration,
    _cli: &Cli,
) -> ChatSummary {
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut errors = Vec::new();
    let (mut sent, mut delivered, mut lost) = (0, 0, 0);
    for report in reports {
        sent += report.sent;
        delivered += report.received;
        errors.extend(report.errors.iter().cloned());
        if let Some(histogram) = &report.latency {
            let _ = latency.add(histogram);
        }
        // What my stranger sent me must all have arrived.
        if let Some(partner) = report
            .partner
            .and_then(|p| reports.iter().find(|r| r.id == p))
        {
            lost += partner.sent.saturating_sub(report.received);
            if partner.partner != Some(report.id) {
                errors.push(format!(
                    "{} and {} disagree on who they talk to",
                    report.id, partner.id
                ));
            }
        }
    }
    ChatSummary {
        scenario: "chat",
        members: reports.len(),
        sent,
        delivered,
        lost,
        errors: errors.len(),
        first_errors: errors.into_iter().take(5).collect(),
        delivered_per_second: delivered as f64 / send_for.as_secs_f64(),
        latency_p50_us: latency.value_at_quantile(0.5),
        latency_p99_us: latency.value_at_quantile(0.99),
        latency_p999_us: latency.value_at_quantile(0.999),
    }
}

// ---------------------------------------------------------------------------------------------
// idle
// ---------------------------------------------------------------------------------------------
