//! Visitor ids: who made a click, without keeping who they are. An id is a keyed hash
//! (XXH3 with a 192-byte secret) of the anonymized address and the user agent; the secret
//! is derived with HMAC-SHA256 from the installation's secret and the UTC day, so ids of
//! one day cannot be linked to another's, and nobody without the installation's secret
//! can test an address against them. Only HyperLogLog sketches of the ids are stored.

use std::net::IpAddr;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of a day's hashing secret.
const SECRET_LEN: usize = 192;
/// Days whose secrets are kept (clicks arrive around today).
const DAYS_KEPT: usize = 4;

/// Derives each day's secret from the installation's and hashes visitors with it.
pub struct VisitorKeys {
    installation: [u8; 32],
    days: Mutex<Vec<(i64, Box<[u8; SECRET_LEN]>)>>,
}

impl VisitorKeys {
    /// Keys derived from the installation's secret.
    pub fn new(installation: [u8; 32]) -> VisitorKeys {
        VisitorKeys {
            installation,
            days: Mutex::new(Vec::new()),
        }
    }

    fn derive(&self, day: i64) -> Box<[u8; SECRET_LEN]> {
        let mut secret = Box::new([0u8; SECRET_LEN]);
        for (i, chunk) in secret.chunks_mut(32).enumerate() {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.installation)
                .expect("HMAC takes any key length");
            mac.update(b"shortlink visitor day ");
            mac.update(&day.to_be_bytes());
            mac.update(&[i as u8]);
            chunk.copy_from_slice(&mac.finalize().into_bytes());
        }
        secret
    }

    /// The visitor id of a click at `ts_ms` (Unix ms) from `ip` (already anonymized, or
    /// none) with `user_agent`; never 0.
    pub fn visitor(&self, ts_ms: i64, ip: Option<IpAddr>, user_agent: &str) -> u64 {
        let day = ts_ms.div_euclid(86_400_000);
        let mut input = Vec::with_capacity(24 + user_agent.len());
        match ip {
            Some(IpAddr::V4(v4)) => input.extend_from_slice(&v4.octets()),
            Some(IpAddr::V6(v6)) => input.extend_from_slice(&v6.octets()),
            None => {}
        }
        input.push(0xff);
        input.extend_from_slice(user_agent.as_bytes());
        let mut days = self.days.lock().unwrap_or_else(|e| e.into_inner());
        if !days.iter().any(|(d, _)| *d == day) {
            if days.len() >= DAYS_KEPT {
                days.remove(0);
            }
            days.push((day, self.derive(day)));
        }
        let secret = days
            .iter()
            .find(|(d, _)| *d == day)
            .map(|(_, s)| &**s)
            .expect("derived above");
        xxhash_rust::xxh3::xxh3_64_with_secret(&input, secret).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_by_visitor_by_day_and_by_installation() {
        let keys = VisitorKeys::new([7; 32]);
        let ip: IpAddr = "203.0.113.0".parse().unwrap();
        let day = 1_796_256_000_000;
        let a = keys.visitor(day, Some(ip), "Firefox");
        assert_eq!(
            a,
            keys.visitor(day + 3_600_000, Some(ip), "Firefox"),
            "same day"
        );
        assert_ne!(a, keys.visitor(day, Some(ip), "Chrome"), "another agent");
        assert_ne!(
            a,
            keys.visitor(day, Some("203.0.114.0".parse().unwrap()), "Firefox"),
            "another network"
        );
        assert_ne!(
            a,
            keys.visitor(day + 86_400_000, Some(ip), "Firefox"),
            "next day"
        );
        assert_ne!(
            a,
            VisitorKeys::new([8; 32]).visitor(day, Some(ip), "Firefox")
        );
        // Days far apart, in any order, keep their ids.
        for d in [day, day - 30 * 86_400_000, day + 86_400_000 * 9, day] {
            let _ = keys.visitor(d, None, "x");
        }
        assert_eq!(a, keys.visitor(day, Some(ip), "Firefox"));
    }
}
