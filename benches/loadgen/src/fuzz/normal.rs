//! The polite pairs that chat beside the fuzzers: each member sends numbered messages one at
//! a time and checks that its stranger got every one exactly once and in order, and that its
//! own echoes came back exactly once. The fuzzers must not hurt them.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Barrier};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{connect_from, expect, send, Ws};

/// A member whose message is not echoed within this long counts as hurt.
const ECHO_WITHIN: Duration = Duration::from_secs(15);

/// After both members of a pair sent their last message, how long a member reads on with
/// nothing arriving before it leaves.
const QUIET_BEFORE_LEAVING: Duration = Duration::from_secs(1);

/// Member `member`'s source address: 127.2.0.1 and up, one each, apart from the fuzzers'
/// 127.1.x.y, so no per-address limit the fuzzers exhaust (connections, control frames,
/// reports that lead to a ban) ever touches a normal client.
fn normal_source(member: usize) -> Ipv4Addr {
    let host = 1 + (member as u32) % 0xffff;
    Ipv4Addr::new(127, 2, (host >> 8) as u8, (host & 0xff) as u8)
}

/// The text of member `member`'s message `number`: its sender, its number, and some
/// multi-byte filler, so the checks can tell any two messages apart and see corruption.
fn message_text(member: usize, number: u64) -> String {
    format!(
        "{member}:{number}:{}",
        "é漢🙂x".repeat((number % 20) as usize + 1)
    )
}

pub(crate) struct NormalPlan {
    pub(crate) url: String,
    pub(crate) messages_per_second: f64,
    /// Set once every pair is matched: when members stop sending.
    pub(crate) send_until: watch::Receiver<Option<Instant>>,
    /// Messages delivered to normal members so far, for the progress line.
    pub(crate) delivered: Arc<AtomicU64>,
}

#[derive(Default)]
pub(crate) struct MemberReport {
    pub(crate) member: usize,
    pub(crate) matched: bool,
    /// Messages the server acknowledged with their echo.
    pub(crate) acknowledged: u64,
    /// The stranger's messages received, each once.
    pub(crate) received: u64,
    /// The stranger's messages or own echoes that came a second time.
    pub(crate) doubled: u64,
    /// The stranger's messages that came ahead of one still missing, and `seq` gaps.
    pub(crate) reordered: u64,
    /// Messages whose text was not what was sent.
    pub(crate) corrupted: u64,
    pub(crate) rate_limited_retries: u64,
    /// The server closed the connection, or it broke, while the pair was chatting.
    pub(crate) disconnected: bool,
    pub(crate) errors: Vec<String>,
    pub(crate) echo_latency_us: Option<Histogram<u64>>,
}

/// One member; `pair_done` is shared with its stranger, `all_matched` with every member and
/// the conductor.
pub(crate) async fn normal_member(
    plan: Arc<NormalPlan>,
    member: usize,
    all_matched: Arc<Barrier>,
    pair_done: Arc<Barrier>,
) -> MemberReport {
    let mut report = MemberReport {
        member,
        echo_latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).ok(),
        ..MemberReport::default()
    };
    // Both members of a pair share an interest no one else has, so they meet each other.
    let interest = format!("normal-pair-{}", member / 2);
    let matched = tokio::time::timeout(
        Duration::from_secs(60),
        match_with_interest(&plan.url, normal_source(member), &interest),
    )
    .await
    .unwrap_or_else(|_| Err("not matched within 60 s".to_owned()));
    all_matched.wait().await;
    let mut ws = match matched {
        Ok(ws) => ws,
        Err(error) => {
            report.errors.push(format!("member {member}: {error}"));
            pair_done.wait().await;
            return report;
        }
    };
    report.matched = true;
    let mut send_until = plan.send_until.clone();
    let until = match send_until.wait_for(Option::is_some).await {
        Ok(until) => until.unwrap_or_else(Instant::now),
        Err(_) => Instant::now(),
    };
    let mut checks = Checks::default();
    chat(&plan, &mut ws, until, &mut report, &mut checks).await;
    pair_done.wait().await;
    if !report.disconnected {
        drain(&mut ws, &mut report, &mut checks).await;
        let _ = ws.close(None).await;
    }
    report
}

async fn match_with_interest(url: &str, source: Ipv4Addr, interest: &str) -> Result<Ws, String> {
    let mut ws = connect_from(url, source).await?;
    let hello = expect(&mut ws, "hello", Duration::from_secs(30)).await?;
    let mut find = json!({"type": "find", "adult": true, "interests": [interest]});
    if let Some(challenge) = hello["pow"]["challenge"].as_str() {
        let bits = hello["pow"]["difficulty"].as_u64().unwrap_or(0) as u32;
        let nonce = ephemera_actors::pow::solve(challenge, bits).ok_or("unreadable challenge")?;
        find["pow"] = json!(nonce);
    }
    send(&mut ws, &find).await?;
    let matched = expect(&mut ws, "matched", Duration::from_secs(60)).await?;
    if !matched["common"]
        .as_array()
        .is_some_and(|common| common.iter().any(|shared| shared == interest))
    {
        return Err(format!(
            "matched with a stranger not of this pair: {matched}"
        ));
    }
    if matched["seq"] != 1 {
        return Err(format!("matched has seq {}, not 1", matched["seq"]));
    }
    Ok(ws)
}

/// What a member has seen so far of its chat.
#[derive(Default)]
struct Checks {
    last_seq: u64,
    /// The number of the message of ours waiting for its echo, and when it was sent.
    in_flight: Option<(u64, Instant)>,
    /// The stranger's message due next.
    next_from_stranger: u64,
    stranger: Option<usize>,
}

/// Sends until `until`, one message at a time, at the plan's rate; reads and checks all the
/// while. Returns with no message of ours unacknowledged, or with the member hurt.
async fn chat(
    plan: &NormalPlan,
    ws: &mut Ws,
    until: Instant,
    report: &mut MemberReport,
    checks: &mut Checks,
) {
    checks.last_seq = 1;
    let interval = Duration::from_secs_f64(1.0 / plan.messages_per_second.max(0.01));
    let mut next_send = Instant::now();
    loop {
        let now = Instant::now();
        if checks.in_flight.is_none() && now >= until {
            return;
        }
        if let Some((_, sent_at)) = checks.in_flight {
            if now.duration_since(sent_at) > ECHO_WITHIN {
                report.errors.push(format!(
                    "member {}: no echo within {} s",
                    report.member,
                    ECHO_WITHIN.as_secs()
                ));
                report.disconnected = true;
                return;
            }
        }
        let may_send = checks.in_flight.is_none() && now < until;
        // Wake to send the next message, or to see that an echo is overdue.
        let wake = match checks.in_flight {
            Some((_, sent_at)) => sent_at + ECHO_WITHIN + Duration::from_millis(1),
            None => next_send,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if !may_send || Instant::now() < next_send {
                    continue;
                }
                let number = report.acknowledged;
                let text = message_text(report.member, number);
                let frame = json!({"type": "msg", "text": text, "id": number.to_string()});
                if let Err(error) = send(ws, &frame).await {
                    report.errors.push(format!("member {}: send failed: {error}", report.member));
                    report.disconnected = true;
                    return;
                }
                checks.in_flight = Some((number, Instant::now()));
                next_send = next_send.max(Instant::now() - interval) + interval;
            }
            frame = ws.next() => {
                let frame = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(close))) => {
                        report.errors.push(format!(
                            "member {}: the server closed the connection while chatting: {close:?}",
                            report.member
                        ));
                        report.disconnected = true;
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => {
                        report.errors.push(format!("member {}: connection broke: {error}", report.member));
                        report.disconnected = true;
                        return;
                    }
                    None => {
                        report.errors.push(format!("member {}: connection ended", report.member));
                        report.disconnected = true;
                        return;
                    }
                };
                let Ok(frame) = serde_json::from_str::<Value>(&frame) else {
                    report.errors.push(format!("member {}: a frame that is not JSON", report.member));
                    continue;
                };
                let received_before = report.received;
                if let Some(retry_after) = take_frame(&frame, report, checks, true) {
                    // Refused for the message rate: the same message again, once allowed.
                    report.rate_limited_retries += 1;
                    checks.in_flight = None;
                    next_send = Instant::now() + retry_after;
                }
                if report.disconnected {
                    return;
                }
                plan.delivered
                    .fetch_add(report.received - received_before, Ordering::Relaxed);
            }
        }
    }
}

/// Reads until nothing has come for `QUIET_BEFORE_LEAVING` (the stranger's last messages;
/// its leaving is normal now).
async fn drain(ws: &mut Ws, report: &mut MemberReport, checks: &mut Checks) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let quiet = Instant::now() + QUIET_BEFORE_LEAVING;
        match tokio::time::timeout_at(quiet.min(deadline), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                if let Ok(frame) = serde_json::from_str::<Value>(&text) {
                    take_frame(&frame, report, checks, false);
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => return,
        }
    }
}

/// Checks one frame of the chat; returns the wait asked by a `rate_limited` error.
fn take_frame(
    frame: &Value,
    report: &mut MemberReport,
    checks: &mut Checks,
    chatting: bool,
) -> Option<Duration> {
    let member = report.member;
    match frame["type"].as_str().unwrap_or_default() {
        "msg" => take_message(frame, report, checks),
        "error" if frame["code"] == "rate_limited" && checks.in_flight.is_some() => {
            return Some(Duration::from_millis(
                frame["retry_after_ms"].as_u64().unwrap_or(1000),
            ));
        }
        // The stranger left once both stopped sending: the end of a chat, not harm.
        "ended" if !chatting && frame["reason"] == "stranger_left" => {
            check_seq(frame, report, checks);
        }
        other => {
            report
                .errors
                .push(format!("member {member}: unexpected {other}: {frame}"));
            if chatting && matches!(other, "ended" | "stranger_away" | "error") {
                report.disconnected = other != "error";
            }
        }
    }
    None
}

fn check_seq(frame: &Value, report: &mut MemberReport, checks: &mut Checks) -> bool {
    let seq = frame["seq"].as_u64().unwrap_or(0);
    let expected = checks.last_seq + 1;
    if seq == expected {
        checks.last_seq = seq;
        return true;
    }
    if seq < expected {
        report.doubled += 1;
        report.errors.push(format!(
            "member {}: seq {seq} again (expected {expected})",
            report.member
        ));
        return false;
    }
    report.reordered += 1;
    report.errors.push(format!(
        "member {}: seq {seq} where {expected} was due",
        report.member
    ));
    checks.last_seq = seq;
    true
}

fn take_message(frame: &Value, report: &mut MemberReport, checks: &mut Checks) {
    let member = report.member;
    if !check_seq(frame, report, checks) {
        return;
    }
    let text = frame["text"].as_str().unwrap_or_default();
    let mut parts = text.splitn(3, ':');
    let (Some(Ok(sender)), Some(Ok(number))) = (
        parts.next().map(str::parse::<usize>),
        parts.next().map(str::parse::<u64>),
    ) else {
        report.corrupted += 1;
        report.errors.push(format!(
            "member {member}: a message not from a normal client"
        ));
        return;
    };
    if text != message_text(sender, number) {
        report.corrupted += 1;
        report.errors.push(format!(
            "member {member}: message {sender}:{number} corrupted"
        ));
    }
    if frame["from"] == "you" {
        let expected = checks.in_flight.map(|(number, _)| number);
        // Servers before v1.1 do not echo `id`; one that does must echo ours.
        let id_matches = frame["id"].is_null()
            || frame["id"].as_str().and_then(|id| id.parse().ok()) == Some(number);
        if sender != member || Some(number) != expected || !id_matches {
            report.doubled += 1;
            report.errors.push(format!(
                "member {member}: echo of {sender}:{number} while {expected:?} was in flight"
            ));
            return;
        }
        if let (Some((_, sent_at)), Some(histogram)) =
            (checks.in_flight.take(), report.echo_latency_us.as_mut())
        {
            let _ = histogram.record((sent_at.elapsed().as_micros() as u64).max(1));
        }
        report.acknowledged += 1;
        return;
    }
    if !frame["id"].is_null() {
        report.errors.push(format!(
            "member {member}: the stranger's copy carries an id"
        ));
    }
    if *checks.stranger.get_or_insert(sender) != sender || sender == member {
        report.corrupted += 1;
        report.errors.push(format!(
            "member {member}: a message from {sender}, not from the stranger"
        ));
        return;
    }
    if number < checks.next_from_stranger {
        report.doubled += 1;
        report.errors.push(format!(
            "member {member}: stranger's message {number} again"
        ));
        return;
    }
    if number > checks.next_from_stranger {
        report.reordered += 1;
        report.errors.push(format!(
            "member {member}: stranger's message {number} where {} was due",
            checks.next_from_stranger
        ));
    }
    checks.next_from_stranger = number + 1;
    report.received += 1;
}

#[derive(Serialize, Default)]
pub(crate) struct NormalSummary {
    pub(crate) pairs: usize,
    pub(crate) members_matched: usize,
    pub(crate) messages_sent: u64,
    pub(crate) messages_delivered: u64,
    pub(crate) lost: u64,
    pub(crate) doubled: u64,
    pub(crate) reordered: u64,
    pub(crate) corrupted: u64,
    pub(crate) rate_limited_retries: u64,
    pub(crate) members_disconnected: usize,
    pub(crate) echo_latency_p50_us: u64,
    pub(crate) echo_latency_p99_us: u64,
    pub(crate) echo_latency_max_us: u64,
    pub(crate) errors: usize,
    pub(crate) first_errors: Vec<String>,
}

pub(crate) fn summarise_normal(pairs: usize, reports: &[MemberReport]) -> NormalSummary {
    let mut summary = NormalSummary {
        pairs,
        ..NormalSummary::default()
    };
    let mut latency = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
    let mut errors = Vec::new();
    for report in reports {
        summary.members_matched += usize::from(report.matched);
        summary.messages_sent += report.acknowledged;
        summary.messages_delivered += report.received;
        summary.doubled += report.doubled;
        summary.reordered += report.reordered;
        summary.corrupted += report.corrupted;
        summary.rate_limited_retries += report.rate_limited_retries;
        summary.members_disconnected += usize::from(report.disconnected);
        errors.extend(report.errors.iter().cloned());
        if let Some(histogram) = &report.echo_latency_us {
            let _ = latency.add(histogram);
        }
        // Members 2k and 2k+1 are a pair: what one had acknowledged, the other must have.
        if let Some(stranger) = reports
            .iter()
            .find(|other| other.member == report.member ^ 1)
        {
            summary.lost += stranger.acknowledged.saturating_sub(report.received);
        }
    }
    summary.echo_latency_p50_us = latency.value_at_quantile(0.5);
    summary.echo_latency_p99_us = latency.value_at_quantile(0.99);
    summary.echo_latency_max_us = latency.max();
    summary.errors = errors.len();
    summary.first_errors = errors.into_iter().take(10).collect();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(member: usize) -> (MemberReport, Checks) {
        let report = MemberReport {
            member,
            ..MemberReport::default()
        };
        let checks = Checks {
            last_seq: 1,
            ..Checks::default()
        };
        (report, checks)
    }

    fn msg(from: &str, sender: usize, number: u64, seq: u64) -> Value {
        let mut frame =
            json!({"type":"msg","from":from,"text":message_text(sender, number),"seq":seq});
        if from == "you" {
            frame["id"] = json!(number.to_string());
        }
        frame
    }

    #[test]
    fn a_stranger_message_twice_counts_as_doubled_and_a_gap_as_reordered() {
        let (mut report, mut checks) = member(0);
        take_frame(&msg("stranger", 1, 0, 2), &mut report, &mut checks, true);
        take_frame(&msg("stranger", 1, 0, 3), &mut report, &mut checks, true);
        take_frame(&msg("stranger", 1, 2, 4), &mut report, &mut checks, true);
        assert_eq!(
            (report.received, report.doubled, report.reordered),
            (2, 1, 1)
        );
    }

    #[test]
    fn an_echo_acknowledges_only_the_message_in_flight() {
        let (mut report, mut checks) = member(4);
        checks.in_flight = Some((0, Instant::now()));
        take_frame(&msg("you", 4, 0, 2), &mut report, &mut checks, true);
        take_frame(&msg("you", 4, 0, 3), &mut report, &mut checks, true);
        assert_eq!((report.acknowledged, report.doubled), (1, 1));
    }

    #[test]
    fn what_a_stranger_acknowledged_and_its_partner_missed_is_lost() {
        let (mut first, _) = member(0);
        let (mut second, _) = member(1);
        first.acknowledged = 10;
        second.received = 9;
        second.acknowledged = 5;
        first.received = 5;
        assert_eq!(summarise_normal(1, &[first, second]).lost, 1);
    }
}
