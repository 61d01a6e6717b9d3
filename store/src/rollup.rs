//! What a batch of counted clicks adds to the rollups, and the click log's line format:
//! the arithmetic every backend shares, so their numbers cannot drift apart.

use std::collections::HashMap;

use crate::visitors::Visitors;
use shortlink_core::time_util::ms_to_rfc3339;
use shortlink_core::{
    EnrichedClick, KeyCount, LinkClicks, LinkId, LinkStats, NewEvent, SeriesPoint, UserId,
};

/// Dimension names of the daily rollups, in the order of `LinkStats`' lists. A row of one
/// of these counts every click with that value, bots included.
pub const DIMS: [&str; 5] = ["referrer", "country", "browser", "os", "device"];

/// Marks a daily rollup row that counts only the bots' clicks of its dimension and value:
/// a top-N list without bots is the first minus the second. (Rows written before these
/// existed count their bots as people.)
pub const BOT_SUFFIX: &str = ":bot";

/// [`DIMS`] with [`BOT_SUFFIX`], in the same order.
pub const BOT_DIMS: [&str; 5] = [
    "referrer:bot",
    "country:bot",
    "browser:bot",
    "os:bot",
    "device:bot",
];

/// The start (Unix seconds) of the UTC hour holding `ts_ms`.
pub fn hour_of(ts_ms: i64) -> i64 {
    let s = ts_ms.div_euclid(1000);
    s - s.rem_euclid(3600)
}

/// The start (Unix seconds) of the UTC day holding `seconds`.
pub fn day_of(seconds: i64) -> i64 {
    seconds - seconds.rem_euclid(86_400)
}

/// Clicks a link got in one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkDelta {
    /// Clicks (a folded row counts as its `count`).
    pub clicks: i64,
    /// Of which by bots.
    pub bots: i64,
    /// The first click's time, Unix ms.
    pub first_ms: i64,
    /// The last click's time, Unix ms.
    pub last_ms: i64,
}

impl LinkDelta {
    /// The link's one `link.clicked` event for this batch, for its owner.
    pub fn clicked_event(&self, owner: UserId, domain: &str, code: &str) -> NewEvent {
        LinkClicks {
            code: code.to_owned(),
            domain: domain.to_owned(),
            count: self.clicks.max(0) as u64,
            bots: self.bots.max(0) as u64,
            from: ms_to_rfc3339(self.first_ms),
            to: ms_to_rfc3339(self.last_ms),
        }
        .into_event(owner)
    }
}

/// A batch's additions, merged per rollup row.
#[derive(Debug, Default)]
pub struct RollupDelta<'a> {
    /// (link, hour start) → (clicks, bot clicks).
    pub hours: HashMap<(LinkId, i64), (i64, i64)>,
    /// (link, day start, dimension, value) → clicks; a bot's click also counts in the
    /// dimension's [`BOT_DIMS`] row.
    pub days: HashMap<(LinkId, i64, &'static str, &'a str), i64>,
    /// Per link.
    pub links: HashMap<LinkId, LinkDelta>,
    /// (link, hour start) → the hour's human visitors.
    pub visitor_hours: HashMap<(LinkId, i64), Visitors>,
    /// (link, day start) → the day's human visitors.
    pub visitor_days: HashMap<(LinkId, i64), Visitors>,
}

/// A batch's additions to its owners' rollups (account-wide stats).
#[derive(Debug, Default)]
pub struct OwnerDelta {
    /// (owner, hour start) → (clicks, bot clicks).
    pub hours: HashMap<(UserId, i64), (i64, i64)>,
    /// (owner, day start, link) → (clicks, bot clicks).
    pub link_days: HashMap<(UserId, i64, LinkId), (i64, i64)>,
}

impl<'a> RollupDelta<'a> {
    /// Merges `clicks` (already filtered to known links).
    pub fn of(clicks: &[&'a EnrichedClick]) -> RollupDelta<'a> {
        let mut delta = RollupDelta::default();
        for c in clicks {
            let n = i64::from(c.count.max(1));
            let bots = if c.bot { n } else { 0 };
            let hour = hour_of(c.ts_ms);
            let slot = delta.hours.entry((c.link_id, hour)).or_default();
            slot.0 += n;
            slot.1 += bots;
            let day = day_of(hour);
            let keys = [&c.referrer, &c.country, &c.browser, &c.os, &c.device];
            for (dim, key) in DIMS.iter().zip(keys) {
                *delta
                    .days
                    .entry((c.link_id, day, *dim, key.as_str()))
                    .or_default() += n;
            }
            if c.bot {
                for (dim, key) in BOT_DIMS.iter().zip(keys) {
                    *delta
                        .days
                        .entry((c.link_id, day, *dim, key.as_str()))
                        .or_default() += n;
                }
            }
            let seen = delta.links.entry(c.link_id).or_insert(LinkDelta {
                clicks: 0,
                bots: 0,
                first_ms: c.ts_ms,
                last_ms: c.ts_ms,
            });
            seen.clicks += n;
            seen.bots += bots;
            seen.first_ms = seen.first_ms.min(c.ts_ms);
            seen.last_ms = seen.last_ms.max(c.ts_ms);
            if c.visitor != 0 && !c.bot {
                let visitor = c.visitor;
                delta
                    .visitor_hours
                    .entry((c.link_id, hour))
                    .or_default()
                    .insert(visitor);
                delta
                    .visitor_days
                    .entry((c.link_id, day))
                    .or_default()
                    .insert(visitor);
            }
        }
        delta
    }

    /// Clicks in the batch.
    pub fn total(&self) -> i64 {
        self.links.values().map(|l| l.clicks).sum()
    }

    /// The additions to the owners' rollups; `owner_of` names each link's owner (links
    /// it does not know are left out).
    pub fn owners(&self, owner_of: impl Fn(LinkId) -> Option<UserId>) -> OwnerDelta {
        let mut out = OwnerDelta::default();
        for (&(link, hour), &(total, bots)) in &self.hours {
            let Some(owner) = owner_of(link) else {
                continue;
            };
            let slot = out.hours.entry((owner, hour)).or_default();
            slot.0 += total;
            slot.1 += bots;
            let slot = out
                .link_days
                .entry((owner, day_of(hour), link))
                .or_default();
            slot.0 += total;
            slot.1 += bots;
        }
        out
    }
}

/// A click log row: one owner's clicks of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerLog {
    /// The owner of the links clicked.
    pub owner: UserId,
    /// Clicks it stands for (a folded line counts as its `count`).
    pub clicks: i64,
    /// The clicks in the log's line format ([`encode_log`]).
    pub body: Vec<u8>,
}

/// A batch's clicks as click log rows, one per owner (`owner_of` names each link's owner;
/// clicks of links it does not know are left out), so an account's clicks are read
/// without the others'.
pub fn owner_logs(
    clicks: &[&EnrichedClick],
    owner_of: impl Fn(LinkId) -> Option<UserId>,
) -> Vec<OwnerLog> {
    let mut by_owner: HashMap<UserId, Vec<&EnrichedClick>> = HashMap::new();
    for c in clicks {
        if let Some(owner) = owner_of(c.link_id) {
            by_owner.entry(owner).or_default().push(c);
        }
    }
    by_owner
        .into_iter()
        .map(|(owner, clicks)| OwnerLog {
            owner,
            clicks: clicks.iter().map(|c| i64::from(c.count.max(1))).sum(),
            body: encode_log(&clicks),
        })
        .collect()
}

/// Sums of daily rollup rows per (dimension, value), made into top-N lists.
#[derive(Debug, Default)]
pub struct Tops {
    all: HashMap<(String, String), i64>,
    bots: HashMap<(String, String), i64>,
}

impl Tops {
    /// Adds a rollup row (or a sum of rows) of `dim` (one of [`DIMS`] or [`BOT_DIMS`]).
    pub fn add(&mut self, dim: &str, key: String, count: i64) {
        match dim.strip_suffix(BOT_SUFFIX) {
            Some(base) => *self.bots.entry((base.to_owned(), key)).or_default() += count,
            None => *self.all.entry((dim.to_owned(), key)).or_default() += count,
        }
    }

    /// Fills `stats`' top-N lists, `top` entries each, most clicks first (ties by value);
    /// without bots' clicks unless `include_bots`. Values left with no clicks are dropped.
    pub fn finish(self, stats: &mut LinkStats, top: usize, include_bots: bool) {
        let Tops { all, bots } = self;
        let mut rows: Vec<((String, String), i64)> = all
            .into_iter()
            .map(|(dk, n)| {
                let n = if include_bots {
                    n
                } else {
                    n - bots.get(&dk).copied().unwrap_or(0)
                };
                (dk, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.1.cmp(&b.0.1)));
        for ((dim, key), count) in rows {
            add_top(stats, &dim, key, count, top);
        }
    }
}

/// Links by their clicks in `rows` of (link, clicks, bot clicks), one row per link, most
/// first; without bots' clicks unless `include_bots`. Links left with none are dropped.
pub fn rank_links(
    rows: impl IntoIterator<Item = (LinkId, i64, i64)>,
    include_bots: bool,
) -> Vec<(LinkId, u64)> {
    let mut ranked: Vec<(LinkId, u64)> = rows
        .into_iter()
        .map(|(link, total, bots)| (link, if include_bots { total } else { total - bots }))
        .filter(|(_, n)| *n > 0)
        .map(|(link, n)| (link, n as u64))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked
}

/// A log field with tabs and newlines (the log's separators) replaced by spaces.
fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\t', '\n']) {
        text.replace(['\t', '\n'], " ").into()
    } else {
        text.into()
    }
}

/// Encodes clicks for the click log as tab-separated lines (link id, time in ms, ip,
/// browser, os, device, bot, referrer, country, count): about a third of the size of
/// JSON, which matters because the log is most of what ingestion writes.
pub fn encode_log(clicks: &[&EnrichedClick]) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(clicks.len() * 64);
    for c in clicks {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            c.link_id,
            c.ts_ms,
            c.ip,
            clean(&c.browser),
            clean(&c.os),
            c.device,
            u8::from(c.bot),
            clean(&c.referrer),
            clean(&c.country),
            c.count
        );
    }
    out
}

/// How many clicks the click log's lines stand for (a folded line counts as its count).
pub fn log_clicks(body: &[u8]) -> i64 {
    decode_log(body).map(|c| i64::from(c.count.max(1))).sum()
}

/// Decodes the click log's lines (see [`encode_log`]); a line it cannot read is skipped,
/// and one written before the count existed stands for one click.
pub fn decode_log(body: &[u8]) -> impl Iterator<Item = EnrichedClick> + '_ {
    body.split(|b| *b == b'\n').filter_map(|line| {
        let line = std::str::from_utf8(line).ok()?;
        let mut f = line.split('\t');
        let link_id = f.next()?.parse().ok()?;
        let ts_ms = f.next()?.parse().ok()?;
        let ip = f.next()?.to_owned();
        let browser = f.next()?.to_owned();
        let os = f.next()?.to_owned();
        let device = f.next()?.to_owned();
        let bot = f.next()? == "1";
        let referrer = f.next()?.to_owned();
        let country = f.next()?.to_owned();
        let count = f.next().and_then(|n| n.parse().ok()).unwrap_or(1);
        Some(EnrichedClick {
            link_id,
            ts_ms,
            ip,
            browser,
            os,
            device,
            bot,
            referrer,
            country,
            count,
            visitor: 0,
        })
    })
}

/// Adds an hourly rollup row to `stats`: the totals, and the series bucket of `step`
/// seconds it falls in (rows must come oldest first).
pub fn add_hour(stats: &mut LinkStats, hour: i64, total: u64, bots: u64, step: i64) {
    stats.total += total;
    stats.bots += bots;
    stats.humans = stats.total - stats.bots;
    let ts = hour - hour.rem_euclid(step);
    match stats.series.last_mut() {
        Some(last) if last.ts == ts => last.count += total,
        _ => stats.series.push(SeriesPoint { ts, count: total }),
    }
}

/// Appends a (dimension, value, clicks) row to its top list unless that list holds `top`
/// entries already (rows must come in descending count order).
fn add_top(stats: &mut LinkStats, dim: &str, key: String, count: i64, top: usize) {
    let list = match dim {
        "referrer" => &mut stats.referrers,
        "country" => &mut stats.countries,
        "browser" => &mut stats.browsers,
        "os" => &mut stats.os,
        "device" => &mut stats.devices,
        _ => return,
    };
    if list.len() < top {
        list.push(KeyCount {
            key,
            count: count.max(0) as u64,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click(link_id: LinkId, bot: bool, referrer: &str) -> EnrichedClick {
        EnrichedClick {
            link_id,
            ts_ms: 1_700_000_000_123,
            ip: "192.0.2.0".into(),
            browser: "Chrome".into(),
            os: "Windows".into(),
            device: "desktop".into(),
            bot,
            referrer: referrer.into(),
            country: "NL".into(),
            count: 2,
            visitor: 0,
        }
    }

    #[test]
    fn the_log_reads_back_what_was_written() {
        let clicks = [click(1, false, "a.example"), click(2, true, "tab\there")];
        let body = encode_log(&clicks.iter().collect::<Vec<_>>());
        let back: Vec<EnrichedClick> = decode_log(&body).collect();
        assert_eq!(back[0], clicks[0]);
        assert_eq!(
            back[1].referrer, "tab here",
            "separators in a field become spaces"
        );
        assert_eq!(back.len(), 2);
        let old = b"7\t5\t\tFirefox\tLinux\tdesktop\t0\tdirect\tDE\nbroken line\n";
        let back: Vec<EnrichedClick> = decode_log(old).collect();
        assert_eq!((back.len(), back[0].count, back[0].link_id), (1, 1, 7));
    }

    #[test]
    fn lists_without_bots_subtract_their_rows() {
        let clicks = [
            click(1, false, "a.example"),
            click(1, true, "a.example"),
            click(1, true, "b.example"),
        ];
        let refs: Vec<&EnrichedClick> = clicks.iter().collect();
        let delta = RollupDelta::of(&refs);
        let mut tops = Tops::default();
        for ((_, _, dim, key), n) in &delta.days {
            tops.add(dim, (*key).to_owned(), *n);
        }
        let mut people = LinkStats::default();
        Tops {
            all: tops.all.clone(),
            bots: tops.bots.clone(),
        }
        .finish(&mut people, 10, false);
        assert_eq!(
            people.referrers,
            vec![KeyCount {
                key: "a.example".into(),
                count: 2
            }]
        );
        let mut everyone = LinkStats::default();
        tops.finish(&mut everyone, 10, true);
        assert_eq!(
            everyone.referrers[0],
            KeyCount {
                key: "a.example".into(),
                count: 4
            }
        );
        assert_eq!(
            everyone.referrers[1],
            KeyCount {
                key: "b.example".into(),
                count: 2
            }
        );
        let owners = delta.owners(|link| (link == 1).then_some(9));
        assert_eq!(
            owners.hours.values().copied().collect::<Vec<_>>(),
            vec![(6, 4)]
        );
        assert_eq!(
            rank_links([(1, 6, 4), (2, 3, 0), (3, 1, 1)], false),
            vec![(2, 3), (1, 2)]
        );
    }
}
