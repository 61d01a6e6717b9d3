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
}

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
        };
        assert!(d.allows(1) && !d.allows(2));
    }
}
