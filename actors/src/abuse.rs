//! Reports and bans, by client key. Reports from distinct reporters within `report_window`
//! that reach `report_ban_threshold` ban the reported key for `ban_first`, each later ban
//! `ban_multiplier` times longer, up to `ban_max`. One key's reports count once, and the
//! threshold is at least 2, so nobody can ban anyone alone. Pair actors file reports; sessions
//! check bans before queueing; the purge tick forgets what has run out.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::Mutex;

use crate::client_key::{ClientKey, ClientKeys};

#[derive(Debug, Clone, Copy)]
pub struct BanPolicy {
    pub threshold: usize,
    pub window: Duration,
    pub first_ban: Duration,
    pub multiplier: f64,
    pub max_ban: Duration,
}

impl BanPolicy {
    /// A policy that never bans (tests and benches of other things).
    pub fn never() -> Self {
        Self {
            threshold: usize::MAX,
            window: Duration::from_secs(3600),
            first_ban: Duration::from_secs(600),
            multiplier: 2.0,
            max_ban: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// One reporter of a record: its key, the node that keyed its client (0 for this one), and
/// when it reported.
type Reporter = (ClientKey, u64, Instant);

#[derive(Default)]
struct Record {
    /// Distinct reporters within the window.
    reporters: Vec<Reporter>,
    banned_until: Option<Instant>,
    /// Bans so far, for escalation; forgotten once nothing has happened for a window past
    /// the last ban.
    bans: u32,
    last_event: Option<Instant>,
}

impl Record {
    /// Folds in what was held about the same client under another key.
    fn merge(&mut self, other: Record) {
        for (reporter, origin, at) in other.reporters {
            if !self.reporters.iter().any(|(key, _, _)| *key == reporter) {
                self.reporters.push((reporter, origin, at));
            }
        }
        self.banned_until = self.banned_until.max(other.banned_until);
        self.bans = self.bans.max(other.bans);
        self.last_event = self.last_event.max(other.last_event);
    }
}

/// What the desk holds about one key, for the privacy report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AbuseStanding {
    pub reports_in_window: usize,
    pub bans_so_far: u32,
    pub banned_for_ms: Option<u64>,
}

pub struct AbuseDesk {
    policy: BanPolicy,
    records: Mutex<HashMap<ClientKey, Record>>,
}

impl AbuseDesk {
    pub fn new(mut policy: BanPolicy) -> Self {
        policy.threshold = policy.threshold.max(2);
        Self {
            policy,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// `reporter`, a client of this node, reports `reported`. Returns true if this report
    /// started a ban.
    pub fn report(&self, reported: ClientKey, reporter: ClientKey, now: Instant) -> bool {
        self.report_from(reported, reporter, None, now)
    }

    /// `reporter` reports `reported`; `origin` names the node and salt generation the reporter's
    /// client was keyed under when that is another node of a cluster (`RemoteClient::origin`).
    /// One address has one key per node and salt generation, so it may report once from each:
    /// a ban therefore also takes more reporters than the origins they come from, which one
    /// address alone never has.
    pub fn report_from(
        &self,
        reported: ClientKey,
        reporter: ClientKey,
        origin: Option<&str>,
        now: Instant,
    ) -> bool {
        // Where the reporter's key was made: this node or another, under which salt.
        let label = match origin {
            Some(origin) => origin.to_owned(),
            None => format!("/{}", reporter.generation()),
        };
        let origin = u64::from_le_bytes(
            blake3::hash(label.as_bytes()).as_bytes()[..8]
                .try_into()
                .expect("8 bytes"),
        );
        if reported == reporter {
            // Two sessions from one network: a report cannot count against the reporter's own key.
            return false;
        }
        let mut records = self.records.lock();
        let record = records.entry(reported).or_default();
        record.last_event = Some(now);
        let window = self.policy.window;
        record
            .reporters
            .retain(|(_, _, at)| now.saturating_duration_since(*at) < window);
        if record.reporters.iter().any(|(key, _, _)| *key == reporter) {
            return false;
        }
        record.reporters.push((reporter, origin, now));
        let mut origins: Vec<u64> = record.reporters.iter().map(|(_, o, _)| *o).collect();
        origins.sort_unstable();
        origins.dedup();
        let reporters = record.reporters.len();
        if reporters < self.policy.threshold || reporters <= origins.len() && origins.len() > 1 {
            return false;
        }
        let factor = self.policy.multiplier.max(1.0).powi(record.bans as i32);
        let ban = self
            .policy
            .first_ban
            .mul_f64(factor.min(1e6))
            .min(self.policy.max_ban);
        record.banned_until = Some(now + ban);
        record.bans += 1;
        record.reporters.clear();
        true
    }

    /// Moves what is held under the client's older keys (from before salt rotations) to its
    /// current key, so reports and bans outlive rotations. Called when a client connects.
    pub fn carry_over(&self, keys: &ClientKeys) {
        let mut records = self.records.lock();
        for old in &keys.older {
            let Some(moved) = records.remove(old) else {
                continue;
            };
            let record = records.entry(keys.current).or_default();
            record.merge(moved);
        }
    }

    /// How long `client` is still banned, if it is.
    pub fn banned_for(&self, client: ClientKey, now: Instant) -> Option<Duration> {
        self.records
            .lock()
            .get(&client)
            .and_then(|record| record.banned_until)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// The salt generations of the keys held here, for the key ring's rotation.
    pub fn key_generations_in_use(&self) -> impl Iterator<Item = u32> {
        let records = self.records.lock();
        records
            .keys()
            .map(ClientKey::generation)
            .collect::<Vec<_>>()
            .into_iter()
    }

    pub fn standing(&self, client: ClientKey, now: Instant) -> AbuseStanding {
        let records = self.records.lock();
        let record = records.get(&client);
        AbuseStanding {
            reports_in_window: record.map_or(0, |r| {
                r.reporters
                    .iter()
                    .filter(|(_, _, at)| now.saturating_duration_since(*at) < self.policy.window)
                    .count()
            }),
            bans_so_far: record.map_or(0, |r| r.bans),
            banned_for_ms: record
                .and_then(|r| r.banned_until)
                .and_then(|until| until.checked_duration_since(now))
                .map(|left| left.as_millis() as u64)
                .filter(|ms| *ms > 0),
        }
    }

    /// Forgets records with no ban in force and nothing within a window. Purge tick.
    pub fn prune(&self, now: Instant) {
        let window = self.policy.window;
        self.records.lock().retain(|_, record| {
            let banned = record.banned_until.is_some_and(|until| until > now);
            let recent = record
                .last_event
                .is_some_and(|at| now.saturating_duration_since(at) < window);
            let escalation_memory = record
                .banned_until
                .is_some_and(|until| now.saturating_duration_since(until) < window);
            banned || recent || escalation_memory
        });
    }

    pub fn tracked_keys(&self) -> usize {
        self.records.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_key::KeyRing;

    fn keys(n: u8) -> Vec<ClientKey> {
        let ring = KeyRing::new(Duration::MAX);
        (0..n)
            .map(|i| {
                ring.client_keys(std::net::Ipv4Addr::new(127, 0, 0, i + 1).into())
                    .current
            })
            .collect()
    }

    fn policy() -> BanPolicy {
        BanPolicy {
            threshold: 2,
            window: Duration::from_secs(100),
            first_ban: Duration::from_secs(10),
            multiplier: 3.0,
            max_ban: Duration::from_secs(50),
        }
    }

    #[test]
    fn distinct_reporters_within_the_window_ban_with_escalation_up_to_the_cap() {
        let desk = AbuseDesk::new(policy());
        let k = keys(5);
        let (target, t0) = (k[0], Instant::now());
        assert!(!desk.report(target, k[1], t0));
        assert_eq!(desk.banned_for(target, t0), None);
        assert!(desk.report(target, k[2], t0));
        assert_eq!(desk.banned_for(target, t0), Some(Duration::from_secs(10)));
        assert_eq!(desk.banned_for(target, t0 + Duration::from_secs(11)), None);
        let t1 = t0 + Duration::from_secs(20);
        desk.report(target, k[3], t1);
        assert!(desk.report(target, k[4], t1));
        assert_eq!(desk.banned_for(target, t1), Some(Duration::from_secs(30)));
        let t2 = t1 + Duration::from_secs(40);
        desk.report(target, k[1], t2);
        desk.report(target, k[2], t2);
        assert_eq!(
            desk.banned_for(target, t2),
            Some(Duration::from_secs(50)),
            "capped at ban_max"
        );
    }

    #[test]
    fn one_address_reporting_from_every_node_of_a_cluster_cannot_ban_alone() {
        // Each node keys a client under its own salt: one address is one key per node.
        let desk = AbuseDesk::new(policy());
        let k = keys(4);
        let now = Instant::now();
        assert!(!desk.report_from(k[0], k[1], None, now));
        assert!(!desk.report_from(k[0], k[2], Some("node-b"), now));
        assert!(!desk.report_from(k[0], k[3], Some("node-c"), now));
        assert_eq!(
            desk.banned_for(k[0], now),
            None,
            "three keys from three nodes"
        );
        // A second key from one of those nodes is a second address: now it takes.
        let more = keys(5)[4];
        assert!(desk.report_from(k[0], more, Some("node-b"), now));
    }

    #[test]
    fn one_address_reporting_again_under_a_new_salt_is_a_new_origin_not_a_new_reporter() {
        let desk = AbuseDesk::new(policy());
        let k = keys(4);
        let now = Instant::now();
        // One address on node b, before and after b's salt rotated: two keys, two origins.
        assert!(!desk.report_from(k[0], k[1], Some("node-b/7"), now));
        assert!(!desk.report_from(k[0], k[2], Some("node-b/8"), now));
        assert_eq!(desk.banned_for(k[0], now), None);
        // Another address under one of those: more reporters than origins.
        assert!(desk.report_from(k[0], k[3], Some("node-b/8"), now));
    }

    #[test]
    fn one_reporter_counts_once_and_cannot_ban_alone() {
        let desk = AbuseDesk::new(BanPolicy {
            threshold: 1,
            ..policy()
        });
        let k = keys(2);
        let now = Instant::now();
        for _ in 0..10 {
            assert!(!desk.report(k[0], k[1], now));
        }
        assert_eq!(desk.banned_for(k[0], now), None);
        assert_eq!(desk.standing(k[0], now).reports_in_window, 1);
        assert!(!desk.report(k[0], k[0], now), "a key cannot report itself");
    }

    #[test]
    fn reports_older_than_the_window_do_not_count() {
        let desk = AbuseDesk::new(policy());
        let k = keys(3);
        let t0 = Instant::now();
        desk.report(k[0], k[1], t0);
        assert!(!desk.report(k[0], k[2], t0 + Duration::from_secs(101)));
    }

    #[test]
    fn a_ban_moves_to_the_new_key_after_a_rotation() {
        let desk = AbuseDesk::new(policy());
        let k = keys(4);
        let now = Instant::now();
        desk.report(k[0], k[1], now);
        desk.report(k[0], k[2], now);
        // k[3] stands for the same client's key under the new salt.
        assert!(desk.banned_for(k[3], now).is_none());
        desk.carry_over(&ClientKeys {
            current: k[3],
            older: vec![k[0]],
            region: Default::default(),
        });
        assert!(desk.banned_for(k[3], now).is_some());
        assert!(
            desk.banned_for(k[0], now).is_none(),
            "nothing is left under the old key"
        );
    }

    #[test]
    fn prune_forgets_what_has_run_out() {
        let desk = AbuseDesk::new(policy());
        let k = keys(3);
        let now = Instant::now();
        desk.report(k[0], k[1], now);
        desk.report(k[2], k[1], now);
        desk.report(k[2], k[0], now);
        assert_eq!(desk.tracked_keys(), 2);
        desk.prune(now + Duration::from_secs(50));
        assert_eq!(desk.tracked_keys(), 2, "recent reports and bans are kept");
        desk.prune(now + Duration::from_secs(500));
        assert_eq!(desk.tracked_keys(), 0);
    }
}
