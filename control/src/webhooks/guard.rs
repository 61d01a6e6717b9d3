//! Where webhooks may go: never to loopback, private, link-local, metadata or other
//! special addresses (unless an operator allows their network), checked on the addresses
//! a name resolves to, at registration and again on every connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Why an address is refused, in words; `None` when it is a public address.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        // 169.254.169.254 is the metadata service of most clouds.
        Some("link-local or metadata")
    } else if a == 100 && (64..128).contains(&b) {
        // Shared address space; 100.100.100.200 is a cloud metadata service.
        Some("shared (carrier-grade NAT) or metadata")
    } else if a == 0 || ip.is_broadcast() || a >= 224 {
        Some("unspecified, broadcast, multicast or reserved")
    } else if (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 198 && ((b & 0xfe) == 18 || (b == 51 && c == 100)))
        || (a == 203 && b == 0 && c == 113)
    {
        Some("protocol assignment, benchmarking or documentation")
    } else {
        None
    }
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    if ip.is_loopback() || ip.is_unspecified() {
        return Some("loopback or unspecified");
    }
    match segments[0] {
        // Unique local, including the AWS metadata address fd00:ec2::254.
        s if s & 0xfe00 == 0xfc00 => Some("private (unique local) or metadata"),
        s if s & 0xffc0 == 0xfe80 || s & 0xffc0 == 0xfec0 => Some("link-local"),
        s if s & 0xff00 == 0xff00 => Some("multicast"),
        // 6to4 carries an IPv4 address in its next 32 bits.
        0x2002 => special_v4(Ipv4Addr::new(
            (segments[1] >> 8) as u8,
            segments[1] as u8,
            (segments[2] >> 8) as u8,
            segments[2] as u8,
        )),
        // Teredo hides its IPv4 address; NAT64 and IPv4-compatible ones embed one last.
        0x2001 if segments[1] == 0 => Some("Teredo"),
        0x0064 if segments[1] == 0xff9b => special_v4(embedded_v4(segments)),
        // IPv4-compatible (::a.b.c.d) and IPv4-translated (::ffff:0:a.b.c.d) addresses.
        0 if segments[..6].iter().all(|s| *s == 0)
            || (segments[..4].iter().all(|s| *s == 0)
                && segments[4] == 0xffff
                && segments[5] == 0) =>
        {
            special_v4(embedded_v4(segments))
        }
        _ => None,
    }
}

fn embedded_v4(segments: [u16; 8]) -> Ipv4Addr {
    Ipv4Addr::new(
        (segments[6] >> 8) as u8,
        segments[6] as u8,
        (segments[7] >> 8) as u8,
        segments[7] as u8,
    )
}

/// The addresses webhooks may connect to.
#[derive(Debug, Clone, Default)]
pub struct TargetGuard {
    allowed: Arc<Vec<IpNet>>,
}

impl TargetGuard {
    /// Public addresses, and these networks besides.
    pub fn new(allowed: Vec<IpNet>) -> TargetGuard {
        TargetGuard {
            allowed: Arc::new(allowed),
        }
    }

    /// Why `ip` is refused; `None` when it may be connected to.
    pub fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        special_range(ip)
    }

    /// The addresses `host` resolves to that may be connected to, or why there are none.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return match self.refuses(ip) {
                Some(why) => Err(format!("{ip} is a {why} address")),
                None => Ok(vec![SocketAddr::new(ip, port)]),
            };
        }
        let found: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("'{bare}' cannot be resolved: {e}"))?
            .collect();
        let mut refused = None;
        let usable: Vec<SocketAddr> = found
            .into_iter()
            .filter(|addr| match self.refuses(addr.ip()) {
                Some(why) => {
                    refused = Some(format!(
                        "'{bare}' resolves to {}, a {why} address",
                        addr.ip()
                    ));
                    false
                }
                None => true,
            })
            .collect();
        if usable.is_empty() {
            return Err(refused.unwrap_or_else(|| format!("'{bare}' resolves to no address")));
        }
        Ok(usable)
    }
}

/// The HTTP client's resolver: names resolve to allowed addresses only, so a name that
/// changed to a refused address since registration is caught when connecting.
impl reqwest::dns::Resolve for TargetGuard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.clone();
        Box::pin(async move {
            let addrs = guard
                .resolve(name.as_str(), 0)
                .await
                .map_err(|why| -> Box<dyn std::error::Error + Send + Sync> { why.into() })?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> bool {
        TargetGuard::default()
            .refuses(text.parse().unwrap())
            .is_some()
    }

    #[test]
    fn special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "::127.0.0.1",
            "2001:0:4136:e378::1",
            "::ffff:0:127.0.0.1",
            "192.0.2.1",
        ] {
            assert!(refused(ip), "{ip} should be refused");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "2002:5db8:d822::",
        ] {
            assert!(!refused(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn allowed_networks_override() {
        let guard = TargetGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(guard.refuses("127.0.0.1".parse().unwrap()), None);
        assert_eq!(guard.refuses("::ffff:127.0.0.2".parse().unwrap()), None);
        assert!(guard.refuses("10.0.0.1".parse().unwrap()).is_some());
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let guard = TargetGuard::default();
        let err = guard.resolve("localhost", 80).await.unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        let err = guard.resolve("[::1]", 80).await.unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        let allowed = TargetGuard::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(!allowed.resolve("localhost", 80).await.unwrap().is_empty());
    }
}
