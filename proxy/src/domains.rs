//! Which domain a request addresses: its `Host`, matched against the registered custom
//! domains the route sync keeps here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use http::HeaderValue;
use shortlink_core::DomainHttps;

/// Longest host name looked at (DNS limit); longer hosts are unknown.
/// The longest host name (RFC 1035).
pub(crate) const MAX_HOST: usize = 253;

/// What a request's host is.
#[derive(Debug, PartialEq, Eq)]
pub enum HostMatch<'a> {
    /// The default domain (also any host when no custom domain is registered and no
    /// fallback is configured).
    Default,
    /// A registered custom domain (lower case, without port).
    Custom(&'a str),
    /// Neither the default host nor a registered domain, and a fallback is configured.
    Unknown(&'a HeaderValue),
}

/// The registered custom domains (with their own HTTPS behaviour) and the default host.
pub struct DomainSet {
    any: AtomicBool,
    /// Whether some domain has HTTPS behaviour of its own.
    any_own_https: AtomicBool,
    names: ArcSwap<HashMap<Box<str>, DomainHttps>>,
    default_host: Box<str>,
    fallback: Option<HeaderValue>,
    /// Where visitors of a domain's links go instead of a 410 (`""`: the default domain).
    gone: ArcSwap<HashMap<Box<str>, HeaderValue>>,
    /// The default domain's, from the configuration.
    default_gone: Option<HeaderValue>,
}

impl DomainSet {
    /// An empty set; `default_host` is the public URL's host (lower case, no port);
    /// `fallback` is where requests for unknown hosts are redirected, if anywhere.
    pub fn new(default_host: &str, fallback: Option<HeaderValue>) -> DomainSet {
        DomainSet {
            any: AtomicBool::new(false),
            any_own_https: AtomicBool::new(false),
            names: ArcSwap::from_pointee(HashMap::new()),
            default_host: default_host.to_ascii_lowercase().into_boxed_str(),
            fallback,
            gone: ArcSwap::from_pointee(HashMap::new()),
            default_gone: None,
        }
    }

    /// Sends visitors of gone default-domain links without a fallback of their own to
    /// `location` (`proxy.gone_redirect`).
    pub fn with_gone_redirect(mut self, location: Option<HeaderValue>) -> DomainSet {
        self.default_gone = location;
        self
    }

    /// Replaces the custom domains' fallback URLs (invalid header text is left out).
    pub fn replace_gone_redirects(&self, fallbacks: impl IntoIterator<Item = (String, String)>) {
        let map: HashMap<Box<str>, HeaderValue> = fallbacks
            .into_iter()
            .filter_map(|(name, url)| {
                Some((name.into_boxed_str(), HeaderValue::from_str(&url).ok()?))
            })
            .collect();
        self.gone.store(std::sync::Arc::new(map));
    }

    /// Where visitors of a gone link on `domain` (`""`: the default) go, if anywhere.
    pub fn gone_redirect(&self, domain: &str) -> Option<HeaderValue> {
        if domain.is_empty() {
            return self.default_gone.clone();
        }
        self.gone.load().get(domain).cloned()
    }

    /// Replaces the registered domains: names and their own HTTPS behaviour.
    pub fn replace(&self, domains: impl IntoIterator<Item = (String, DomainHttps)>) {
        let names: HashMap<Box<str>, DomainHttps> = domains
            .into_iter()
            .map(|(name, https)| (name.into_boxed_str(), https))
            .collect();
        self.any.store(!names.is_empty(), Ordering::Release);
        self.any_own_https
            .store(names.values().any(|h| !h.is_default()), Ordering::Release);
        self.names.store(std::sync::Arc::new(names));
    }

    /// Whether `name` (normalized) is a registered domain here.
    pub fn contains(&self, name: &str) -> bool {
        self.names.load().contains_key(name)
    }

    /// Whether some domain has HTTPS behaviour of its own.
    pub fn has_own_https(&self) -> bool {
        self.any_own_https.load(Ordering::Relaxed)
    }

    /// The HTTPS behaviour of its own the domain `name` (normalized) has, if any.
    pub fn own_https(&self, name: &str) -> Option<DomainHttps> {
        if !self.any_own_https.load(Ordering::Relaxed) {
            return None;
        }
        self.names
            .load()
            .get(name)
            .copied()
            .filter(|h| !h.is_default())
    }

    /// Whether `name` (normalized) is the default host or a registered domain.
    pub fn is_ours(&self, name: &str) -> bool {
        name == &*self.default_host || self.contains(name)
    }

    /// Number of registered domains held.
    pub fn len(&self) -> usize {
        self.names.load().len()
    }

    /// Whether no custom domain is registered.
    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    /// Classifies the request's host (`host` reads the header), lower-casing it into `buf`
    /// (no allocation). With no custom domains and no fallback this is one atomic load and
    /// the header is not read.
    #[inline]
    pub fn classify<'a, 'h>(
        &'a self,
        host: impl FnOnce() -> Option<&'h [u8]>,
        buf: &'a mut [u8; MAX_HOST],
    ) -> HostMatch<'a> {
        if self.fallback.is_none() && !self.any.load(Ordering::Relaxed) {
            return HostMatch::Default;
        }
        // Only now look the header up: the common case above never reads it.
        let host = host();
        let unknown = || match &self.fallback {
            Some(fallback) => HostMatch::Unknown(fallback),
            None => HostMatch::Default,
        };
        let Some(host) = host else {
            return unknown();
        };
        // Strip the port (not for bracketed IPv6 literals) and a trailing dot.
        let mut name = host;
        if let Some(colon) = name.iter().rposition(|&b| b == b':')
            && !name.starts_with(b"[")
        {
            name = &name[..colon];
        }
        if let Some(stripped) = name.strip_suffix(b".") {
            name = stripped;
        }
        if name.is_empty() || name.len() > MAX_HOST {
            return unknown();
        }
        let lowered = &mut buf[..name.len()];
        lowered.copy_from_slice(name);
        lowered.make_ascii_lowercase();
        let Ok(lowered) = std::str::from_utf8(lowered) else {
            return unknown();
        };
        if lowered == &*self.default_host {
            return HostMatch::Default;
        }
        if self.any.load(Ordering::Relaxed) && self.names.load().contains_key(lowered) {
            return HostMatch::Custom(lowered);
        }
        unknown()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_hosts() {
        let set = DomainSet::new("short.test", None);
        let mut buf = [0u8; MAX_HOST];
        assert_eq!(
            set.classify(|| Some(b"go.example.com"), &mut buf),
            HostMatch::Default
        );
        set.replace([("go.example.com".to_owned(), DomainHttps::default())]);
        assert_eq!(
            set.classify(|| Some(b"Go.Example.COM:8080"), &mut buf),
            HostMatch::Custom("go.example.com")
        );
        assert_eq!(
            set.classify(|| Some(b"go.example.com."), &mut buf),
            HostMatch::Custom("go.example.com")
        );
        assert_eq!(
            set.classify(|| Some(b"short.test:80"), &mut buf),
            HostMatch::Default
        );
        assert_eq!(
            set.classify(|| Some(b"other.test"), &mut buf),
            HostMatch::Default
        );
        assert_eq!(set.classify(|| None, &mut buf), HostMatch::Default);

        let fallback = HeaderValue::from_static("https://www.example.com/");
        let strict = DomainSet::new("short.test", Some(fallback.clone()));
        assert_eq!(
            strict.classify(|| Some(b"other.test"), &mut buf),
            HostMatch::Unknown(&fallback)
        );
        assert_eq!(
            strict.classify(|| Some(b"SHORT.test"), &mut buf),
            HostMatch::Default
        );
        strict.replace(Vec::new());
        assert!(strict.is_empty());
    }
}
