//! Rate limits (GCRA, from the governor crate): new connections, finds and e-mail list
//! requests per minute per client key, messages per second and media per minute per session. A limit of 0 means
//! unlimited (the bench profile). Keyed stores are pruned on the purge tick so they cannot
//! grow without bound.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use parking_lot::Mutex;

use crate::client_key::{ClientKey, ClientKeys};
use crate::protocol::Limits;

/// The limits, as set by the operator.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RateLimitConfig {
    pub connections_per_minute: u32,
    pub finds_per_minute: u32,
    pub messages_per_second: u32,
    pub media_per_minute: u32,
    /// Pings and pongs a client may send per second; beyond it they are not answered and
    /// count as protocol errors.
    pub control_frames_per_second: u32,
    /// Requests to the e-mail list (sign-ups and deletions) per minute per client key.
    pub notify_requests_per_minute: u32,
}

impl RateLimitConfig {
    /// Every limit lifted (0 means unlimited), as in the bench profile.
    pub fn unlimited() -> Self {
        Self {
            connections_per_minute: 0,
            finds_per_minute: 0,
            messages_per_second: 0,
            media_per_minute: 0,
            control_frames_per_second: 0,
            notify_requests_per_minute: 0,
        }
    }
}

fn per_minute(n: u32) -> Option<Quota> {
    NonZeroU32::new(n).map(Quota::per_minute)
}

fn per_second(n: u32) -> Option<Quota> {
    NonZeroU32::new(n).map(Quota::per_second)
}

/// The limiters' clock: tokio's, so a test that pauses time controls the limits too (a
/// refused client becomes welcome again when the test advances the clock, not after a
/// sleep). Outside a paused runtime it reads the monotonic clock like any `Instant::now()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

type DirectLimiter =
    RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;
type KeyedLimiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, TokioClock, NoOpMiddleware<std::time::Instant>>;

fn keyed(quota: Quota) -> KeyedLimiter<ClientKey> {
    RateLimiter::new(quota, DefaultKeyedStateStore::default(), TokioClock)
}

fn direct(quota: Quota) -> DirectLimiter {
    RateLimiter::direct_with_clock(quota, TokioClock)
}

/// Limits keyed by client key, shared by every session.
pub struct ClientLimiters {
    connections: Option<KeyedLimiter<ClientKey>>,
    finds: Option<KeyedLimiter<ClientKey>>,
    notify: Option<KeyedLimiter<ClientKey>>,
    /// Until when each refused client is held back, per limit, so a client can be shown its
    /// current state (governor cannot be asked without spending a cell). Pruned on the tick.
    held_back: Mutex<HashMap<(ClientKey, LimitKind), Instant>>,
    clock: TokioClock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum LimitKind {
    Connections,
    Finds,
    Notify,
}

/// A client's current rate-limit state: how long each limit still holds it back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HeldBack {
    pub connections_for_ms: Option<u64>,
    pub finds_for_ms: Option<u64>,
    pub notify_for_ms: Option<u64>,
}

impl ClientLimiters {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            connections: per_minute(config.connections_per_minute).map(keyed),
            finds: per_minute(config.finds_per_minute).map(keyed),
            notify: per_minute(config.notify_requests_per_minute).map(keyed),
            held_back: Mutex::new(HashMap::new()),
            clock: TokioClock,
        }
    }

    /// A new connection from `client`; `Err` holds how long to wait. The key from before the
    /// last salt rotation is charged too, so a client's state carries over the rotation.
    pub fn check_connection(&self, keys: &ClientKeys) -> Result<(), Duration> {
        self.check(LimitKind::Connections, keys.current, &keys.older)
    }

    pub fn check_find(&self, client: ClientKey) -> Result<(), Duration> {
        self.check(LimitKind::Finds, client, &[])
    }

    /// A request to the e-mail list; charged like a connection, previous key included.
    pub fn check_notify(&self, keys: &ClientKeys) -> Result<(), Duration> {
        self.check(LimitKind::Notify, keys.current, &keys.older)
    }

    fn check(
        &self,
        kind: LimitKind,
        client: ClientKey,
        older: &[ClientKey],
    ) -> Result<(), Duration> {
        let limiter = match kind {
            LimitKind::Connections => self.connections.as_ref(),
            LimitKind::Finds => self.finds.as_ref(),
            LimitKind::Notify => self.notify.as_ref(),
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        for key in std::iter::once(&client).chain(older) {
            if let Err(not_until) = limiter.check_key(key) {
                let wait = not_until.wait_time_from(self.clock.now());
                self.held_back
                    .lock()
                    .insert((client, kind), Instant::now() + wait);
                return Err(wait);
            }
        }
        Ok(())
    }

    /// How long each limit still holds `client` back, as last refused.
    pub fn held_back(&self, client: ClientKey, now: Instant) -> HeldBack {
        let held_back = self.held_back.lock();
        let left = |kind| {
            held_back
                .get(&(client, kind))
                .and_then(|until: &Instant| until.checked_duration_since(now))
                .map(|left| left.as_millis() as u64)
                .filter(|ms| *ms > 0)
        };
        HeldBack {
            connections_for_ms: left(LimitKind::Connections),
            finds_for_ms: left(LimitKind::Finds),
            notify_for_ms: left(LimitKind::Notify),
        }
    }

    /// Drops state of keys whose limits have fully replenished. Called on the purge tick.
    pub fn prune(&self) {
        let now = Instant::now();
        self.held_back.lock().retain(|_, until| *until > now);
        for limiter in [&self.connections, &self.finds, &self.notify]
            .into_iter()
            .flatten()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many client keys have limiter state, for tests and the privacy report.
    pub fn tracked_keys(&self) -> usize {
        [&self.connections, &self.finds, &self.notify]
            .into_iter()
            .flatten()
            .map(|limiter| limiter.len())
            .sum()
    }
}

/// Limits of one session; lives in the session actor.
pub struct SessionLimiters {
    messages: Option<DirectLimiter>,
    media: Option<DirectLimiter>,
    signals: Option<DirectLimiter>,
    typing: Option<DirectLimiter>,
    control_frames: Option<DirectLimiter>,
    clock: TokioClock,
}

impl SessionLimiters {
    /// The signal and typing rates are protocol limits (echoed in `hello`), so they come from
    /// `limits`; the rest from `config`.
    pub fn new(config: &RateLimitConfig, limits: &Limits) -> Self {
        Self {
            messages: per_second(config.messages_per_second).map(direct),
            media: per_minute(config.media_per_minute).map(direct),
            signals: per_minute(limits.max_signals_per_minute).map(direct),
            typing: per_second(limits.max_typing_per_second).map(direct),
            control_frames: per_second(config.control_frames_per_second).map(direct),
            clock: TokioClock,
        }
    }

    pub fn check_signal(&self) -> Result<(), Duration> {
        self.check(self.signals.as_ref())
    }

    pub fn check_typing(&self) -> Result<(), Duration> {
        self.check(self.typing.as_ref())
    }

    pub fn check_control_frame(&self) -> Result<(), Duration> {
        self.check(self.control_frames.as_ref())
    }

    pub fn check_message(&self) -> Result<(), Duration> {
        self.check(self.messages.as_ref())
    }

    pub fn check_media(&self) -> Result<(), Duration> {
        self.check(self.media.as_ref())
    }

    fn check(&self, limiter: Option<&DirectLimiter>) -> Result<(), Duration> {
        match limiter {
            None => Ok(()),
            Some(limiter) => limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_key::KeyRing;

    fn keys(ip: &str) -> ClientKeys {
        KeyRing::new(Duration::MAX).client_keys(ip.parse().unwrap())
    }

    fn key(ip: &str) -> ClientKey {
        keys(ip).current
    }

    #[test]
    fn a_burst_up_to_the_limit_passes_and_the_next_waits() {
        let limits = SessionLimiters::new(
            &RateLimitConfig {
                messages_per_second: 3,
                ..RateLimitConfig::unlimited()
            },
            &Limits::default(),
        );
        for _ in 0..3 {
            assert!(limits.check_message().is_ok());
        }
        let wait = limits.check_message().unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(limits.check_media().is_ok(), "0 means unlimited");
    }

    #[test]
    fn keyed_limits_are_per_client() {
        let limits = ClientLimiters::new(&RateLimitConfig {
            finds_per_minute: 2,
            ..RateLimitConfig::unlimited()
        });
        let (a, b) = (key("127.0.0.1"), key("127.0.0.2"));
        assert!(limits.check_find(a).is_ok());
        assert!(limits.check_find(a).is_ok());
        assert!(limits.check_find(a).is_err());
        assert!(
            limits.check_find(b).is_ok(),
            "another client has its own budget"
        );
        assert_eq!(limits.tracked_keys(), 2);
        assert!(
            limits
                .check_connection(&ClientKeys {
                    current: a,
                    older: vec![],
                    region: Default::default(),
                })
                .is_ok(),
            "connections are unlimited"
        );
    }

    #[test]
    fn a_previous_key_carries_its_state_over_a_rotation() {
        let limits = ClientLimiters::new(&RateLimitConfig {
            connections_per_minute: 1,
            ..RateLimitConfig::unlimited()
        });
        let (old, new) = (keys("127.0.0.1"), key("127.0.0.1"));
        assert_ne!(old.current, new, "two rings, two keys for one address");
        assert!(limits.check_connection(&old).is_ok());
        let rotated = ClientKeys {
            current: new,
            older: vec![old.current],
            region: Default::default(),
        };
        assert!(limits.check_connection(&rotated).is_err());
    }
}
