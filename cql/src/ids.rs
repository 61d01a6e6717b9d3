//! Time-ordered ids for a store with many writers.
//!
//! An id is the microseconds since 2020-01-01 shifted left by 10 bits, plus 10 random
//! bits: ids from different processes are unique without coordination (two writers would
//! need the same microsecond and the same random bits), and ids grow with time, so an id
//! doubles as a position in the change and event feeds. Within one process ids strictly
//! increase. 53 bits of microseconds last until the year 2305.

use std::sync::atomic::AtomicI64;

/// 2020-01-01T00:00:00Z in Unix microseconds.
const EPOCH_US: i64 = 1_577_836_800_000_000;
/// Random low bits.
const RANDOM_BITS: u32 = 10;
/// Microseconds in a feed bucket (one minute).
const BUCKET_US: i64 = 60_000_000;

static LAST: AtomicI64 = AtomicI64::new(0);

fn now_us() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}

/// The smallest id made at Unix microsecond `us`.
pub(crate) fn id_at_us(us: i64) -> i64 {
    (us - EPOCH_US).max(0) << RANDOM_BITS
}

/// A new id, larger than every id this process made before.
pub(crate) fn next_id() -> i64 {
    let candidate = id_at_us(now_us()) | i64::from(rand::random::<u16>() & 0x3ff);
    shortlink_core::time_util::next_monotonic(&LAST, candidate)
}

/// The largest id made `settle_us` or more before now: feed readers stop here, so a write
/// still in flight when they read is not skipped.
pub(crate) fn horizon(settle_us: i64) -> i64 {
    id_at_us(now_us() - settle_us) | ((1 << RANDOM_BITS) - 1)
}

/// The id made `secs` seconds before now (the start of a retention window).
pub(crate) fn id_secs_ago(secs: i64) -> i64 {
    id_at_us(now_us().saturating_sub(secs.saturating_mul(1_000_000)))
}

/// An id for the `nth` record restored of Unix second `unix_secs`: of that second, so it
/// lands in that time's partitions and sorts with its time, the `nth` microsecond of it (so
/// records of one second keep the order they are restored in), random low bits.
pub(crate) fn restored_id(unix_secs: i64, nth: i64) -> i64 {
    let us = unix_secs
        .saturating_mul(1_000_000)
        .saturating_add(nth.rem_euclid(1_000_000));
    id_at_us(us) | i64::from(rand::random::<u16>() & 0x3ff)
}

/// Unix seconds at which `id` was made.
pub(crate) fn unix_secs(id: i64) -> i64 {
    ((id >> RANDOM_BITS) + EPOCH_US) / 1_000_000
}

/// The feed partition (minute since 2020) holding `id`.
pub(crate) fn bucket(id: i64) -> i64 {
    (id.max(0) >> RANDOM_BITS) / BUCKET_US
}

/// Months since year 0 (`year * 12 + month - 1`) of a Unix second: the calendar-month
/// partitions of owners' link lists and of click rollups.
pub(crate) fn month_of(unix_secs: i64) -> i32 {
    let date = time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    date.year() * 12 + i32::from(u8::from(date.month())) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_carry_their_time() {
        let a = next_id();
        let b = next_id();
        assert!(b > a);
        let secs = unix_secs(b);
        let now = now_us() / 1_000_000;
        assert!((now - secs).abs() <= 1, "{secs} vs {now}");
        assert!(
            horizon(0) >= a,
            "a made id is below the zero-settle horizon"
        );
        assert!(horizon(10_000_000) < a, "ten seconds ago is before it");
    }

    #[test]
    fn buckets_are_minutes_and_months_are_calendar_months() {
        let t = id_at_us(EPOCH_US + 61_000_000);
        assert_eq!(bucket(t), 1);
        assert_eq!(month_of(1_577_836_800), 2020 * 12);
        assert_eq!(month_of(1_580_515_200), 2020 * 12 + 1, "2020-02-01");
        assert_eq!(month_of(1_580_515_199), 2020 * 12, "2020-01-31T23:59:59");
    }
}
