//! Integration tests: each starts the real server on 127.0.0.1:0 and speaks real WebSocket.

mod helpers;

mod chat;
mod cluster;
mod errors;
mod hardening;
mod lifecycle;
mod load;
mod matching;
mod memory;
mod metrics;
mod mqtt;
mod notify;
mod one_client;
mod page;
mod pow;
mod privacy;
mod prometheus;
mod rate_limits;
mod raw;
mod resume;
mod tls;
mod video;
