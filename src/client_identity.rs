//! The first thing every request meets: the client's address (the peer's, or the one a trusted
//! proxy forwarded) is turned into its client keys, which go into the request's extensions,
//! and the address is then overwritten in the request head. actix-http recycles request heads
//! through a per-thread pool without clearing the peer address, so without this the last
//! client's address would stay in memory long after it left. The Origin check of /ws lives
//! here too, since it must believe forwarded headers exactly as far as this does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest};
use ephemera_actors::client_key::ClientKeys;

use crate::settings::AddressHeader;
use crate::state::AppState;

/// Set on requests that came through a trusted proxy, so later checks may believe its headers.
#[derive(Debug, Clone, Copy)]
struct ViaTrustedProxy;

/// Derives the client keys and forgets the address. Wrap it around the whole app.
pub async fn forget_client_address(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(state) = req.app_data::<web::Data<AppState>>().cloned() {
        let peer = req
            .peer_addr()
            .map(|addr| addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let trusted = is_trusted(&peer, &state.trusted_proxies);
        let ip = if trusted {
            forwarded_client(
                peer,
                req.headers(),
                state.client_address_header,
                &state.trusted_proxies,
            )
        } else {
            peer
        };
        let mut keys = state.hub.client_keys_for(ip);
        if let Some(geo) = &state.geo {
            keys.region = geo.region_of(ip);
        }
        req.extensions_mut().insert(keys);
        if trusted {
            req.extensions_mut().insert(ViaTrustedProxy);
        }
    }
    // The largest variant, so every byte of the old address is overwritten.
    req.head_mut().peer_addr = Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0));
    next.call(req).await
}

/// The client keys `forget_client_address` derived for this request.
pub fn client_keys(req: &HttpRequest) -> Option<ClientKeys> {
    req.extensions().get::<ClientKeys>().cloned()
}

fn is_trusted(ip: &IpAddr, trusted: &[ipnet::IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(ip))
}

/// The client behind a trusted peer: the chain of the believed header is walked from the
/// right (the hop nearest to us), past trusted proxies, to the first hop that is not one. A
/// hop that cannot be read (`unknown`, an obfuscated `_name`, garbage) ends the walk at the
/// last address known, so nobody can choose the key they are counted under by sending a
/// header of their own through the proxy.
fn forwarded_client(
    peer: IpAddr,
    headers: &HeaderMap,
    header: AddressHeader,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let hops = forwarded_hops(headers, header);
    let mut client = peer;
    for hop in hops.iter().rev() {
        if !is_trusted(&client, trusted) {
            break;
        }
        match hop {
            Some(ip) => client = *ip,
            None => break,
        }
    }
    client
}

/// The hops of the believed header, left to right, each an address or `None` if unreadable.
fn forwarded_hops(headers: &HeaderMap, header: AddressHeader) -> Vec<Option<IpAddr>> {
    let name = match header {
        AddressHeader::XForwardedFor => "x-forwarded-for",
        AddressHeader::Forwarded => "forwarded",
    };
    let mut hops = Vec::new();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else {
            // A value that is not text cannot be walked past.
            hops.push(None);
            continue;
        };
        for element in value.split(',') {
            let hop = match header {
                AddressHeader::XForwardedFor => parse_node(element),
                AddressHeader::Forwarded => forwarded_param(element, "for").and_then(parse_node),
            };
            hops.push(hop);
        }
    }
    hops
}

/// The value of parameter `name` in one `Forwarded` element (`for=…;proto=…`), unquoted.
fn forwarded_param<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"'))
    })
}

/// One node: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:4711`. Anything else (`unknown`, `_hidden`) is unreadable.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Some(bracketed) = node.strip_prefix('[') {
        let (v6, rest) = bracketed.split_once(']')?;
        let port_ok = rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port);
        return port_ok.then(|| v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6))?;
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    let (v4, port) = node.split_once(':')?;
    is_port(port)
        .then(|| v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4))
        .flatten()
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Browsers always send Origin; a page on another site must not open sockets here. Allowed:
/// the configured origins, the server's own origin (the Host the request was sent to, or the
/// host a trusted proxy forwarded), and no Origin at all (only non-browser clients omit it).
pub fn origin_allowed(req: &HttpRequest, state: &AppState) -> bool {
    let Some(origin) = req.headers().get("origin") else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if state
        .allowed_origins
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let via_proxy = req.extensions().get::<ViaTrustedProxy>().is_some();
    let forwarded_host = via_proxy
        .then(|| forwarded_host(req.headers(), state.client_address_header))
        .flatten();
    let host = forwarded_host.or_else(|| {
        req.headers()
            .get("host")
            .and_then(|host| host.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
    });
    let Some(host) = host else {
        return false;
    };
    // Either scheme: behind a TLS-terminating proxy the page is https while this hop is http.
    ["http://", "https://"].iter().any(|scheme| {
        origin
            .strip_prefix(scheme)
            .is_some_and(|rest| rest.eq_ignore_ascii_case(&host))
    })
}

/// The host a trusted proxy says the client asked for: the nearest (rightmost) value.
fn forwarded_host(headers: &HeaderMap, header: AddressHeader) -> Option<String> {
    match header {
        AddressHeader::XForwardedFor => headers
            .get_all("x-forwarded-host")
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .last()
            .map(|host| host.trim().to_owned()),
        AddressHeader::Forwarded => headers
            .get_all("forwarded")
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|element| forwarded_param(element, "host"))
            .last()
            .map(str::to_owned),
    }
    .filter(|host| !host.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    fn proxies() -> Vec<ipnet::IpNet> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    fn walk(header: AddressHeader, pairs: &[(&'static str, &'static str)]) -> IpAddr {
        forwarded_client(ip("10.0.0.1"), &headers(pairs), header, &proxies())
    }

    #[test]
    fn nodes_parse_with_and_without_ports() {
        assert_eq!(parse_node("192.0.2.1"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node(" 192.0.2.1:4711 "), Some(ip("192.0.2.1")));
        assert_eq!(parse_node("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(
            parse_node("\"[2001:db8::1]:4711\""),
            Some(ip("2001:db8::1"))
        );
        for unreadable in [
            "unknown",
            "_hidden",
            "",
            "1.2.3.4:x",
            "[::1]x",
            "1.2.3.4:123456",
        ] {
            assert_eq!(parse_node(unreadable), None, "{unreadable}");
        }
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let header = AddressHeader::XForwardedFor;
        assert_eq!(
            walk(
                header,
                &[("x-forwarded-for", "198.51.100.7, 203.0.113.9, 10.0.0.5")]
            ),
            ip("203.0.113.9"),
            "what the client wrote to the left of its own address is ignored"
        );
        assert_eq!(
            walk(header, &[("x-forwarded-for", "203.0.113.9:5555")]),
            ip("203.0.113.9")
        );
        assert_eq!(
            walk(
                header,
                &[
                    ("x-forwarded-for", "198.51.100.7"),
                    ("x-forwarded-for", "203.0.113.9")
                ]
            ),
            ip("203.0.113.9"),
            "several header lines are one list"
        );
    }

    #[test]
    fn an_unreadable_hop_ends_the_walk_at_the_last_known_address() {
        let header = AddressHeader::XForwardedFor;
        for chain in [
            "198.51.100.7, unknown",
            "198.51.100.7, _hidden",
            "198.51.100.7, 1.2.3",
        ] {
            let mut map = HeaderMap::new();
            map.insert(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(chain).unwrap(),
            );
            assert_eq!(
                forwarded_client(ip("10.0.0.1"), &map, header, &proxies()),
                ip("10.0.0.1"),
                "{chain}: the hop the client appended cannot be walked past"
            );
        }
    }

    #[test]
    fn only_the_configured_header_is_believed() {
        let both = [
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=203.0.113.9;proto=https"),
        ];
        assert_eq!(walk(AddressHeader::Forwarded, &both), ip("203.0.113.9"));
        assert_eq!(
            walk(AddressHeader::XForwardedFor, &both),
            ip("198.51.100.7")
        );
        assert_eq!(
            walk(
                AddressHeader::Forwarded,
                &[("forwarded", "for=198.51.100.7, for=\"[2001:db8::1]:80\"")]
            ),
            ip("2001:db8::1")
        );
        assert_eq!(
            walk(
                AddressHeader::Forwarded,
                &[("forwarded", "for=198.51.100.7, proto=http")]
            ),
            ip("10.0.0.1"),
            "an element without for= is unreadable"
        );
    }

    #[test]
    fn the_forwarded_host_is_the_nearest_one() {
        let map = headers(&[("x-forwarded-host", "evil.example, chat.example")]);
        assert_eq!(
            forwarded_host(&map, AddressHeader::XForwardedFor).as_deref(),
            Some("chat.example")
        );
        let map = headers(&[("forwarded", "host=chat.example;proto=https")]);
        assert_eq!(
            forwarded_host(&map, AddressHeader::Forwarded).as_deref(),
            Some("chat.example")
        );
        assert_eq!(forwarded_host(&map, AddressHeader::XForwardedFor), None);
    }
}
