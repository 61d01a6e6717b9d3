//! Target URL rules: what a short link may point at, and its normalized form.

use thiserror::Error;
use url::Url;

/// Default longest accepted target URL, in bytes (8 KiB).
pub const DEFAULT_MAX_URL_BYTES: usize = 8 * 1024;

/// Why a target URL was refused. Each variant has a stable API error code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TargetError {
    /// Empty after trimming.
    #[error("url is empty")]
    Empty,
    /// Longer than the configured limit (before or after normalization).
    #[error("url is longer than {limit} bytes")]
    TooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// Contains whitespace or control characters inside it.
    #[error("url must not contain whitespace or control characters")]
    ControlCharacters,
    /// Not an absolute URL (no scheme).
    #[error("url must be absolute, like https://example.com/page")]
    NotAbsolute,
    /// Could not be parsed.
    #[error("url is not valid: {0}")]
    Invalid(String),
    /// A scheme other than http or https.
    #[error("url scheme '{0}' is not allowed; use http or https")]
    Scheme(String),
    /// No host.
    #[error("url must have a host")]
    NoHost,
    /// Holds `user:password@`.
    #[error("url must not contain credentials")]
    Credentials,
    /// The host is on the blocklist.
    #[error("links to host '{0}' are not allowed")]
    BlockedHost(String),
    /// The host is this service (a loopback name or address, one of its own hosts or
    /// custom domains): the redirect would loop.
    #[error("url host '{0}' leads back to this service, so the link would loop")]
    Loop(String),
}

impl TargetError {
    /// The stable machine-readable code the API reports for this error.
    pub fn code(&self) -> &'static str {
        match self {
            TargetError::Empty => "url_empty",
            TargetError::TooLong { .. } => "url_too_long",
            TargetError::ControlCharacters => "url_invalid_characters",
            TargetError::NotAbsolute => "url_not_absolute",
            TargetError::Invalid(_) => "url_invalid",
            TargetError::Scheme(_) => "url_scheme_not_allowed",
            TargetError::NoHost => "url_no_host",
            TargetError::Credentials => "url_has_credentials",
            TargetError::BlockedHost(_) => "url_host_blocked",
            TargetError::Loop(_) => "url_loops",
        }
    }
}

/// The configurable part of the target rules.
#[derive(Debug, Clone)]
pub struct TargetRules {
    /// Longest accepted URL in bytes.
    pub max_url_bytes: usize,
    /// Hosts (and their subdomains) that links may not point at, in ASCII (punycode) form.
    blocked_hosts: Vec<String>,
    /// This service's own host names (the listen addresses' hosts): a link to one loops.
    own_hosts: Vec<String>,
    /// Hosts an admin allows although they would count as this service.
    allowed_hosts: Vec<String>,
}

impl Default for TargetRules {
    fn default() -> Self {
        TargetRules {
            max_url_bytes: DEFAULT_MAX_URL_BYTES,
            blocked_hosts: Vec::new(),
            own_hosts: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

impl TargetRules {
    /// Rules with a URL length limit and a host blocklist; blocklist entries may be IDN
    /// and are normalized here. Entries that are not valid host names are skipped.
    pub fn new(max_url_bytes: usize, blocked_hosts: impl IntoIterator<Item = String>) -> Self {
        let blocked_hosts = blocked_hosts
            .into_iter()
            .filter_map(|h| normalize_host(h.trim().trim_end_matches('.')))
            .collect();
        TargetRules {
            max_url_bytes,
            blocked_hosts,
            own_hosts: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }

    /// Adds this service's own host names (e.g. its listen addresses' hosts), which links
    /// may not point at, and the hosts an admin allows although they would loop.
    pub fn with_loop_hosts(
        mut self,
        own: impl IntoIterator<Item = String>,
        allowed: impl IntoIterator<Item = String>,
    ) -> Self {
        let normalize = |h: String| normalize_host(h.trim().trim_end_matches('.'));
        self.own_hosts = own.into_iter().filter_map(normalize).collect();
        self.allowed_hosts = allowed.into_iter().filter_map(normalize).collect();
        self
    }

    /// Whether an admin allows links to `host` (ASCII, lowercase) though it loops.
    pub fn loop_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.allowed_hosts.iter().any(|allowed| allowed == host)
    }

    /// Whether `host` (ASCII, lowercase) is blocked, itself or as a subdomain of a blocked host.
    pub fn is_blocked(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.blocked_hosts.iter().any(|blocked| {
            host == blocked
                || (host.len() > blocked.len()
                    && host.ends_with(blocked.as_str())
                    && host.as_bytes()[host.len() - blocked.len() - 1] == b'.')
        })
    }
}

fn normalize_host(host: &str) -> Option<String> {
    if host.is_empty() {
        return None;
    }
    idna::domain_to_ascii(host)
        .ok()
        .map(|h| h.to_ascii_lowercase())
}

/// Validates a target URL and returns its normalized form (IDN host in punycode,
/// lowercase scheme and host, percent-encoded path).
pub fn validate_target(raw: &str, rules: &TargetRules) -> Result<String, TargetError> {
    let raw = raw.trim_matches(|c: char| c.is_ascii_whitespace());
    if raw.is_empty() {
        return Err(TargetError::Empty);
    }
    if raw.len() > rules.max_url_bytes {
        return Err(TargetError::TooLong {
            limit: rules.max_url_bytes,
        });
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TargetError::ControlCharacters);
    }
    let url = match Url::parse(raw) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => return Err(TargetError::NotAbsolute),
        Err(url::ParseError::EmptyHost) => return Err(TargetError::NoHost),
        Err(e) => return Err(TargetError::Invalid(e.to_string())),
    };
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(TargetError::Scheme(other.to_owned())),
    }
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.to_owned(),
        _ => return Err(TargetError::NoHost),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Credentials);
    }
    if rules.is_blocked(&host) {
        return Err(TargetError::BlockedHost(host));
    }
    if reaches_this_service(&url, rules) && !rules.loop_allowed(&host) {
        return Err(TargetError::Loop(host));
    }
    let normalized = String::from(url);
    if normalized.len() > rules.max_url_bytes {
        return Err(TargetError::TooLong {
            limit: rules.max_url_bytes,
        });
    }
    Ok(normalized)
}

/// The host of a (validated) target URL, lower case, without a trailing dot: what the
/// loop checks compare against registered domains.
pub fn target_host(url: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    let host = url.host_str()?.trim_end_matches('.');
    Some(host.to_ascii_lowercase())
}

/// Whether `url`'s host is this machine or this service whatever port it names: a
/// loopback or unspecified address in any form (the URL parser has already turned
/// `2130706433`, `0x7f.1` and the like into dotted IPv4; IPv4-mapped IPv6 counts as its
/// IPv4), `localhost` and its subdomains (RFC 6761), or one of the service's own hosts.
fn reaches_this_service(url: &Url, rules: &TargetRules) -> bool {
    let own = |ip: std::net::IpAddr| rules.own_hosts.contains(&ip.to_string());
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified() || own(ip.into()),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || own(ip.into())
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_unspecified() || own(v4.into()))
        }
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost") || rules.own_hosts.contains(&name)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_that_lead_back_to_this_service_are_refused() {
        let rules = TargetRules::new(8192, Vec::new()).with_loop_hosts(
            [
                "short.example".to_owned(),
                "10.1.2.3".to_owned(),
                "2001:db8::7".to_owned(),
            ],
            ["dev.localhost".to_owned()],
        );
        for looping in [
            "http://localhost:8080/x",
            "http://LOCALHOST./x",
            "http://app.localhost/x",
            "http://127.0.0.1/x",
            "http://127.1.2.3:9/x",
            "http://2130706433/x",
            "http://0x7f.1/x",
            "http://0.0.0.0/x",
            "http://[::1]:8080/x",
            "http://[::]/x",
            "http://[::ffff:127.0.0.1]:8080/x",
            "https://short.example/abc",
            "https://SHORT.example./abc",
            "http://10.1.2.3:9/x",
            "http://[::ffff:10.1.2.3]/x",
            "http://[2001:db8::7]:8080/x",
        ] {
            assert!(
                matches!(validate_target(looping, &rules), Err(TargetError::Loop(_))),
                "{looping}: {:?}",
                validate_target(looping, &rules)
            );
        }
        for fine in [
            "https://example.com/",
            "http://10.0.0.1/x",
            "http://[2001:db8::1]/x",
            "https://sub.short.example/x",
            "http://dev.localhost/x",
        ] {
            assert!(validate_target(fine, &rules).is_ok(), "{fine}");
        }
        assert_eq!(TargetError::Loop("x".into()).code(), "url_loops");
    }

    #[track_caller]
    fn check(input: &str, expected: Result<&str, TargetError>) {
        let rules = TargetRules::new(64, ["evil.test".to_owned(), "bücher.example".to_owned()]);
        let got = validate_target(input, &rules);
        assert_eq!(
            got.as_deref().map_err(Clone::clone),
            expected,
            "input {input:?}"
        );
    }

    #[test]
    fn accepts_and_normalizes() {
        check("https://Example.COM", Ok("https://example.com/"));
        check(
            "  http://example.com/a b  ",
            Err(TargetError::ControlCharacters),
        );
        check(
            "http://example.com/a?b=c#d",
            Ok("http://example.com/a?b=c#d"),
        );
        check(
            "https://münchen.de/straße",
            Ok("https://xn--mnchen-3ya.de/stra%C3%9Fe"),
        );
        check(
            "https://[2001:DB8::1]:8443/x",
            Ok("https://[2001:db8::1]:8443/x"),
        );
    }

    #[test]
    fn refuses_bad_input() {
        check("", Err(TargetError::Empty));
        check("   ", Err(TargetError::Empty));
        check("ftp://example.com/", Err(TargetError::Scheme("ftp".into())));
        check(
            "javascript:alert(1)",
            Err(TargetError::Scheme("javascript".into())),
        );
        check("/relative/path", Err(TargetError::NotAbsolute));
        check("example.com", Err(TargetError::NotAbsolute));
        check(
            "https://user:pw@example.com/",
            Err(TargetError::Credentials),
        );
        check("https://user@example.com/", Err(TargetError::Credentials));
        check(
            "https://example.com/\r\nSet-Cookie: a=b",
            Err(TargetError::ControlCharacters),
        );
        check("https://", Err(TargetError::NoHost));
        check(
            &format!("https://e.com/{}", "a".repeat(60)),
            Err(TargetError::TooLong { limit: 64 }),
        );
        check(
            "https://evil.test/x",
            Err(TargetError::BlockedHost("evil.test".into())),
        );
        check(
            "https://a.b.EVIL.test/x",
            Err(TargetError::BlockedHost("a.b.evil.test".into())),
        );
        check("https://notevil.test/x", Ok("https://notevil.test/x"));
        check(
            "https://BÜCHER.example/",
            Err(TargetError::BlockedHost("xn--bcher-kva.example".into())),
        );
    }

    #[test]
    fn every_error_has_a_distinct_code() {
        let errors = [
            TargetError::Empty,
            TargetError::TooLong { limit: 1 },
            TargetError::ControlCharacters,
            TargetError::NotAbsolute,
            TargetError::Invalid(String::new()),
            TargetError::Scheme(String::new()),
            TargetError::NoHost,
            TargetError::Credentials,
            TargetError::BlockedHost(String::new()),
        ];
        let codes: std::collections::HashSet<_> = errors.iter().map(TargetError::code).collect();
        assert_eq!(codes.len(), errors.len());
    }
}
