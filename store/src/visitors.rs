//! Unique visitors: HyperLogLog sketches of visitor ids, kept beside the rollups per link
//! per UTC hour and day, merged over any range.
//!
//! The sketch is `cardinality-estimator`'s (HyperLogLog++ with exact small sets): up to
//! two visitors fit in 8 bytes and up to 128 in a list of 4 bytes each, so the hours and
//! days of most links stay tiny; past that it is 2^14 registers of 6 bits (12 KiB, a
//! standard error of 0.81 %). Merging is taking each register's maximum, so merging a
//! sketch twice changes nothing: a redelivered batch, or a row read twice, cannot count a
//! visitor twice.

use cardinality_estimator::CardinalityEstimator;

/// Registers are indexed by this many bits of the id: 2^14 registers.
const PRECISION: usize = 14;
/// Bits per register.
const WIDTH: usize = 6;

type Estimator = CardinalityEstimator<u64, wyhash::WyHash, PRECISION, WIDTH>;

/// A set of visitor ids, estimated.
#[derive(Clone, Default)]
pub struct Visitors(Estimator);

impl std::fmt::Debug for Visitors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Visitors(~{})", self.estimate())
    }
}

impl Visitors {
    /// An empty set.
    pub fn new() -> Visitors {
        Visitors::default()
    }

    /// Adds a visitor id (a uniformly distributed 64-bit hash, see the enricher).
    pub fn insert(&mut self, visitor: u64) {
        self.0.insert_hash(visitor);
    }

    /// Adds every visitor of `other`.
    pub fn merge(&mut self, other: &Visitors) {
        self.0.merge(&other.0);
    }

    /// How many distinct visitors, estimated (exact for small sets).
    pub fn estimate(&self) -> u64 {
        self.0.estimate() as u64
    }

    /// The stored form (MessagePack of the estimator's own serialization).
    pub fn to_bytes(&self) -> Vec<u8> {
        rmp_serde::to_vec(&self.0).unwrap_or_default()
    }

    /// Reads a stored form; `None` for bytes that are not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Visitors> {
        rmp_serde::from_slice(bytes).ok().map(Visitors)
    }

    /// Merges a stored form into this set; false (and nothing changed) for bytes that are
    /// not one.
    pub fn merge_bytes(&mut self, bytes: &[u8]) -> bool {
        match Visitors::from_bytes(bytes) {
            Some(other) => {
                self.merge(&other);
                true
            }
            None => false,
        }
    }
}

/// Which sketches a row holds: an hour's or a day's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A UTC hour's.
    Hour,
    /// A UTC day's.
    Day,
}

/// Which sketches make up the visitors of `[from, to)` (Unix seconds; rollup hours `h`
/// with `from <= h < to` are in it): the days wholly inside it from the daily sketches,
/// the hours at either end from the hourly ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cover {
    /// Day starts `d` with `days.0 <= d < days.1` (empty when `days.0 == days.1`).
    pub days: (i64, i64),
    /// Hour starts `h` with `a <= h < b`, for each `(a, b)`.
    pub hours: Vec<(i64, i64)>,
}

/// The sketches of `[from, to)`.
pub fn cover(from: i64, to: i64) -> Cover {
    const DAY: i64 = 86_400;
    // A day is wholly inside when its first hour is at or after `from` and its last
    // (23:00) before `to`.
    let first = from.div_euclid(DAY) * DAY + if from.rem_euclid(DAY) == 0 { 0 } else { DAY };
    let last_hour = DAY - 3600;
    let days = if first + last_hour < to {
        (to - last_hour - 1 - first) / DAY + 1
    } else {
        0
    };
    if days == 0 {
        return Cover {
            days: (first, first),
            hours: vec![(from, to)],
        };
    }
    let end = first + days * DAY;
    Cover {
        days: (first, end),
        hours: vec![(from, first), (end, to)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Well-spread 64-bit ids, as the enricher's keyed hash makes them.
    fn id(i: u64) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes())
    }

    #[test]
    fn a_range_is_whole_days_and_the_hours_around_them() {
        let d = 1_796_256_000; // a UTC midnight
        assert_eq!(
            cover(d, d + 3 * 86_400),
            Cover {
                days: (d, d + 3 * 86_400),
                hours: vec![(d, d), (d + 3 * 86_400, d + 3 * 86_400)]
            }
        );
        assert_eq!(
            cover(d + 7200, d + 86_400 + 3600),
            Cover {
                days: (d + 86_400, d + 86_400),
                hours: vec![(d + 7200, d + 86_400 + 3600)]
            }
        );
        // From 02:00 on day 0 to 01:00 on day 3: day 1 and 2 whole, hours around them.
        assert_eq!(
            cover(d + 7200, d + 3 * 86_400 + 3600),
            Cover {
                days: (d + 86_400, d + 3 * 86_400),
                hours: vec![
                    (d + 7200, d + 86_400),
                    (d + 3 * 86_400, d + 3 * 86_400 + 3600)
                ]
            }
        );
        // A `to` after a day's last hour starts takes the day whole.
        assert_eq!(cover(d, d + 82_801).days, (d, d + 86_400));
        assert_eq!(cover(d, d + 82_800).days, (d, d));
    }

    #[test]
    fn small_sets_are_exact_and_survive_storage() {
        let mut v = Visitors::new();
        for i in 0..100 {
            v.insert(id(i % 37));
        }
        assert_eq!(v.estimate(), 37);
        let back = Visitors::from_bytes(&v.to_bytes()).unwrap();
        assert_eq!(back.estimate(), 37);
        assert!(Visitors::from_bytes(b"not a sketch").is_none());
        assert_eq!(Visitors::new().estimate(), 0);
        assert_eq!(
            Visitors::from_bytes(&Visitors::new().to_bytes())
                .unwrap()
                .estimate(),
            0
        );
    }

    #[test]
    fn two_million_distinct_visitors_merged_from_parts_are_within_two_percent() {
        // 24 hourly sketches of overlapping visitors: each sees a window of ids.
        let mut hours = Vec::new();
        for hour in 0..24u64 {
            let mut v = Visitors::new();
            for i in hour * 80_000..hour * 80_000 + 120_000 {
                v.insert(id(i));
            }
            hours.push(Visitors::from_bytes(&v.to_bytes()).unwrap());
        }
        let exact = 23 * 80_000 + 120_000;
        let mut day = Visitors::new();
        for h in &hours {
            day.merge(h);
            // Merging twice counts nobody twice.
            day.merge(h);
        }
        let estimate = day.estimate() as f64;
        let error = (estimate - exact as f64).abs() / exact as f64;
        assert!(exact >= 1_000_000);
        assert!(
            error < 0.02,
            "{estimate} for {exact}: {:.2} %",
            error * 100.0
        );
        let stored = day.to_bytes();
        assert!(stored.len() < 20_000, "{} bytes", stored.len());
        let mut again = Visitors::new();
        assert!(again.merge_bytes(&stored));
        assert_eq!(again.estimate(), day.estimate());
    }
}
