//! Who the client of a request is: its address and whether it came over HTTPS.
//!
//! Forwarding headers are believed only from those the operator trusts: the shortlink
//! proxy, which vouches for the address and scheme it saw with the internal secret
//! (whatever address it connects from), and the peers in `control.trusted_proxies`,
//! whose `X-Forwarded-For` and `X-Forwarded-Proto` name the client. Anyone else is
//! the client, over plain HTTP.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::ingest::constant_time_eq;
use crate::state::AppState;

use shortlink_core::hop::{
    CLIENT_IP_HEADER as HOP_CLIENT_IP_HEADER, CLIENT_PROTO_HEADER as HOP_CLIENT_PROTO_HEADER,
    SECRET_HEADER as HOP_SECRET_HEADER, forwarded_elements,
};

/// A request's client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Its address, if known (requests driven in-process have none).
    pub ip: Option<IpAddr>,
    /// Whether it reached the edge over HTTPS (then cookies are `Secure`).
    pub https: bool,
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The client of the request whose head is `parts`.
pub fn client_of(state: &AppState, parts: &Parts) -> Client {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    resolve(
        peer,
        &parts.headers,
        state.internal_secret(),
        &state.config().trusted_proxies,
    )
}

/// [`client_of`], from its parts.
pub fn resolve(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    secret: Option<&str>,
    trusted: &[IpAddr],
) -> Client {
    let vouched = secret.is_some_and(|secret| {
        headers
            .get(HOP_SECRET_HEADER)
            .is_some_and(|given| constant_time_eq(given.as_bytes(), secret.as_bytes()))
    });
    if vouched {
        return Client {
            ip: header_text(headers, HOP_CLIENT_IP_HEADER)
                .and_then(|ip| ip.parse().ok())
                .or(peer),
            https: header_text(headers, HOP_CLIENT_PROTO_HEADER)
                .is_some_and(|p| p.eq_ignore_ascii_case("https")),
        };
    }
    let Some(peer_ip) = peer.filter(|ip| trusted.contains(ip)) else {
        return Client {
            ip: peer,
            https: false,
        };
    };
    // Behind a trusted proxy: the last hop that is not itself trusted is the client, from
    // `X-Forwarded-For`, else from `Forwarded` (RFC 7239).
    let untrusted = |ip: &IpAddr| !trusted.contains(ip);
    let x_forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    let forwarded = || {
        headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(forwarded_elements)
            .collect::<Vec<_>>()
    };
    let ip = if headers.contains_key("x-forwarded-for") {
        x_forwarded.iter().rev().copied().find(untrusted)
    } else {
        forwarded()
            .iter()
            .rev()
            .filter_map(|element| element.for_ip)
            .find(untrusted)
    }
    .unwrap_or(peer_ip);
    let proto = match header_text(headers, "x-forwarded-proto") {
        Some(value) => value.rsplit(',').next().map(|p| p.trim().to_owned()),
        None => forwarded()
            .last()
            .and_then(|element| element.proto.map(str::to_owned)),
    };
    Client {
        ip: Some(ip),
        https: proto.is_some_and(|p| p.eq_ignore_ascii_case("https")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_hops() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let lb: IpAddr = "10.0.0.9".parse().unwrap();
        let fake = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ]);
        #[track_caller]
        fn check(client: Client, ip: &str, https: bool) {
            assert_eq!(client.ip, Some(ip.parse().unwrap()));
            assert_eq!(client.https, https);
        }
        // From loopback, without the secret: the socket is the client.
        check(
            resolve(Some(peer), &fake, Some("s3"), &[]),
            "127.0.0.1",
            false,
        );
        // A configured trusted proxy: its forwarding headers count.
        check(
            resolve(Some(lb), &fake, Some("s3"), &[lb]),
            "203.0.113.7",
            true,
        );
        // `Forwarded` (RFC 7239) when `X-Forwarded-For` is absent.
        let standard = headers(&[(
            "forwarded",
            r#"for="[2001:db8::7]:4711";proto=https, for=10.0.0.8"#,
        )]);
        let inner: IpAddr = "10.0.0.8".parse().unwrap();
        check(
            resolve(Some(lb), &standard, Some("s3"), &[lb, inner]),
            "2001:db8::7",
            false,
        );
        let standard = headers(&[("forwarded", "for=192.0.2.1;proto=https")]);
        check(
            resolve(Some(lb), &standard, Some("s3"), &[lb]),
            "192.0.2.1",
            true,
        );
        check(
            resolve(Some(peer), &standard, Some("s3"), &[lb]),
            "127.0.0.1",
            false,
        );
        // The shortlink proxy vouches with the secret, from any address.
        let vouched = headers(&[
            (HOP_SECRET_HEADER, "s3"),
            (HOP_CLIENT_IP_HEADER, "198.51.100.4"),
            (HOP_CLIENT_PROTO_HEADER, "https"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        check(
            resolve(Some(peer), &vouched, Some("s3"), &[]),
            "198.51.100.4",
            true,
        );
        // A wrong secret vouches for nothing.
        check(
            resolve(Some(peer), &vouched, Some("other"), &[]),
            "127.0.0.1",
            false,
        );
        check(resolve(Some(peer), &vouched, None, &[]), "127.0.0.1", false);
        // Trusted hops in the chain are skipped.
        let chain = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.7, 10.0.0.9")]);
        check(resolve(Some(lb), &chain, None, &[lb]), "203.0.113.7", false);
    }
}
