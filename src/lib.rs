//! Ephemera's server: settings, start-up, the HTTP routes and the WebSocket transport around
//! the chat core in the `ephemera-actors` crate.
//!
//! Layout:
//! - `client_identity`: turns each request's address into client keys and forgets it; the
//!   forwarded-header walk and the Origin check.
//! - `settings`: every setting, layered from defaults, a TOML file, variables and flags.
//! - `startup`: builds and runs the server, and drains it on shutdown.
//! - `state`: `AppState`, what every request handler is handed.
//! - `socket_watch`: ends connections whose peer stopped reading (stalled writes, cut-offs).
//! - `ws`: the /ws upgrade and the socket adapter for session actors: a bounded frame reader
//!   (`ws/reader.rs`) and a cuttable writer (`ws/writer.rs`).
//! - `hardening`: security headers, and core dumps off.
//! - `memory`: hands freed memory back to the operating system on a timer.
//! - `notify`: the optional early-access e-mail list (`notify_db_path`), encrypted at rest,
//!   and the operator's `ephemera notify` commands.
//! - `mqtt`: optional publishing of the aggregate statistics to an MQTT broker (`mqtt_url`).
//! - `privacy_page`: /privacy, generated from the running settings.
//! - `routes`: /healthz, /readyz, /stats, /metrics.
//! - `notify_routes`: the e-mail list's endpoints, /api/notify and /api/notify/delete.
//! - `static_files`: the embedded web page.
//! - `telemetry`: logging and the Prometheus recorder.
//! - `wiping_allocator`: the global allocator that zeroes every block it frees.

pub mod client_identity;
pub mod geo;
pub mod hardening;
pub mod memory;
pub mod mqtt;
pub mod notify;
pub mod notify_routes;
pub mod privacy_page;
pub mod routes;
pub mod settings;
pub mod socket_watch;
pub mod startup;
pub mod state;
pub mod static_files;
pub mod telemetry;
pub mod wiping_allocator;
pub mod ws;
