//! `ChatConfig`: what the actors need to know of the server's settings. The server builds it
//! from its settings (`Settings::chat_config`), the one place defaults are set; tests and
//! benches that run the actors alone start from `ChatConfig::unlimited`.

use std::time::Duration;

use crate::abuse::BanPolicy;
use crate::ice::IceConfig;
use crate::protocol::Limits;
use crate::rate_limits::RateLimitConfig;

/// What the actors need to know of the server's settings.
pub struct ChatConfig {
    pub limits: Limits,
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub resume_grace: Duration,
    pub interest_timeout: Duration,
    pub rematch_cooldown: Duration,
    pub purge_interval: Duration,
    pub session_outbox_max_bytes: usize,
    /// Unsent bytes all sessions together may hold; past it, sessions whose own backlog is
    /// over a fair share are cut off.
    pub outbox_total_max_bytes: usize,
    pub max_sessions: usize,
    pub max_sessions_per_client: usize,
    /// How often the salt behind client keys is replaced.
    pub salt_rotation: Duration,
    pub rate_limits: RateLimitConfig,
    pub ban_policy: BanPolicy,
    /// Proof of work for every new session (0: off).
    pub pow_difficulty_bits: u32,
    /// New sessions per second past which proof of work starts by itself (0: never).
    pub pow_auto_threshold_per_second: f64,
    pub pow_auto_difficulty_bits: u32,
    /// Refusals (bad_request, too_large, rate_limited) a connection may cause within a minute.
    pub max_protocol_errors_per_minute: usize,
    /// Messages a chat may have queued before a member's sends are refused.
    pub pair_mailbox_capacity: usize,
    /// Requests the matchmaker may have queued before finds are refused with server_busy.
    pub matchmaker_mailbox_capacity: usize,
    /// Under server-wide outbox pressure, the unsent bytes a session may still hold; more, and
    /// it is among those cut off.
    pub outbox_fair_share_bytes: usize,
    /// STUN/TURN for video chats, and whether clients must relay.
    pub ice: IceConfig,
}

impl ChatConfig {
    /// For tests and benches that drive the actors without the server: protocol v1's limits,
    /// every rate limit, ban and per-client bound lifted, no heartbeat to speak of, and short
    /// timings. The server's defaults are its settings (`src/settings.rs`), not these.
    pub fn unlimited() -> Self {
        Self {
            limits: Limits::default(),
            heartbeat_interval: Duration::from_secs(3600),
            client_timeout: Duration::from_secs(3 * 3600),
            resume_grace: Duration::from_secs(30),
            interest_timeout: Duration::from_secs(5),
            rematch_cooldown: Duration::from_secs(600),
            purge_interval: Duration::from_secs(1),
            session_outbox_max_bytes: 8 << 20,
            outbox_total_max_bytes: 64 << 20,
            max_sessions: 100_000,
            max_sessions_per_client: usize::MAX,
            salt_rotation: Duration::from_secs(24 * 3600),
            rate_limits: RateLimitConfig::unlimited(),
            ban_policy: BanPolicy::never(),
            pow_difficulty_bits: 0,
            pow_auto_threshold_per_second: 0.0,
            pow_auto_difficulty_bits: 16,
            max_protocol_errors_per_minute: 20,
            pair_mailbox_capacity: 256,
            matchmaker_mailbox_capacity: 65_536,
            outbox_fair_share_bytes: 64 << 10,
            ice: IceConfig::default(),
        }
    }
}
