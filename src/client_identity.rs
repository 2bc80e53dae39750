//! The first thing every request meets: the client's address (the peer's, or the forwarded
//! one from a trusted proxy) is turned into its client keys, which go into the request's
//! extensions, and the address is then overwritten in the request head. actix-http recycles
//! request heads through a per-thread pool without clearing the peer address, so without this
//! the last client's address would stay in memory long after it left.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest};
use ephemera_actors::client_key::ClientKeys;

use crate::startup::AppState;

/// Derives the client keys and forgets the address. Wrap it around the whole app.
pub async fn forget_client_address(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(state) = req.app_data::<web::Data<AppState>>().cloned() {
        let keys = state
            .hub
            .client_keys
            .client_keys(client_ip(&req, &state.trusted_proxies));
        req.extensions_mut().insert(keys);
    }
    // The largest variant, so every byte of the old address is overwritten.
    req.head_mut().peer_addr = Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0));
    next.call(req).await
}

/// The client keys `forget_client_address` derived for this request.
pub fn client_keys(req: &HttpRequest) -> Option<ClientKeys> {
    req.extensions().get::<ClientKeys>().copied()
}

/// The client's address: the peer's, unless the peer is a trusted proxy, in which case the
/// nearest address in X-Forwarded-For (or Forwarded `for=`) that is not itself a trusted
/// proxy. Used only to derive a client key, never stored.
fn client_ip(req: &ServiceRequest, trusted: &[ipnet::IpNet]) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|addr| addr.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let headers = req.headers();
    let forwarded_for = headers
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let forwarded = headers
        .get_all("forwarded")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split([',', ';']))
        .filter_map(|part| part.trim().strip_prefix("for="))
        .map(|node| forwarded_node_address(node).to_owned())
        .collect::<Vec<_>>();
    let chain = if forwarded_for.is_empty() {
        forwarded
    } else {
        forwarded_for
    };
    chain
        .iter()
        .rev()
        .filter_map(|hop| hop.parse::<IpAddr>().ok())
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

/// The address part of a Forwarded `for=` node: `"[2001:db8::1]:4711"`, `192.0.2.1:80` or a
/// bare address (an obfuscated node simply fails to parse later and is skipped).
fn forwarded_node_address(node: &str) -> &str {
    let node = node.trim_matches('"');
    if let Some(bracketed) = node.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or_default();
    }
    match node.split_once(':') {
        Some((v4, port)) if !port.contains(':') => v4,
        _ => node,
    }
}
