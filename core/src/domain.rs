//! Custom domains: the hosts links may live on besides the default one.

use thiserror::Error;

use crate::UserId;

/// Longest domain name (DNS limit).
pub const MAX_DOMAIN_LEN: usize = 253;

/// A registered custom domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Lower-case ASCII host name, without port or trailing dot.
    pub name: String,
    /// Users who may create links on it; `None` means every user.
    pub users: Option<Vec<UserId>>,
    /// Registration time, Unix seconds.
    pub created_at: i64,
    /// Its own HTTPS behaviour, where it differs from the installation's.
    pub https: DomainHttps,
    /// Where visitors of its links go instead of a 410 when a link has no fallback URL
    /// of its own.
    pub fallback_url: Option<String>,
}

/// A domain's own HTTPS behaviour; a `None` field follows the installation's setting
/// (`proxy.tls.redirect_http`, `proxy.tls.hsts_max_age_seconds`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DomainHttps {
    /// Plain-HTTP requests for it get a 308 to its `https://` URL (when a certificate
    /// covers it).
    pub redirect_http: Option<bool>,
    /// `Strict-Transport-Security` max-age on its HTTPS answers; 0: none.
    pub hsts_max_age_seconds: Option<u64>,
}

impl DomainHttps {
    /// Whether it follows the installation in everything.
    pub fn is_default(&self) -> bool {
        self.redirect_http.is_none() && self.hsts_max_age_seconds.is_none()
    }
}

/// Longest HSTS max-age a domain may ask for: two years.
pub const MAX_HSTS_MAX_AGE: u64 = 63_072_000;

impl Domain {
    /// Whether `user` may create links on this domain.
    pub fn allows(&self, user: UserId) -> bool {
        self.users
            .as_ref()
            .is_none_or(|users| users.contains(&user))
    }
}

/// Why a domain name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("domain '{0}' is not a valid host name like links.example.com")]
pub struct DomainError(pub String);

/// A `Host` header's host: lower case, without port or trailing dot. Allocation-free
/// callers (the proxy) do the same byte by byte.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `value` is a usable `Host` header value (RFC 9110 §7.2, `uri-host [":" port]`):
/// a registered name or IPv4 address, or a bracketed IPv6 literal, then optionally `:` and a
/// port of one to five digits up to 65535. Not: an empty value, user info (`@`), spaces or
/// other characters no host holds, an empty or out-of-range port.
pub fn is_valid_host_header(value: &[u8]) -> bool {
    // The longest name, brackets and a port.
    if value.is_empty() || value.len() > MAX_DOMAIN_LEN + 8 {
        return false;
    }
    let (name, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = std::str::from_utf8(&rest[..end]).ok();
        if literal
            .and_then(|l| l.parse::<std::net::Ipv6Addr>().ok())
            .is_none()
        {
            return false;
        }
        match &rest[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (None, Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (Some(&value[..colon]), Some(&value[colon + 1..])),
            None => (Some(value), None),
        }
    };
    // `reg-name`: unreserved, sub-delims and percent-encoded octets.
    let name_ok = name.is_none_or(|name| {
        !name.is_empty()
            && name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b))
    });
    let port_ok = port.is_none_or(|port| {
        (1..=5).contains(&port.len())
            && port.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(port)
                .ok()
                .and_then(|p| p.parse::<u16>().ok())
                .is_some()
    });
    name_ok && port_ok
}

/// Validates a domain to register: converted to its ASCII (punycode) form, lower case,
/// at least two labels of letters, digits and hyphens, no port, path or IP address.
pub fn validate_domain(name: &str) -> Result<String, DomainError> {
    let refuse = || DomainError(name.to_owned());
    let trimmed = name.trim().trim_end_matches('.');
    let ascii = idna::domain_to_ascii(trimmed).map_err(|_| refuse())?;
    let labels: Vec<&str> = ascii.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let numeric = labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    if ascii.is_empty()
        || ascii.len() > MAX_DOMAIN_LEN
        || labels.len() < 2
        || numeric
        || !labels.iter().all(label_ok)
    {
        return Err(refuse());
    }
    Ok(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_values_are_checked_by_their_grammar() {
        for good in [
            "localhost",
            "LOCALHOST:8080",
            "links.example.com.",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:65535",
            "xn--bcher-kva.de",
            "under_score",
        ] {
            assert!(is_valid_host_header(good.as_bytes()), "{good}");
        }
        let long = "a".repeat(300);
        for bad in [
            "",
            " ",
            "a b",
            "evil@127.0.0.1",
            "x:99999999",
            "x:65536",
            "x:",
            ":80",
            "a:b:c",
            "[::1",
            "[::1]x",
            "[not-v6]",
            "a/b",
            "a\tb",
            long.as_str(),
        ] {
            assert!(!is_valid_host_header(bad.as_bytes()), "{bad:?}");
        }
        assert!(!is_valid_host_header(b"a\x00b"));
        assert!(!is_valid_host_header("bücher.de".as_bytes()));
    }

    #[test]
    fn hosts_normalize() {
        assert_eq!(normalize_host("Go.Example.COM:8080"), "go.example.com");
        assert_eq!(normalize_host("go.example.com."), "go.example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]:80".to_owned());
    }

    #[test]
    fn domains_validate() {
        assert_eq!(
            validate_domain("Links.Example.com").unwrap(),
            "links.example.com"
        );
        assert_eq!(validate_domain("bücher.de").unwrap(), "xn--bcher-kva.de");
        for bad in [
            "",
            "localhost",
            "a..b",
            "-a.com",
            "a.com:80",
            "a.com/x",
            "10.0.0.1",
            "a b.com",
        ] {
            assert!(validate_domain(bad).is_err(), "{bad}");
        }
        let d = Domain {
            name: "a.com".into(),
            users: Some(vec![1]),
            created_at: 0,
            https: DomainHttps::default(),
            fallback_url: None,
        };
        assert!(d.allows(1) && !d.allows(2));
    }
}
