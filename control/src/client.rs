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
    ForwardedHeaders, SECRET_HEADER as HOP_SECRET_HEADER, forwarded_by,
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
        state.config().forwarded_headers,
    )
}

/// [`client_of`], from its parts.
pub fn resolve(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    secret: Option<&str>,
    trusted: &[IpAddr],
    family: ForwardedHeaders,
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
    // Behind a trusted proxy: the nearest hop that is not itself trusted is the client,
    // from the header family it writes (the last line: the one it added).
    let last = |name: &'static str| {
        headers
            .get_all(name)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
    };
    let (ip, https) = forwarded_by(family, last, |ip| trusted.contains(ip));
    Client {
        ip: Some(ip.unwrap_or(peer_ip)),
        https,
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
            resolve(
                Some(peer),
                &fake,
                Some("s3"),
                &[],
                ForwardedHeaders::XForwarded,
            ),
            "127.0.0.1",
            false,
        );
        // A configured trusted proxy: its forwarding headers count.
        check(
            resolve(
                Some(lb),
                &fake,
                Some("s3"),
                &[lb],
                ForwardedHeaders::XForwarded,
            ),
            "203.0.113.7",
            true,
        );
        // A proxy that writes `Forwarded` (RFC 7239): only that family is believed.
        let standard = headers(&[
            (
                "forwarded",
                r#"for="[2001:db8::7]:4711";proto=https, for=10.0.0.8"#,
            ),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ]);
        let inner: IpAddr = "10.0.0.8".parse().unwrap();
        let rfc = ForwardedHeaders::Forwarded;
        check(
            resolve(Some(lb), &standard, Some("s3"), &[lb, inner], rfc),
            "2001:db8::7",
            false,
        );
        // The X-Forwarded family is ignored from it, and the other way round.
        check(
            resolve(
                Some(lb),
                &standard,
                Some("s3"),
                &[lb],
                ForwardedHeaders::XForwarded,
            ),
            "6.6.6.6",
            true,
        );
        let standard = headers(&[("forwarded", "for=192.0.2.1;proto=https")]);
        check(
            resolve(Some(lb), &standard, Some("s3"), &[lb], rfc),
            "192.0.2.1",
            true,
        );
        check(
            resolve(Some(peer), &standard, Some("s3"), &[lb], rfc),
            "127.0.0.1",
            false,
        );
        // An element naming no address ends the walk: what the client wrote before it
        // does not count.
        let hidden = headers(&[("forwarded", "for=6.6.6.6, for=unknown")]);
        check(
            resolve(Some(lb), &hidden, Some("s3"), &[lb], rfc),
            "10.0.0.9",
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
            resolve(
                Some(peer),
                &vouched,
                Some("s3"),
                &[],
                ForwardedHeaders::XForwarded,
            ),
            "198.51.100.4",
            true,
        );
        // A wrong secret vouches for nothing.
        check(
            resolve(
                Some(peer),
                &vouched,
                Some("other"),
                &[],
                ForwardedHeaders::XForwarded,
            ),
            "127.0.0.1",
            false,
        );
        check(
            resolve(
                Some(peer),
                &vouched,
                None,
                &[],
                ForwardedHeaders::XForwarded,
            ),
            "127.0.0.1",
            false,
        );
        // Trusted hops in the chain are skipped.
        let chain = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.7, 10.0.0.9")]);
        check(
            resolve(Some(lb), &chain, None, &[lb], ForwardedHeaders::XForwarded),
            "203.0.113.7",
            false,
        );
    }
}
