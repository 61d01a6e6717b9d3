//! Clicks: what the proxy captures, what ingestion makes of it, and what stats report.

use serde::{Deserialize, Serialize};

use crate::LinkId;

/// A click as captured at the edge and shipped to ingestion (the wire format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClickEvent {
    /// The followed link.
    #[serde(rename = "l")]
    pub link_id: LinkId,
    /// When, in Unix milliseconds.
    #[serde(rename = "t")]
    pub ts_ms: i64,
    /// Client IP (from the socket, or a trusted proxy's forwarding header).
    #[serde(rename = "ip", default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::IpAddr>,
    /// `User-Agent`.
    #[serde(rename = "ua", default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// `Referer`.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// The `Host` the request was made to (which domain served the link).
    #[serde(rename = "hs", default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Country code from a trusted header (e.g. `CF-IPCountry`), if configured and sent.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// True for HEAD requests (counted as bots: browsers do not send them to follow links).
    #[serde(rename = "h", default, skip_serializing_if = "std::ops::Not::not")]
    pub head: bool,
    /// True when the short URL carried the [`QR_MARKER`]: a scan of the link's QR code.
    #[serde(rename = "q", default, skip_serializing_if = "std::ops::Not::not")]
    pub qr: bool,
    /// How many identical clicks this stands for: the shipper folds clicks that differ only
    /// in their milliseconds within one second into one event (`ts_ms` is the first's).
    /// Absent on the wire means 1.
    #[serde(rename = "n", default = "one", skip_serializing_if = "is_one")]
    pub count: u32,
}

/// The query parameter the link's QR code adds to the short URL (`https://s.example/abc?qr`)
/// so a scan can be told from a click; the proxy drops the query when it redirects.
pub const QR_MARKER: &str = "qr";

/// The source recorded (in the referrer dimension) for a QR scan.
pub const QR_SOURCE: &str = "qr";

/// Whether a request's query string carries the [`QR_MARKER`] (`qr`, `qr=` or `qr=1`
/// among its parameters).
pub fn is_qr_scan(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|param| param.split_once('=').map_or(param, |(name, _)| name) == QR_MARKER)
    })
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A batch of clicks, identified so a redelivered batch is applied once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClickBatch {
    /// Unique per batch (the shipper makes 128 random bits).
    pub batch_id: String,
    /// The clicks.
    pub clicks: Vec<ClickEvent>,
}

impl ClickBatch {
    /// How many clicks the batch stands for (folded events count several).
    pub fn total(&self) -> u64 {
        self.clicks.iter().map(|c| u64::from(c.count.max(1))).sum()
    }
}

/// Device classes a click is sorted into.
pub const DEVICE_CLASSES: &[&str] = &["desktop", "mobile", "tablet", "bot", "other"];

/// A click after enrichment: what the store keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrichedClick {
    /// The followed link.
    pub link_id: LinkId,
    /// Unix milliseconds.
    pub ts_ms: i64,
    /// Anonymized client IP (IPv4 /24, IPv6 /48), or empty.
    pub ip: String,
    /// Browser family, e.g. `Chrome`, or `unknown`.
    pub browser: String,
    /// Operating system family, e.g. `iOS`, or `unknown`.
    pub os: String,
    /// One of [`DEVICE_CLASSES`].
    pub device: String,
    /// Whether a bot, crawler, link previewer or HEAD request made it.
    pub bot: bool,
    /// The referrer's host, `direct`, or [`QR_SOURCE`] for a QR scan.
    pub referrer: String,
    /// ISO country code, or `unknown`.
    pub country: String,
    /// How many identical clicks this row stands for (at least 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Who made it: a keyed hash of the anonymized address and the user agent whose key
    /// changes every UTC day (0: not known). Only sketches of it are kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub visitor: u64,
}

/// Time-series bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// One bucket per hour.
    Hour,
    /// One bucket per UTC day.
    Day,
}

impl Interval {
    /// Bucket length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Interval::Hour => 3600,
            Interval::Day => 86_400,
        }
    }
}

/// Clicks of one link in an account's top list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCount {
    /// The link.
    pub link_id: LinkId,
    /// Its domain (empty: the default domain).
    pub domain: String,
    /// Its short code.
    pub code: String,
    /// Clicks in the range (bots included or not, as asked).
    pub clicks: u64,
}

/// An account's statistics over a time range: every link it owns, summed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountStats {
    /// All clicks.
    pub total: u64,
    /// Clicks not made by bots.
    pub humans: u64,
    /// Clicks made by bots.
    pub bots: u64,
    /// Non-empty buckets, oldest first.
    pub series: Vec<SeriesPoint>,
    /// The most clicked links, most first.
    pub links: Vec<LinkCount>,
}

impl AccountStats {
    /// The account's stats: `series`' totals and buckets, and its top `links`.
    pub fn new(series: LinkStats, links: Vec<LinkCount>) -> AccountStats {
        AccountStats {
            total: series.total,
            humans: series.humans,
            bots: series.bots,
            series: series.series,
            links,
        }
    }
}

/// One `{key, count}` entry of a top-N list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KeyCount {
    /// The value (a host, a country code, a browser…).
    pub key: String,
    /// Clicks with that value.
    pub count: u64,
}

/// One time-series bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SeriesPoint {
    /// Bucket start, Unix seconds.
    pub ts: i64,
    /// Clicks in the bucket.
    pub count: u64,
}

/// A link's statistics over a time range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkStats {
    /// All clicks.
    pub total: u64,
    /// Clicks not made by bots.
    pub humans: u64,
    /// Clicks made by bots.
    pub bots: u64,
    /// Distinct people (bots left out) who clicked, estimated; a visitor is known by a
    /// key that changes every UTC day, so one who comes back another day counts again.
    pub unique_visitors: u64,
    /// Non-empty buckets, oldest first.
    pub series: Vec<SeriesPoint>,
    /// Top referrer hosts.
    pub referrers: Vec<KeyCount>,
    /// Top countries.
    pub countries: Vec<KeyCount>,
    /// Top browsers.
    pub browsers: Vec<KeyCount>,
    /// Top operating systems.
    pub os: Vec<KeyCount>,
    /// Device classes.
    pub devices: Vec<KeyCount>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_marker_is_any_parameter_named_qr() {
        assert!(is_qr_scan(Some("qr")));
        assert!(is_qr_scan(Some("qr=1")));
        assert!(is_qr_scan(Some("utm_source=x&qr")));
        assert!(!is_qr_scan(None));
        assert!(!is_qr_scan(Some("")));
        assert!(!is_qr_scan(Some("qrx")));
        assert!(!is_qr_scan(Some("x=qr")));
    }

    #[test]
    fn qr_flag_is_absent_on_the_wire_unless_set() {
        let mut click = ClickEvent {
            link_id: 1,
            ts_ms: 2,
            ip: None,
            user_agent: None,
            referrer: None,
            host: None,
            country: None,
            head: false,
            qr: false,
            count: 1,
        };
        assert!(!serde_json::to_string(&click).unwrap().contains("\"q\""));
        click.qr = true;
        let json = serde_json::to_string(&click).unwrap();
        assert!(json.contains("\"q\":true"), "{json}");
        assert_eq!(serde_json::from_str::<ClickEvent>(&json).unwrap(), click);
    }
}
