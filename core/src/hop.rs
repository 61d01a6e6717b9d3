//! The headers between the proxy and the control plane, named once for both.
//!
//! The proxy sets them on every request it forwards (and strips client-sent copies): the
//! internal secret vouches for the client's address and scheme as the proxy saw them.
//! Click batches carry the secret the same way.

/// The internal secret shared by proxies and control planes.
pub const SECRET_HEADER: &str = "x-shortlink-internal-secret";
/// The client's address as the proxy saw it.
pub const CLIENT_IP_HEADER: &str = "x-shortlink-client-ip";
/// The scheme the client used at the proxy (`http` or `https`).
pub const CLIENT_PROTO_HEADER: &str = "x-shortlink-client-proto";

/// Which forwarding headers a trusted proxy writes, and so which are believed from it
/// (only that family: a proxy that passes the other through unchanged would let a client
/// name itself). Configured as `x-forwarded` or `forwarded`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ForwardedHeaders {
    /// `X-Forwarded-For` and `X-Forwarded-Proto` (the default).
    #[default]
    #[serde(rename = "x-forwarded")]
    XForwarded,
    /// `Forwarded` (RFC 7239): `for=` and `proto=`.
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// What a trusted proxy says of its client, in the header family it writes: the client's
/// address (the nearest hop not itself trusted, if one is named) and whether it came over
/// HTTPS. `last` reads a header's last line (the one the nearest proxy added), by its
/// lower-case name.
pub fn forwarded_by<'a>(
    family: ForwardedHeaders,
    last: impl Fn(&'static str) -> Option<&'a str>,
    trusted: impl Fn(&std::net::IpAddr) -> bool,
) -> (Option<std::net::IpAddr>, bool) {
    let https = |proto: Option<&str>| proto.is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    match family {
        ForwardedHeaders::XForwarded => {
            let client = last("x-forwarded-for").and_then(|v| {
                v.rsplit(',')
                    .filter_map(|hop| hop.trim().parse::<std::net::IpAddr>().ok())
                    .find(|ip| !trusted(ip))
            });
            (
                client,
                https(last("x-forwarded-proto").and_then(|v| v.rsplit(',').next())),
            )
        }
        ForwardedHeaders::Forwarded => {
            let elements: Vec<_> = last("forwarded")
                .map(|v| forwarded_elements(v).collect())
                .unwrap_or_default();
            let proto = elements.last().and_then(|e| e.proto);
            (forwarded_client(&elements, trusted), https(proto))
        }
    }
}

/// The client behind trusted proxies from `Forwarded` elements (nearest last): walking
/// from the nearest, the first address not itself trusted; an element naming no address
/// (`for=unknown`, obfuscated, absent) ends the walk with `None` (the peer stands), so
/// nothing a client wrote before it counts.
pub fn forwarded_client(
    elements: &[ForwardedElement<'_>],
    trusted: impl Fn(&std::net::IpAddr) -> bool,
) -> Option<std::net::IpAddr> {
    for element in elements.iter().rev() {
        match element.for_ip {
            Some(ip) if trusted(&ip) => continue,
            Some(ip) => return Some(ip),
            None => return None,
        }
    }
    None
}

/// One element of a `Forwarded` header (RFC 7239): the client it was `for` (when an IP
/// address, port dropped) and the `proto` it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedElement<'a> {
    /// `for=`, when it names an IP address (not `unknown` or an obfuscated `_name`).
    pub for_ip: Option<std::net::IpAddr>,
    /// `proto=` (`http`, `https`).
    pub proto: Option<&'a str>,
}

/// The elements of a `Forwarded` header value, in order (the last was added by the
/// nearest proxy). Malformed pairs are skipped.
pub fn forwarded_elements(value: &str) -> impl DoubleEndedIterator<Item = ForwardedElement<'_>> {
    value.split(',').map(|element| {
        let mut parsed = ForwardedElement {
            for_ip: None,
            proto: None,
        };
        for pair in element.split(';') {
            let Some((name, raw)) = pair.split_once('=') else {
                continue;
            };
            let raw = raw.trim();
            let raw = raw
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or(raw);
            let name = name.trim();
            if name.eq_ignore_ascii_case("for") {
                parsed.for_ip = forwarded_node_ip(raw);
            } else if name.eq_ignore_ascii_case("proto") {
                parsed.proto = Some(raw);
            }
        }
        parsed
    })
}

/// The IP address of a `Forwarded` node: `192.0.2.43`, `192.0.2.43:47011`,
/// `[2001:db8::17]`, `[2001:db8::17]:4711`.
fn forwarded_node_ip(node: &str) -> Option<std::net::IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse::<std::net::Ipv6Addr>().ok().map(Into::into);
    }
    let host = match node.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => node,
    };
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_elements_give_addresses_and_schemes() {
        let value = r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711";Proto=https, for=unknown, for="198.51.100.7:8080""#;
        let elements: Vec<_> = forwarded_elements(value).collect();
        assert_eq!(elements.len(), 4);
        assert_eq!(elements[0].for_ip, Some("192.0.2.60".parse().unwrap()));
        assert_eq!(elements[0].proto, Some("http"));
        assert_eq!(
            elements[1].for_ip,
            Some("2001:db8:cafe::17".parse().unwrap())
        );
        assert_eq!(elements[1].proto, Some("https"));
        assert_eq!(elements[2].for_ip, None);
        assert_eq!(elements[3].for_ip, Some("198.51.100.7".parse().unwrap()));
        assert_eq!(forwarded_elements("garbage").next().unwrap().for_ip, None);
        // The walk stops at an element naming no address: what came before it is the
        // client's own writing.
        let trusted = |ip: &std::net::IpAddr| ip.to_string() == "198.51.100.7";
        assert_eq!(forwarded_client(&elements, trusted), None);
        let elements: Vec<_> =
            forwarded_elements("for=6.6.6.6, for=192.0.2.9, for=198.51.100.7").collect();
        assert_eq!(
            forwarded_client(&elements, trusted),
            Some("192.0.2.9".parse().unwrap())
        );
    }
}
