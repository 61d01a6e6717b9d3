//! Statistics: of one link (`GET /api/v1/links/{code}/stats`) and of the caller's account
//! (`GET /api/v1/stats`), from the rollups. One reading of ranges, time zones and the bots
//! filter for both.

use axum::Json;
use axum::extract::{Path, State};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use shortlink_core::time_util::{now_unix, parse_rfc3339, to_rfc3339};
use shortlink_core::{Interval, KeyCount, SeriesPoint};
use shortlink_store::{AccountStatsQuery, StatsQuery};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::ApiQuery;
use crate::links::owned_link;
use crate::openapi::api_errors;
use crate::state::AppState;

/// Most buckets one stats query may span.
const MAX_BUCKETS: i64 = 10_000;
/// Entries per top-N list.
const TOP_N: usize = 10;
/// Longest time zone name taken (the longest IANA name has 32 characters).
const MAX_TZ_LEN: usize = 64;

/// Whether bots' clicks count in the top-N lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bots {
    /// Lists count people only (the default).
    #[default]
    Exclude,
    /// Lists count every click.
    Include,
}

/// Query of `GET /api/v1/links/{code}/stats`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Start of the range (RFC 3339; default: 7 days before `to` hourly, 30 daily).
    #[param(format = DateTime)]
    from: Option<String>,
    /// End of the range (RFC 3339; default: the end of the current hour).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Bucket size of the series (default `hour`).
    interval: Option<Interval>,
    /// IANA time zone whose midnights start the daily buckets, like `Europe/Berlin`
    /// (default `UTC`).
    #[param(max_length = 64)]
    tz: Option<String>,
    /// Whether the top-N lists count bots (default `exclude`; totals and series always do).
    bots: Option<Bots>,
    /// The link's custom domain (absent: the default domain).
    domain: Option<String>,
}

/// Query of `GET /api/v1/stats`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccountStatsParams {
    /// Start of the range (RFC 3339; default: 7 days before `to` hourly, 30 daily).
    #[param(format = DateTime)]
    from: Option<String>,
    /// End of the range (RFC 3339; default: the end of the current hour).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Bucket size of the series (default `hour`).
    interval: Option<Interval>,
    /// IANA time zone whose midnights start the daily buckets, like `Europe/Berlin`
    /// (default `UTC`).
    #[param(max_length = 64)]
    tz: Option<String>,
    /// Whether the top list of links counts bots (default `exclude`; totals and series
    /// always do).
    bots: Option<Bots>,
}

/// A checked stats range: what both endpoints ask the store and echo back.
struct Range {
    from: i64,
    to: i64,
    interval: Interval,
    tz: TimeZone,
    include_bots: bool,
}

impl Range {
    /// Reads and checks `from`, `to`, `interval`, `tz` and `bots`.
    fn parse(
        from: Option<&str>,
        to: Option<&str>,
        interval: Option<Interval>,
        tz: Option<&str>,
        bots: Option<Bots>,
    ) -> Result<Range, ApiError> {
        let interval = interval.unwrap_or(Interval::Hour);
        let tz = match tz.map(str::trim).filter(|t| !t.is_empty()) {
            None => TimeZone::UTC,
            Some(name) => {
                let found = (name.len() <= MAX_TZ_LEN)
                    .then(|| TimeZone::get(name).ok())
                    .flatten();
                let Some(tz) = found else {
                    return Err(ApiError::new(
                        ErrorCode::InvalidQuery,
                        "tz is not a time zone name like Europe/Berlin, America/New_York or UTC",
                    ));
                };
                tz
            }
        };
        let to = match to {
            Some(t) => parse_time("to", t)?,
            // The end of the current hour, so the bucket in progress is included.
            None => now_unix() - now_unix().rem_euclid(3600) + 3600,
        };
        let default_span = match interval {
            Interval::Hour => 7 * 86_400,
            Interval::Day => 30 * 86_400,
        };
        let from = match from {
            Some(f) => parse_time("from", f)?,
            None => to - default_span,
        };
        if from >= to {
            return Err(ApiError::new(
                ErrorCode::InvalidRange,
                "from must be before to",
            ));
        }
        if (to - from) / interval.seconds() > MAX_BUCKETS {
            return Err(ApiError::new(
                ErrorCode::RangeTooLarge,
                format!(
                    "a query may span at most {MAX_BUCKETS} buckets; use interval=day or a shorter range"
                ),
            ));
        }
        Ok(Range {
            from,
            to,
            interval,
            tz,
            include_bots: bots.unwrap_or_default() == Bots::Include,
        })
    }

    /// The zone's IANA name, as the database spells it.
    fn tz_name(&self) -> &str {
        self.tz.iana_name().unwrap_or("UTC")
    }

    /// Whether daily buckets start at other than UTC midnights: the store is then asked
    /// for hours, folded here into the zone's days.
    fn local_days(&self) -> bool {
        self.interval == Interval::Day && self.tz != TimeZone::UTC
    }

    /// The bucket size to ask the store for.
    fn store_interval(&self) -> Interval {
        if self.local_days() {
            Interval::Hour
        } else {
            self.interval
        }
    }

    /// The store's series in the asked buckets.
    fn series(&self, points: Vec<SeriesPoint>) -> Vec<SeriesPoint> {
        if self.local_days() {
            fold_into_days(points, &self.tz)
        } else {
            points
        }
    }
}

/// Folds hourly points (oldest first) into the days of `tz`: an hour counts in the local
/// day its start falls on (in a zone whose offset is not whole hours, the hour that holds
/// midnight counts in the day it started in). Buckets are keyed by the local midnight's
/// instant, so a day of 23 or 25 hours around a clock change is still one bucket.
fn fold_into_days(points: Vec<SeriesPoint>, tz: &TimeZone) -> Vec<SeriesPoint> {
    let mut out: Vec<SeriesPoint> = Vec::new();
    for point in points {
        let day = Timestamp::from_second(point.ts)
            .ok()
            .and_then(|t| t.to_zoned_datetime(tz.clone()).start_of_day().ok())
            .map_or(point.ts, |start| start.timestamp().as_second());
        match out.last_mut() {
            Some(last) if last.ts == day => last.count += point.count,
            _ => out.push(SeriesPoint {
                ts: day,
                count: point.count,
            }),
        }
    }
    out
}

pub(crate) fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    parse_rfc3339(text).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRange,
            format!("{name} '{text}' is not an RFC 3339 time like 2030-01-31T12:00:00Z"),
        )
    })
}

api_errors!(LinkStatsErrors: AUTH, QUERY; NotFound, InvalidRange, RangeTooLarge);
api_errors!(AccountStatsErrors: AUTH, QUERY; InvalidRange, RangeTooLarge);

/// A link's statistics as the API shows them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsView {
    /// The link's short code.
    code: String,
    /// Start of the range (RFC 3339).
    #[schema(format = DateTime)]
    from: String,
    /// End of the range (RFC 3339).
    #[schema(format = DateTime)]
    to: String,
    /// Bucket size of the series.
    interval: Interval,
    /// The time zone of the daily buckets.
    tz: String,
    /// Whether the top-N lists count bots' clicks (`?bots=include`).
    include_bots: bool,
    /// Clicks in the range.
    total: u64,
    /// Clicks not made by bots.
    humans: u64,
    /// Clicks made by bots.
    bots: u64,
    /// Distinct people who clicked in the range (bots left out), estimated with
    /// HyperLogLog: exact up to about a hundred, a standard error of 0.81 % beyond. A visitor is
    /// known by their network (IPv4 /24, IPv6 /48) and user agent, hashed with a key that
    /// changes every UTC day: one who comes back another day counts again.
    unique_visitors: u64,
    /// Non-empty buckets, oldest first.
    series: Vec<SeriesPoint>,
    /// Top referrer hosts.
    referrers: Vec<KeyCount>,
    /// Top countries.
    countries: Vec<KeyCount>,
    /// Top browsers.
    browsers: Vec<KeyCount>,
    /// Top operating systems.
    os: Vec<KeyCount>,
    /// Top device classes.
    devices: Vec<KeyCount>,
}

/// `GET /api/v1/links/{code}/stats`: counts from the rollups. `to` defaults to now, `from`
/// to 7 days (hourly) or 30 days (daily) before `to`. Series buckets are hours, or days
/// starting at midnight in `tz`; the top-N lists cover the whole UTC days the range touches
/// and leave bots out unless `bots=include`.
#[utoipa::path(
    get,
    path = "/api/v1/links/{code}/stats",
    tag = "links",
    params(("code" = String, Path, description = "The link's short code."), StatsParams),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The link's statistics.", body = StatsView), LinkStatsErrors),
)]
pub async fn link_stats(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    ApiQuery(params): ApiQuery<StatsParams>,
) -> Result<Json<StatsView>, ApiError> {
    let link = owned_link(&state, &caller, params.domain.as_deref(), &code).await?;
    let range = Range::parse(
        params.from.as_deref(),
        params.to.as_deref(),
        params.interval,
        params.tz.as_deref(),
        params.bots,
    )?;
    let stats = state
        .store()
        .link_stats(StatsQuery {
            link_id: link.id,
            from: range.from,
            to: range.to,
            interval: range.store_interval(),
            top: TOP_N,
            include_bots: range.include_bots,
        })
        .await?;
    Ok(Json(StatsView {
        code: link.code.into_string(),
        from: to_rfc3339(range.from),
        to: to_rfc3339(range.to),
        interval: range.interval,
        series: range.series(stats.series),
        tz: range.tz_name().to_owned(),
        include_bots: range.include_bots,
        total: stats.total,
        humans: stats.humans,
        bots: stats.bots,
        unique_visitors: stats.unique_visitors,
        referrers: stats.referrers,
        countries: stats.countries,
        browsers: stats.browsers,
        os: stats.os,
        devices: stats.devices,
    }))
}

/// One link of an account's top list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TopLink {
    /// The link's short code.
    code: String,
    /// Its custom domain (absent: the default domain).
    domain: Option<String>,
    /// The short URL.
    short_url: String,
    /// Clicks in the range (people only unless `bots=include`).
    clicks: u64,
}

/// An account's statistics as the API shows them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountStatsView {
    /// Start of the range (RFC 3339).
    #[schema(format = DateTime)]
    from: String,
    /// End of the range (RFC 3339).
    #[schema(format = DateTime)]
    to: String,
    /// Bucket size of the series.
    interval: Interval,
    /// The time zone of the daily buckets.
    tz: String,
    /// Whether the top list counts bots' clicks (`?bots=include`).
    include_bots: bool,
    /// Clicks on every link of the account in the range (deleted links' too).
    total: u64,
    /// Clicks not made by bots.
    humans: u64,
    /// Clicks made by bots.
    bots: u64,
    /// Non-empty buckets, oldest first.
    series: Vec<SeriesPoint>,
    /// The most clicked links, most first (at most 10; deleted links are left out).
    links: Vec<TopLink>,
}

/// `GET /api/v1/stats`: the caller's whole account, from its own rollups: totals, series
/// and the most clicked links. Ranges, `tz` and `bots` read as for a link's stats.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "links",
    params(AccountStatsParams),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The account's statistics.", body = AccountStatsView), AccountStatsErrors),
)]
pub async fn account_stats(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AccountStatsParams>,
) -> Result<Json<AccountStatsView>, ApiError> {
    let range = Range::parse(
        params.from.as_deref(),
        params.to.as_deref(),
        params.interval,
        params.tz.as_deref(),
        params.bots,
    )?;
    let stats = state
        .store()
        .account_stats(AccountStatsQuery {
            owner: caller.user.id,
            from: range.from,
            to: range.to,
            interval: range.store_interval(),
            top: TOP_N,
            include_bots: range.include_bots,
        })
        .await?;
    let links = stats
        .links
        .into_iter()
        .map(|l| TopLink {
            short_url: state.short_url(&l.domain, &l.code),
            domain: (!l.domain.is_empty()).then_some(l.domain),
            code: l.code,
            clicks: l.clicks,
        })
        .collect();
    Ok(Json(AccountStatsView {
        from: to_rfc3339(range.from),
        to: to_rfc3339(range.to),
        interval: range.interval,
        series: range.series(stats.series),
        tz: range.tz_name().to_owned(),
        include_bots: range.include_bots,
        total: stats.total,
        humans: stats.humans,
        bots: stats.bots,
        links,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ts: i64, count: u64) -> SeriesPoint {
        SeriesPoint { ts, count }
    }

    #[test]
    fn hours_fold_into_local_days_across_clock_changes() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 2026-03-29 is 23 hours long in Berlin (CET → CEST at 01:00 UTC): midnight is
        // 2026-03-28T23:00Z, the next one 2026-03-29T22:00Z.
        let start = 1_774_738_800; // 2026-03-28T23:00:00Z
        let hours: Vec<SeriesPoint> = (0..25).map(|h| point(start + h * 3600, 1)).collect();
        assert_eq!(
            fold_into_days(hours, &berlin),
            vec![point(start, 23), point(start + 23 * 3600, 2)]
        );
        let kolkata = TimeZone::get("Asia/Kolkata").unwrap();
        // +05:30: the UTC hour 18:00–19:00 holds midnight; it counts in the day it began.
        let day = 1_774_656_000; // 2026-03-28T00:00:00Z
        let got = fold_into_days(
            vec![point(day + 18 * 3600, 1), point(day + 19 * 3600, 1)],
            &kolkata,
        );
        assert_eq!(
            got,
            vec![
                point(day - 5 * 3600 - 1800, 1),
                point(day + 18 * 3600 + 1800, 1)
            ]
        );
    }

    #[test]
    fn ranges_and_zones_are_checked() {
        let err = |r: Result<Range, ApiError>| r.err().map(|e| e.code());
        let ok = Range::parse(
            None,
            None,
            Some(Interval::Day),
            Some("America/New_York"),
            None,
        );
        let ok = ok.unwrap();
        assert!(ok.local_days() && !ok.include_bots);
        assert_eq!(ok.store_interval(), Interval::Hour);
        let utc = Range::parse(
            None,
            None,
            Some(Interval::Day),
            Some("UTC"),
            Some(Bots::Include),
        );
        let utc = utc.unwrap();
        assert!(!utc.local_days() && utc.include_bots);
        for tz in ["Mars/Olympus", "../../etc/passwd", &"A".repeat(65)] {
            assert_eq!(
                err(Range::parse(None, None, None, Some(tz), None)),
                Some(ErrorCode::InvalidQuery),
                "{tz}"
            );
        }
        assert_eq!(
            err(Range::parse(
                Some("2030-01-02T00:00:00Z"),
                Some("2030-01-01T00:00:00Z"),
                None,
                None,
                None
            )),
            Some(ErrorCode::InvalidRange)
        );
    }
}
