//! Unix-time helpers: the store and the route table keep times as whole Unix seconds.

use time::OffsetDateTime;

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Formats Unix seconds as RFC 3339 (UTC), the form the API speaks.
pub fn to_rfc3339(unix_seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_seconds.to_string())
}

/// Formats Unix milliseconds as RFC 3339 (UTC) with milliseconds.
pub fn ms_to_rfc3339(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    let whole = to_rfc3339(secs);
    match whole.strip_suffix('Z') {
        Some(base) => format!("{base}.{ms:03}Z"),
        None => whole,
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Parses an RFC 3339 timestamp into Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// `candidate`, or one past the last value `last` handed out if that is larger; records
/// the result in `last`. Ids made this way strictly increase within a process.
pub fn next_monotonic(last: &std::sync::atomic::AtomicI64, candidate: i64) -> i64 {
    use std::sync::atomic::Ordering;
    let mut prev = last.load(Ordering::Relaxed);
    loop {
        let id = candidate.max(prev + 1);
        match last.compare_exchange_weak(prev, id, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return id,
            Err(actual) => prev = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let t = parse_rfc3339("2030-01-02T03:04:05Z").unwrap();
        assert_eq!(to_rfc3339(t), "2030-01-02T03:04:05Z");
        assert_eq!(parse_rfc3339("2030-01-02T04:04:05+01:00"), Some(t));
        assert_eq!(parse_rfc3339("tomorrow"), None);
    }
}
