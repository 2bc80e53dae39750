//! Settings: embedded defaults, then a TOML file (`--config`), then `EPHEMERA_*` environment
//! variables, then command-line flags, each layer overriding the one before. Every setting
//! `some_name` is the TOML key `some_name`, the flag `--some-name` and the variable
//! `EPHEMERA_SOME_NAME`; units are part of the name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Declares every setting once: the `Settings` struct and its defaults, the `Overrides` that
/// clap fills from flags and environment variables, and the example file's lines.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $name:ident : $ty:ty = $default:expr, env = $env:literal; )+) => {
        /// The server's settings, after all layers are applied.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $( $(#[doc = $doc])+ pub $name: $ty, )+
        }

        impl Default for Settings {
            fn default() -> Self {
                Self { $( $name: $default, )+ }
            }
        }

        /// Flags and environment variables; only those given override the file.
        #[derive(Debug, Default, Parser, Serialize)]
        #[command(name = "ephemera", version, about = "Privacy-first anonymous random chat server")]
        pub struct Overrides {
            /// A TOML file of settings (see ops/config.example.toml).
            #[arg(long, env = "EPHEMERA_CONFIG", global = true)]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            /// Print an example settings file with every default, and exit.
            #[arg(long)]
            #[serde(skip)]
            pub print_example_config: bool,
            /// An operator's command instead of serving.
            #[command(subcommand)]
            #[serde(skip)]
            pub command: Option<Command>,
            $(
                $(#[doc = $doc])+
                // Global: the operator's commands read the same flags after their name.
                #[arg(long, env = $env, value_delimiter = ',', global = true, help_heading = "Settings (also EPHEMERA_* variables and --config)")]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $name: Option<$ty>,
            )+
        }

        /// Every setting as (name, environment variable, doc line).
        pub const SETTING_NAMES: &[(&str, &str, &str)] = &[
            $( (stringify!($name), $env, concat!($($doc),+)), )+
        ];
    };
}

/// Protocol v1's limits, as the shared spec's table gives them: the defaults of the limit
/// settings below, so the numbers are written once (in `Limits::default`).
const V1_LIMITS: ephemera_actors::protocol::Limits = ephemera_actors::protocol::Limits::V1;

settings! {
    /// Address and port to listen on.
    listen_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)), env = "EPHEMERA_LISTEN_ADDR";
    /// Address and port of the admin listener that serves /metrics to Prometheus (keep it private).
    metrics_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9898)), env = "EPHEMERA_METRICS_ADDR";
    /// Origins allowed to open /ws besides the server's own (e.g. "https://chat.example").
    allowed_origins: Vec<String> = Vec::new(), env = "EPHEMERA_ALLOWED_ORIGINS";
    /// Seconds between WebSocket pings to each client.
    heartbeat_interval_seconds: f64 = 15.0, env = "EPHEMERA_HEARTBEAT_INTERVAL_SECONDS";
    /// Seconds of silence (not even a pong) after which a connection counts as dropped.
    client_timeout_seconds: f64 = 45.0, env = "EPHEMERA_CLIENT_TIMEOUT_SECONDS";
    /// Seconds a dropped session keeps its chat or queue place, waiting for a resume.
    resume_grace_seconds: f64 = 30.0, env = "EPHEMERA_RESUME_GRACE_SECONDS";
    /// Seconds a session with interests waits for a shared interest before anyone will do.
    interest_timeout_seconds: f64 = 5.0, env = "EPHEMERA_INTEREST_TIMEOUT_SECONDS";
    /// Seconds before two sessions that chatted may be matched again.
    rematch_cooldown_seconds: f64 = 600.0, env = "EPHEMERA_REMATCH_COOLDOWN_SECONDS";
    /// Seconds between purge ticks (resume grace and cooldown expiry).
    purge_interval_seconds: f64 = 1.0, env = "EPHEMERA_PURGE_INTERVAL_SECONDS";
    /// Most characters in one chat message.
    max_text_chars: usize = V1_LIMITS.max_text_chars, env = "EPHEMERA_MAX_TEXT_CHARS";
    /// Most characters in a nickname.
    max_nick_chars: usize = V1_LIMITS.max_nick_chars, env = "EPHEMERA_MAX_NICK_CHARS";
    /// Most interests in one find.
    max_interests: usize = V1_LIMITS.max_interests, env = "EPHEMERA_MAX_INTERESTS";
    /// Most characters in one interest.
    max_interest_chars: usize = V1_LIMITS.max_interest_chars, env = "EPHEMERA_MAX_INTEREST_CHARS";
    /// Most bytes of one image or voice note, decoded.
    max_media_bytes: usize = V1_LIMITS.max_media_bytes, env = "EPHEMERA_MAX_MEDIA_BYTES";
    /// Most bytes of one signal's data, serialised.
    max_signal_bytes: usize = V1_LIMITS.max_signal_bytes, env = "EPHEMERA_MAX_SIGNAL_BYTES";
    /// Most bytes of one WebSocket frame (or message of continuation frames).
    max_frame_bytes: usize = V1_LIMITS.max_frame_bytes, env = "EPHEMERA_MAX_FRAME_BYTES";
    /// Most events a chat's log holds for replay.
    event_log_max_events: usize = V1_LIMITS.event_log_max_events, env = "EPHEMERA_EVENT_LOG_MAX_EVENTS";
    /// Most bytes a chat's log holds for replay.
    event_log_max_bytes: usize = V1_LIMITS.event_log_max_bytes, env = "EPHEMERA_EVENT_LOG_MAX_BYTES";
    /// Most sessions alive at once; beyond it new connections get server_busy.
    max_sessions: usize = 100_000, env = "EPHEMERA_MAX_SESSIONS";
    /// Most sessions alive at once from one client key (one IPv4 address or IPv6 /64).
    max_sessions_per_client: usize = 32, env = "EPHEMERA_MAX_SESSIONS_PER_CLIENT";
    /// Seconds between replacements of the in-memory salt behind client keys.
    salt_rotation_seconds: f64 = 86_400.0, env = "EPHEMERA_SALT_ROTATION_SECONDS";
    /// New connections per minute from one client key (0: unlimited).
    max_connections_per_minute: u32 = 30, env = "EPHEMERA_MAX_CONNECTIONS_PER_MINUTE";
    /// Finds (and nexts) per minute from one client key (0: unlimited).
    max_finds_per_minute: u32 = 60, env = "EPHEMERA_MAX_FINDS_PER_MINUTE";
    /// Chat messages per second from one session (0: unlimited).
    max_messages_per_second: u32 = 5, env = "EPHEMERA_MAX_MESSAGES_PER_SECOND";
    /// Images and voice notes per minute from one session (0: unlimited).
    max_media_per_minute: u32 = 10, env = "EPHEMERA_MAX_MEDIA_PER_MINUTE";
    /// WebRTC signals per minute from one session; more get rate_limited (0: unlimited).
    max_signals_per_minute: u32 = V1_LIMITS.max_signals_per_minute, env = "EPHEMERA_MAX_SIGNALS_PER_MINUTE";
    /// Typing indicators per second from one session; more are dropped, counted (0: unlimited).
    max_typing_per_second: u32 = V1_LIMITS.max_typing_per_second, env = "EPHEMERA_MAX_TYPING_PER_SECOND";
    /// Sign-ups and deletions of the e-mail list per minute from one client key (0: unlimited).
    max_notify_requests_per_minute: u32 = 10, env = "EPHEMERA_MAX_NOTIFY_REQUESTS_PER_MINUTE";
    /// WebSocket pings and pongs per second from one client; more go unanswered and count as protocol errors (0: unlimited).
    max_control_frames_per_second: u32 = 10, env = "EPHEMERA_MAX_CONTROL_FRAMES_PER_SECOND";
    /// Reports from distinct clients within the window that ban the reported client (at least 2).
    report_ban_threshold: usize = 3, env = "EPHEMERA_REPORT_BAN_THRESHOLD";
    /// Seconds within which reports count towards a ban.
    report_window_seconds: f64 = 3600.0, env = "EPHEMERA_REPORT_WINDOW_SECONDS";
    /// Seconds of a client's first ban.
    ban_first_seconds: f64 = 600.0, env = "EPHEMERA_BAN_FIRST_SECONDS";
    /// How much longer each further ban of the same client is.
    ban_multiplier: f64 = 2.0, env = "EPHEMERA_BAN_MULTIPLIER";
    /// Longest ban, in seconds.
    ban_max_seconds: f64 = 604_800.0, env = "EPHEMERA_BAN_MAX_SECONDS";
    /// Proof-of-work difficulty (leading zero bits) every new session must solve (0: off).
    pow_difficulty_bits: u32 = 0, env = "EPHEMERA_POW_DIFFICULTY_BITS";
    /// New sessions per second past which proof of work starts by itself (0: never).
    pow_auto_threshold_per_second: f64 = 100.0, env = "EPHEMERA_POW_AUTO_THRESHOLD_PER_SECOND";
    /// Difficulty asked while the automatic threshold is passed.
    pow_auto_difficulty_bits: u32 = 16, env = "EPHEMERA_POW_AUTO_DIFFICULTY_BITS";
    /// PEM certificate chain for TLS (wss://); with tls_key_path, turns TLS on.
    tls_cert_path: String = String::new(), env = "EPHEMERA_TLS_CERT_PATH";
    /// PEM private key for TLS.
    tls_key_path: String = String::new(), env = "EPHEMERA_TLS_KEY_PATH";
    /// A MaxMind country database (.mmdb) for counts of sessions by country and continent (empty: off).
    geoip_db_path: String = String::new(), env = "EPHEMERA_GEOIP_DB_PATH";
    /// Proxies (CIDR list) whose forwarding header (client_address_header) is believed.
    trusted_proxies: Vec<String> = Vec::new(), env = "EPHEMERA_TRUSTED_PROXIES";
    /// Which header trusted proxies set: "x-forwarded-for" or "forwarded" (RFC 7239); only that one is read.
    client_address_header: AddressHeader = AddressHeader::XForwardedFor, env = "EPHEMERA_CLIENT_ADDRESS_HEADER";
    /// Bytes a client may leave unread before it is disconnected.
    session_outbox_max_bytes: usize = 8 << 20, env = "EPHEMERA_SESSION_OUTBOX_MAX_BYTES";
    /// Refused frames of any kind (every error answer, and pings past the control-frame rate) a connection may cause per minute before it is closed (1008).
    max_protocol_errors_per_minute: usize = 20, env = "EPHEMERA_MAX_PROTOCOL_ERRORS_PER_MINUTE";
    /// Unsent bytes all clients together may leave; past it, clients holding more than outbox_fair_share_bytes unread are disconnected.
    outbox_total_max_bytes: usize = 64 << 20, env = "EPHEMERA_OUTBOX_TOTAL_MAX_BYTES";
    /// Unread bytes a client may still hold while outbox_total_max_bytes is passed.
    outbox_fair_share_bytes: usize = 64 << 10, env = "EPHEMERA_OUTBOX_FAIR_SHARE_BYTES";
    /// Messages a chat may have queued before a member's sends are refused.
    pair_mailbox_capacity: usize = 256, env = "EPHEMERA_PAIR_MAILBOX_CAPACITY";
    /// Requests the matchmaker may have queued before finds get server_busy.
    matchmaker_mailbox_capacity: usize = 65_536, env = "EPHEMERA_MATCHMAKER_MAILBOX_CAPACITY";
    /// STUN URLs handed to clients for WebRTC as they are (e.g. "stun:stun.example:3478").
    ice_urls: Vec<String> = Vec::new(), env = "EPHEMERA_ICE_URLS";
    /// TURN URLs handed to clients with credentials minted per session (TURN REST scheme).
    turn_urls: Vec<String> = Vec::new(), env = "EPHEMERA_TURN_URLS";
    /// Secret shared with the TURN server (coturn: static-auth-secret); needed with turn_urls.
    turn_shared_secret: String = String::new(), env = "EPHEMERA_TURN_SHARED_SECRET";
    /// Seconds a minted TURN credential stays valid.
    turn_credential_ttl_seconds: f64 = 3600.0, env = "EPHEMERA_TURN_CREDENTIAL_TTL_SECONDS";
    /// Video through the TURN relay only, so strangers never learn each other's address.
    relay_only: bool = false, env = "EPHEMERA_RELAY_ONLY";
    /// Seconds a shutdown waits for chats to end and connections to close.
    shutdown_drain_seconds: f64 = 10.0, env = "EPHEMERA_SHUTDOWN_DRAIN_SECONDS";
    /// Seconds a connection may leave bytes unacknowledged, taking nothing, before it is closed (0: never).
    write_stall_timeout_seconds: f64 = 20.0, env = "EPHEMERA_WRITE_STALL_TIMEOUT_SECONDS";
    /// Seconds a client may take to send a request's headers, and an e-mail list request its body (slow-loris guard; at least 1).
    http_request_timeout_seconds: f64 = 10.0, env = "EPHEMERA_HTTP_REQUEST_TIMEOUT_SECONDS";
    /// HTTP worker threads (0: one per CPU core).
    workers: usize = 0, env = "EPHEMERA_WORKERS";
    /// Let a crash write a core file (it would hold chats); only for debugging.
    allow_core_dumps: bool = false, env = "EPHEMERA_ALLOW_CORE_DUMPS";
    /// Log filter: a level (off, error, warn, info, debug, trace), or comma-separated target=level directives.
    log_level: String = "info".to_owned(), env = "EPHEMERA_LOG_LEVEL";
    /// Seconds between returns of freed memory to the operating system (0: never).
    memory_trim_interval_seconds: f64 = 5.0, env = "EPHEMERA_MEMORY_TRIM_INTERVAL_SECONDS";
    /// MQTT broker to publish aggregate statistics to, mqtt://[user[:password]@]host[:port][?client_id=ID] (empty: off; no client_id: a random one).
    mqtt_url: String = String::new(), env = "EPHEMERA_MQTT_URL";
    /// MQTT topic of the statistics snapshots (JSON: online, waiting, chatting, and matches and messages in the interval).
    mqtt_topic: String = "ephemera/stats".to_owned(), env = "EPHEMERA_MQTT_TOPIC";
    /// Seconds between statistics snapshots published to mqtt_url.
    mqtt_interval_seconds: f64 = 10.0, env = "EPHEMERA_MQTT_INTERVAL_SECONDS";
    /// Redis for running several nodes as one cluster, redis://host:port/ (empty: this node alone; docs/cluster.md).
    cluster_redis_url: String = String::new(), env = "EPHEMERA_CLUSTER_REDIS_URL";
    /// The cluster's secret, 64 hex digits, the same on every node (e.g. `openssl rand -hex 32`); needed with cluster_redis_url.
    cluster_secret: String = String::new(), env = "EPHEMERA_CLUSTER_SECRET";
    /// The early-access e-mail list's SQLite file, created when missing (empty: the list is off, its form hidden, its endpoints 404).
    notify_db_path: String = String::new(), env = "EPHEMERA_NOTIFY_DB_PATH";
    /// The e-mail list's master key file, created (mode 0600) when missing; keep it apart from the database and its backups.
    notify_master_key_path: String = String::new(), env = "EPHEMERA_NOTIFY_MASTER_KEY_PATH";
    /// Topics people may sign up for (names of lowercase letters, digits, - and _); the first is the page's.
    notify_topics: Vec<String> = vec!["news".to_owned()], env = "EPHEMERA_NOTIFY_TOPICS";
}

/// The operator's commands, run instead of the server (`ephemera notify export --topic news`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// The early-access e-mail list (notify_db_path).
    #[command(subcommand)]
    Notify(NotifyCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum NotifyCommand {
    /// Print the addresses of one topic, decrypted, one a line.
    Export {
        /// The topic, one of notify_topics (or one the file still holds).
        #[arg(long)]
        topic: String,
    },
    /// Print how many addresses each topic holds, a line each (`news 2`).
    Count,
    /// Re-encrypt every address under a new key version, then drop the old key from the key file.
    RotateKey,
}

/// Which forwarding header a trusted proxy sets. One is believed, never a preference order:
/// a client could otherwise send the other one through a proxy that passes it on unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AddressHeader {
    /// `X-Forwarded-For` (with `X-Forwarded-Host` and `X-Forwarded-Proto` for the Origin check).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded` (`for=`, `host=`, `proto=`).
    Forwarded,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid settings: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("invalid setting {name}: {reason}")]
    OutOfRange {
        name: &'static str,
        reason: &'static str,
    },
    #[error("invalid setting mqtt_url: {0}")]
    MqttUrl(#[from] crate::mqtt::BrokerUrlError),
}

impl Settings {
    /// Layers defaults, the file named by `overrides.config`, then the overrides.
    pub fn load(overrides: &Overrides) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = &overrides.config {
            figment = figment.merge(Toml::file_exact(path));
        }
        let settings: Settings = figment
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let durations = [
            (
                "heartbeat_interval_seconds",
                self.heartbeat_interval_seconds,
            ),
            ("client_timeout_seconds", self.client_timeout_seconds),
            ("resume_grace_seconds", self.resume_grace_seconds),
            ("interest_timeout_seconds", self.interest_timeout_seconds),
            ("rematch_cooldown_seconds", self.rematch_cooldown_seconds),
            ("purge_interval_seconds", self.purge_interval_seconds),
            ("shutdown_drain_seconds", self.shutdown_drain_seconds),
            (
                "http_request_timeout_seconds",
                self.http_request_timeout_seconds,
            ),
            ("salt_rotation_seconds", self.salt_rotation_seconds),
            (
                "write_stall_timeout_seconds",
                self.write_stall_timeout_seconds,
            ),
            (
                "memory_trim_interval_seconds",
                self.memory_trim_interval_seconds,
            ),
            ("report_window_seconds", self.report_window_seconds),
            ("ban_first_seconds", self.ban_first_seconds),
            ("ban_max_seconds", self.ban_max_seconds),
            (
                "turn_credential_ttl_seconds",
                self.turn_credential_ttl_seconds,
            ),
            ("mqtt_interval_seconds", self.mqtt_interval_seconds),
        ];
        for (name, seconds) in durations {
            if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
                return Err(SettingsError::OutOfRange {
                    name,
                    reason: "must be a number of seconds between 0 and 1e9",
                });
            }
        }
        for (name, seconds) in [
            (
                "heartbeat_interval_seconds",
                self.heartbeat_interval_seconds,
            ),
            ("purge_interval_seconds", self.purge_interval_seconds),
        ] {
            if seconds < 0.01 {
                return Err(SettingsError::OutOfRange {
                    name,
                    reason: "must be at least 0.01 seconds",
                });
            }
        }
        if self.http_request_timeout_seconds < 1.0 {
            // actix-http times requests with a clock that ticks about every half second, so
            // shorter timeouts would refuse prompt clients too.
            return Err(SettingsError::OutOfRange {
                name: "http_request_timeout_seconds",
                reason: "must be at least 1 second",
            });
        }
        if self.max_sessions == 0 || self.max_sessions_per_client == 0 {
            return Err(SettingsError::OutOfRange {
                name: "max_sessions",
                reason: "max_sessions and max_sessions_per_client must be at least 1 (0 would turn everyone away)",
            });
        }
        if self.report_ban_threshold < 2 {
            return Err(SettingsError::OutOfRange {
                name: "report_ban_threshold",
                reason: "must be at least 2, so that nobody can ban anyone alone",
            });
        }
        if !self.ban_multiplier.is_finite() || !(1.0..=1000.0).contains(&self.ban_multiplier) {
            return Err(SettingsError::OutOfRange {
                name: "ban_multiplier",
                reason: "must be between 1 and 1000",
            });
        }
        if self.pow_difficulty_bits > 32 || self.pow_auto_difficulty_bits > 32 {
            return Err(SettingsError::OutOfRange {
                name: "pow_difficulty_bits",
                reason: "must be at most 32",
            });
        }
        if self.tls_cert_path.is_empty() != self.tls_key_path.is_empty() {
            return Err(SettingsError::OutOfRange {
                name: "tls_cert_path",
                reason: "tls_cert_path and tls_key_path go together",
            });
        }
        if self.trusted_proxy_networks().is_err() {
            return Err(SettingsError::OutOfRange {
                name: "trusted_proxies",
                reason: "must be a list of addresses or CIDR networks",
            });
        }
        if self.turn_urls.is_empty() != self.turn_shared_secret.is_empty() {
            return Err(SettingsError::OutOfRange {
                name: "turn_urls",
                reason: "turn_urls and turn_shared_secret go together",
            });
        }
        if self.relay_only && self.turn_urls.is_empty() {
            return Err(SettingsError::OutOfRange {
                name: "relay_only",
                reason: "needs a TURN server: set turn_urls and turn_shared_secret",
            });
        }
        if self.max_frame_bytes < 1024 {
            return Err(SettingsError::OutOfRange {
                name: "max_frame_bytes",
                reason: "must be at least 1024",
            });
        }
        self.mqtt_publishing()?;
        self.validate_notify()?;
        self.cluster()?;
        Ok(())
    }

    /// How this node joins a cluster; `None` when `cluster_redis_url` is empty.
    pub fn cluster(&self) -> Result<Option<ephemera_actors::node::ClusterSettings>, SettingsError> {
        if self.cluster_redis_url.is_empty() {
            return Ok(None);
        }
        let scheme_ok = ["redis://", "rediss://", "unix://"]
            .iter()
            .any(|scheme| self.cluster_redis_url.starts_with(scheme));
        if !scheme_ok {
            return Err(SettingsError::OutOfRange {
                name: "cluster_redis_url",
                reason: "must be a redis:// (or rediss://, unix://) URL",
            });
        }
        if ephemera_actors::cluster::secret::ClusterKeys::from_hex(&self.cluster_secret).is_err() {
            return Err(SettingsError::OutOfRange {
                name: "cluster_secret",
                reason:
                    "must be 64 hexadecimal digits, the same on every node (openssl rand -hex 32)",
            });
        }
        Ok(Some(ephemera_actors::node::ClusterSettings {
            redis_url: self.cluster_redis_url.clone(),
            secret_hex: zeroize::Zeroizing::new(self.cluster_secret.clone()),
        }))
    }

    fn validate_notify(&self) -> Result<(), SettingsError> {
        let topic_ok = |topic: &String| {
            (1..=32).contains(&topic.len())
                && topic
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        let mut unique = self.notify_topics.clone();
        unique.sort();
        unique.dedup();
        if self.notify_topics.is_empty()
            || self.notify_topics.len() > 16
            || unique.len() != self.notify_topics.len()
            || !self.notify_topics.iter().all(topic_ok)
        {
            return Err(SettingsError::OutOfRange {
                name: "notify_topics",
                reason:
                    "must be 1 to 16 distinct names of 1 to 32 lowercase letters, digits, - or _",
            });
        }
        if self.notify_db_path.is_empty() {
            return Ok(());
        }
        if self.notify_master_key_path.is_empty() {
            return Err(SettingsError::OutOfRange {
                name: "notify_master_key_path",
                reason: "is needed with notify_db_path: a file apart from the database (it is created, mode 0600, when missing)",
            });
        }
        if self.notify_master_key_path == self.notify_db_path {
            return Err(SettingsError::OutOfRange {
                name: "notify_master_key_path",
                reason: "must not be the database itself",
            });
        }
        Ok(())
    }

    /// What to publish to the MQTT broker, and where; `None` when `mqtt_url` is empty.
    pub fn mqtt_publishing(&self) -> Result<Option<crate::mqtt::Publishing>, SettingsError> {
        if self.mqtt_url.is_empty() {
            return Ok(None);
        }
        let broker = crate::mqtt::BrokerUrl::parse(&self.mqtt_url)?;
        // A topic to publish to is a name: wildcards are for subscribers, and MQTT bounds its
        // length by a 16-bit prefix.
        let topic = &self.mqtt_topic;
        if topic.is_empty() || topic.len() > 65_535 || topic.contains(['+', '#', '\0']) {
            return Err(SettingsError::OutOfRange {
                name: "mqtt_topic",
                reason: "must be a topic name (not empty, without + or #)",
            });
        }
        if self.mqtt_interval_seconds < 0.1 {
            return Err(SettingsError::OutOfRange {
                name: "mqtt_interval_seconds",
                reason: "must be at least 0.1 seconds",
            });
        }
        Ok(Some(crate::mqtt::Publishing {
            broker,
            topic: topic.clone(),
            interval: Self::duration(self.mqtt_interval_seconds),
        }))
    }

    /// `trusted_proxies` parsed; a bare address is a network of one.
    pub fn trusted_proxy_networks(&self) -> Result<Vec<ipnet::IpNet>, ipnet::AddrParseError> {
        self.trusted_proxies
            .iter()
            .map(|entry| {
                entry.parse::<ipnet::IpNet>().or_else(|err| {
                    entry
                        .parse::<std::net::IpAddr>()
                        .map(ipnet::IpNet::from)
                        .map_err(|_| err)
                })
            })
            .collect()
    }

    pub fn tls_enabled(&self) -> bool {
        !self.tls_cert_path.is_empty()
    }

    pub fn duration(seconds: f64) -> Duration {
        Duration::from_secs_f64(seconds)
    }

    /// The actors' view of these settings.
    pub fn chat_config(&self) -> ephemera_actors::ChatConfig {
        use ephemera_actors::protocol::Limits;
        ephemera_actors::ChatConfig {
            limits: Limits {
                max_text_chars: self.max_text_chars,
                max_nick_chars: self.max_nick_chars,
                max_interests: self.max_interests,
                max_interest_chars: self.max_interest_chars,
                max_media_bytes: self.max_media_bytes,
                max_signal_bytes: self.max_signal_bytes,
                max_frame_bytes: self.max_frame_bytes,
                event_log_max_events: self.event_log_max_events,
                event_log_max_bytes: self.event_log_max_bytes,
                media_mime_types: V1_LIMITS.media_mime_types,
                max_signals_per_minute: self.max_signals_per_minute,
                max_typing_per_second: self.max_typing_per_second,
            },
            heartbeat_interval: Self::duration(self.heartbeat_interval_seconds),
            client_timeout: Self::duration(self.client_timeout_seconds),
            resume_grace: Self::duration(self.resume_grace_seconds),
            interest_timeout: Self::duration(self.interest_timeout_seconds),
            rematch_cooldown: Self::duration(self.rematch_cooldown_seconds),
            purge_interval: Self::duration(self.purge_interval_seconds),
            session_outbox_max_bytes: self.session_outbox_max_bytes,
            outbox_total_max_bytes: self.outbox_total_max_bytes,
            max_sessions: self.max_sessions,
            max_sessions_per_client: self.max_sessions_per_client,
            salt_rotation: Self::duration(self.salt_rotation_seconds),
            rate_limits: ephemera_actors::rate_limits::RateLimitConfig {
                connections_per_minute: self.max_connections_per_minute,
                finds_per_minute: self.max_finds_per_minute,
                messages_per_second: self.max_messages_per_second,
                media_per_minute: self.max_media_per_minute,
                control_frames_per_second: self.max_control_frames_per_second,
                notify_requests_per_minute: self.max_notify_requests_per_minute,
            },
            pow_difficulty_bits: self.pow_difficulty_bits,
            pow_auto_threshold_per_second: self.pow_auto_threshold_per_second.max(0.0),
            pow_auto_difficulty_bits: self.pow_auto_difficulty_bits,
            ban_policy: ephemera_actors::abuse::BanPolicy {
                threshold: self.report_ban_threshold,
                window: Self::duration(self.report_window_seconds),
                first_ban: Self::duration(self.ban_first_seconds),
                multiplier: self.ban_multiplier,
                max_ban: Self::duration(self.ban_max_seconds),
            },
            max_protocol_errors_per_minute: self.max_protocol_errors_per_minute,
            pair_mailbox_capacity: self.pair_mailbox_capacity.max(2),
            matchmaker_mailbox_capacity: self.matchmaker_mailbox_capacity.max(1),
            outbox_fair_share_bytes: self.outbox_fair_share_bytes,
            ice: ephemera_actors::ice::IceConfig {
                stun_urls: self.ice_urls.clone(),
                turn_urls: self.turn_urls.clone(),
                turn_shared_secret: zeroize::Zeroizing::new(self.turn_shared_secret.clone()),
                turn_credential_ttl: Self::duration(self.turn_credential_ttl_seconds),
                relay_only: self.relay_only,
            },
        }
    }

    /// The example settings file: every setting, its default and its doc line.
    pub fn example_toml() -> String {
        let defaults = toml_table(&Settings::default());
        let mut out = String::from(
            "# Ephemera settings, with their defaults. Every key is also the flag --key-with-dashes\n\
             # and the environment variable EPHEMERA_KEY_IN_CAPITALS; flags win over variables,\n\
             # variables over this file. Durations in seconds accept fractions (0.5).\n",
        );
        for (name, _, doc) in SETTING_NAMES {
            let value = defaults
                .get(*name)
                .map(|v| v.to_string())
                .unwrap_or_default();
            out.push_str(&format!("\n#{doc}\n{name} = {value}\n"));
        }
        out
    }
}

fn toml_table(settings: &Settings) -> toml::Table {
    // A derived Serialize of strings, numbers and lists always yields a TOML table.
    toml::Table::try_from(settings).expect("settings serialise to a TOML table")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_the_conventional_variable_name() {
        for (name, env, _) in SETTING_NAMES {
            assert_eq!(*env, format!("EPHEMERA_{}", name.to_uppercase()));
        }
    }

    #[test]
    fn flags_beat_the_file_and_fractions_are_accepted() {
        let dir = std::env::temp_dir().join(format!("ephemera-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("settings.toml");
        std::fs::write(
            &file,
            "resume_grace_seconds = 0.5\nmax_text_chars = 100\nallowed_origins = [\"https://a.example\"]\n",
        )
        .unwrap();
        let overrides = Overrides::try_parse_from([
            "ephemera",
            "--config",
            file.to_str().unwrap(),
            "--max-text-chars",
            "50",
            "--allowed-origins",
            "https://b.example,https://c.example",
        ])
        .unwrap();
        let settings = Settings::load(&overrides).unwrap();
        assert_eq!(settings.resume_grace_seconds, 0.5);
        assert_eq!(settings.max_text_chars, 50);
        assert_eq!(
            settings.allowed_origins,
            vec!["https://b.example", "https://c.example"]
        );
        assert_eq!(settings.heartbeat_interval_seconds, 15.0);
    }

    #[test]
    fn environment_variables_beat_the_file_and_flags_beat_both() {
        let dir = std::env::temp_dir().join(format!("ephemera-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("settings.toml");
        std::fs::write(&file, "max_nick_chars = 9\nmax_interests = 9\n").unwrap();
        // Only this test sets these variables, and clap reads them during the parse below.
        std::env::set_var("EPHEMERA_MAX_NICK_CHARS", "7");
        std::env::set_var("EPHEMERA_MAX_INTERESTS", "7");
        let overrides = Overrides::try_parse_from([
            "ephemera",
            "--config",
            file.to_str().unwrap(),
            "--max-interests",
            "5",
        ])
        .unwrap();
        std::env::remove_var("EPHEMERA_MAX_NICK_CHARS");
        std::env::remove_var("EPHEMERA_MAX_INTERESTS");
        let settings = Settings::load(&overrides).unwrap();
        assert_eq!(settings.max_nick_chars, 7);
        assert_eq!(settings.max_interests, 5);
    }

    #[test]
    fn the_bench_profile_lifts_abuse_protection_and_nothing_else() {
        let overrides = Overrides {
            config: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/ops/bench.toml").into()),
            ..Overrides::default()
        };
        let bench = Settings::load(&overrides).unwrap();
        assert_eq!(bench.max_connections_per_minute, 0);
        assert_eq!(bench.max_finds_per_minute, 0);
        assert_eq!(bench.max_messages_per_second, 0);
        assert_eq!(bench.max_media_per_minute, 0);
        assert_eq!(bench.pow_auto_threshold_per_second, 0.0);
        let defaults = Settings::default();
        assert_eq!(bench.max_frame_bytes, defaults.max_frame_bytes);
        assert_eq!(
            bench.session_outbox_max_bytes,
            defaults.session_outbox_max_bytes
        );
        assert_eq!(bench.resume_grace_seconds, defaults.resume_grace_seconds);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = std::env::temp_dir().join(format!("ephemera-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "resume_grace = 3\n").unwrap();
        let overrides = Overrides {
            config: Some(file),
            ..Overrides::default()
        };
        assert!(Settings::load(&overrides).is_err());
        let overrides = Overrides {
            client_timeout_seconds: Some(-1.0),
            ..Overrides::default()
        };
        assert!(Settings::load(&overrides).is_err());
        let no_sessions = Overrides {
            max_sessions: Some(0),
            ..Overrides::default()
        };
        let error = Settings::load(&no_sessions).unwrap_err().to_string();
        assert!(error.contains("max_sessions"), "{error}");
    }

    #[test]
    fn mqtt_is_off_by_default_and_a_bad_url_topic_or_interval_is_refused_at_load() {
        assert!(Settings::load(&Overrides::default())
            .unwrap()
            .mqtt_publishing()
            .unwrap()
            .is_none());
        let with = |url: &str, topic: &str, interval: f64| Overrides {
            mqtt_url: Some(url.into()),
            mqtt_topic: Some(topic.into()),
            mqtt_interval_seconds: Some(interval),
            ..Overrides::default()
        };
        let good = Settings::load(&with("mqtt://127.0.0.1:1883", "ephemera/stats", 10.0)).unwrap();
        assert!(good.mqtt_publishing().unwrap().is_some());
        let refused = |overrides| Settings::load(&overrides).unwrap_err().to_string();
        let tls = refused(with("mqtts://user:hunter2@broker.example", "s", 10.0));
        assert!(tls.contains("mqtt_url") && tls.contains("TLS"), "{tls}");
        assert!(!tls.contains("hunter2"), "{tls}");
        assert!(refused(with("http://broker.example", "s", 10.0)).contains("scheme"));
        assert!(refused(with("mqtt://broker.example", "stats/#", 10.0)).contains("mqtt_topic"));
        assert!(refused(with("mqtt://broker.example", "", 10.0)).contains("mqtt_topic"));
        let fast = refused(with("mqtt://broker.example", "s", 0.01));
        assert!(fast.contains("mqtt_interval_seconds"), "{fast}");
    }

    #[test]
    fn the_example_file_lists_every_setting_with_its_default() {
        let example = include_str!("../ops/config.example.toml");
        assert_eq!(
            example,
            Settings::example_toml(),
            "ops/config.example.toml is stale; regenerate it with `ephemera --print-example-config`"
        );
        let parsed: Settings = Figment::from(Toml::string(example)).extract().unwrap();
        assert_eq!(parsed.listen_addr, Settings::default().listen_addr);
    }
}
