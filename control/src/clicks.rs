//! Raw click export: `GET /api/v1/clicks` (the caller's account) and
//! `GET /api/v1/links/{code}/clicks` (one link), as CSV or NDJSON, streamed from the click
//! log in the order clicks were logged. Every record carries the cursor that resumes after
//! it, so a broken download goes on from the last record received.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shortlink_core::time_util::ms_to_rfc3339;
use shortlink_core::{EnrichedClick, LinkId, UserId};
use shortlink_store::{ClickCursor, ClickLogQuery, ClickPage};

use crate::auth::Caller;
use crate::bulk::csv_line;
use crate::error::{ApiError, ErrorCode};
use crate::extract::ApiQuery;
use crate::links::owned_link;
use crate::openapi::api_errors;
use crate::state::AppState;
use crate::stats::parse_time;

/// Clicks asked of the store per page.
const PAGE: usize = 500;
/// Longest cursor taken.
const MAX_CURSOR_LEN: usize = 200;

/// The CSV header: the record's fields in order.
const CSV_COLUMNS: [&str; 12] = [
    "time", "code", "domain", "ip", "browser", "os", "device", "bot", "referrer", "country",
    "count", "cursor",
];

/// Format of an export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Comma-separated values with a header line (the default).
    #[default]
    Csv,
    /// One JSON object per line.
    Ndjson,
}

/// Query of `GET /api/v1/clicks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClickExportParams {
    /// `csv` (default) or `ndjson`.
    format: Option<ExportFormat>,
    /// Resume after the record that carried this cursor.
    #[param(
        max_length = 200,
        pattern = r"^-?[0-9]{1,18}\.[0-9]{1,10}\.[A-Za-z0-9_-]{0,64}$"
    )]
    cursor: Option<String>,
    /// Only clicks at or after this time (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Only clicks before this time (RFC 3339).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Most clicks in this response (default: every click kept).
    #[param(minimum = 1, maximum = 4294967295_u64)]
    limit: Option<u32>,
}

/// Query of `GET /api/v1/links/{code}/clicks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LinkClickExportParams {
    /// `csv` (default) or `ndjson`.
    format: Option<ExportFormat>,
    /// Resume after the record that carried this cursor.
    #[param(
        max_length = 200,
        pattern = r"^-?[0-9]{1,18}\.[0-9]{1,10}\.[A-Za-z0-9_-]{0,64}$"
    )]
    cursor: Option<String>,
    /// Only clicks at or after this time (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Only clicks before this time (RFC 3339).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Most clicks in this response (default: every click kept).
    #[param(minimum = 1, maximum = 4294967295_u64)]
    limit: Option<u32>,
    /// The link's custom domain (absent: the default domain).
    domain: Option<String>,
}

/// One exported click (an NDJSON line; CSV has the same fields in this order).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClickRecord {
    /// When the click happened (RFC 3339, milliseconds).
    #[schema(format = DateTime)]
    time: String,
    /// The link's short code (empty: the link was deleted since).
    code: String,
    /// The link's custom domain (absent: the default domain).
    domain: Option<String>,
    /// The client's address, anonymized (IPv4 /24, IPv6 /48), or empty.
    ip: String,
    /// Browser family.
    browser: String,
    /// Operating system family.
    os: String,
    /// Device class.
    device: String,
    /// Whether a bot, crawler, link previewer or HEAD request made it.
    bot: bool,
    /// The referrer's host, `direct`, or `qr`.
    referrer: String,
    /// ISO country code, or `unknown`.
    country: String,
    /// Identical clicks this record stands for (at least 1).
    count: u32,
    /// Pass as `?cursor=` to export what came after this record.
    cursor: String,
}

/// A cursor as the API shows it: `position.line.batch`.
fn cursor_text(c: &ClickCursor) -> String {
    format!("{}.{}.{}", c.position, c.line, c.batch)
}

fn parse_cursor(text: &str) -> Result<ClickCursor, ApiError> {
    let bad = || {
        ApiError::new(
            ErrorCode::InvalidCursor,
            "cursor is not one this export gave",
        )
    };
    if text.len() > MAX_CURSOR_LEN {
        return Err(bad());
    }
    let mut parts = text.splitn(3, '.');
    let position = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    // A row read whole is `u32::MAX`; larger numbers mean the same.
    let line = parts
        .next()
        .and_then(|p| p.parse::<u64>().ok())
        .ok_or_else(bad)?
        .min(u64::from(u32::MAX)) as u32;
    let batch = parts.next().ok_or_else(bad)?.to_owned();
    // Batch ids are what ingestion accepts: letters, digits, `-` and `_`.
    if batch.len() > 64
        || !batch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad());
    }
    Ok(ClickCursor {
        position,
        batch,
        line,
    })
}

/// What one export reads: checked from either endpoint's query.
struct Export {
    owner: UserId,
    link: Option<LinkId>,
    format: ExportFormat,
    after: Option<ClickCursor>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    limit: Option<u64>,
}

impl Export {
    #[allow(clippy::too_many_arguments)]
    fn parse(
        owner: UserId,
        link: Option<LinkId>,
        format: Option<ExportFormat>,
        cursor: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        limit: Option<u64>,
    ) -> Result<Export, ApiError> {
        let time = |name: &str, text: Option<&str>| {
            text.map(|t| parse_time(name, t).map(|s| s.saturating_mul(1000)))
                .transpose()
        };
        let (from_ms, to_ms) = (time("from", from)?, time("to", to)?);
        if let (Some(f), Some(t)) = (from_ms, to_ms)
            && f >= t
        {
            return Err(ApiError::new(
                ErrorCode::InvalidRange,
                "from must be before to",
            ));
        }
        if limit == Some(0) {
            return Err(ApiError::new(
                ErrorCode::InvalidLimit,
                "limit must be at least 1",
            ));
        }
        Ok(Export {
            owner,
            link,
            format: format.unwrap_or_default(),
            after: cursor.map(parse_cursor).transpose()?,
            from_ms,
            to_ms,
            limit,
        })
    }

    /// Whether the click falls in the asked time range.
    fn wanted(&self, click: &EnrichedClick) -> bool {
        self.from_ms.is_none_or(|f| click.ts_ms >= f) && self.to_ms.is_none_or(|t| click.ts_ms < t)
    }

    /// At most `take` of the page's records in the export's format, and how many.
    fn render(&self, page: &ClickPage, take: usize) -> (String, u64) {
        let mut out = String::new();
        let mut sent = 0;
        for (click, cursor) in page
            .clicks
            .iter()
            .filter(|(c, _)| self.wanted(c))
            .take(take)
        {
            let (domain, code) = page
                .links
                .get(&click.link_id)
                .map_or(("", ""), |(d, c)| (d.as_str(), c.as_str()));
            let record = ClickRecord {
                time: ms_to_rfc3339(click.ts_ms),
                code: code.to_owned(),
                domain: (!domain.is_empty()).then(|| domain.to_owned()),
                ip: click.ip.clone(),
                browser: click.browser.clone(),
                os: click.os.clone(),
                device: click.device.clone(),
                bot: click.bot,
                referrer: click.referrer.clone(),
                country: click.country.clone(),
                count: click.count.max(1),
                cursor: cursor_text(cursor),
            };
            match self.format {
                ExportFormat::Ndjson => {
                    out.push_str(&serde_json::to_string(&record).unwrap_or_default());
                    out.push('\n');
                }
                ExportFormat::Csv => {
                    let count = record.count.to_string();
                    out.push_str(&csv_line(&[
                        &record.time,
                        &record.code,
                        record.domain.as_deref().unwrap_or(""),
                        &record.ip,
                        &record.browser,
                        &record.os,
                        &record.device,
                        if record.bot { "true" } else { "false" },
                        &record.referrer,
                        &record.country,
                        &count,
                        &record.cursor,
                    ]));
                }
            }
            sent += 1;
        }
        (out, sent)
    }

    /// The streamed response.
    fn respond(self, state: AppState) -> Response {
        use futures_util::StreamExt;
        let (content_type, filename, head) = match self.format {
            ExportFormat::Csv => (
                "text/csv; charset=utf-8",
                "attachment; filename=\"clicks.csv\"",
                csv_line(&CSV_COLUMNS),
            ),
            ExportFormat::Ndjson => (
                "application/x-ndjson",
                "attachment; filename=\"clicks.ndjson\"",
                String::new(),
            ),
        };
        let after = self.after.clone();
        let left = self.limit;
        let export = std::sync::Arc::new(self);
        // State: where to read next and how many records may still go out; `None` ends.
        let pages = futures_util::stream::unfold(Some((after, left)), move |step| {
            let state = state.clone();
            let export = export.clone();
            async move {
                let (after, left) = step?;
                if left == Some(0) {
                    return None;
                }
                let query = ClickLogQuery {
                    owner: export.owner,
                    link: export.link,
                    after,
                    limit: PAGE,
                };
                match state.store().owner_clicks(query).await {
                    Ok(page) => {
                        let take =
                            left.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
                        let (text, sent) = export.render(&page, take);
                        let left = left.map(|l| l - sent);
                        let next = page.next.map(|n| (Some(n), left));
                        Some((Ok::<_, std::io::Error>(text), next))
                    }
                    Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
                }
            }
        });
        let body = futures_util::stream::once(async move { Ok(head) }).chain(pages);
        let mut response = Body::from_stream(body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static(filename),
        );
        response
    }
}

api_errors!(ClickExportErrors: AUTH, QUERY; InvalidCursor, InvalidRange, InvalidLimit);
api_errors!(LinkClickExportErrors: AUTH, QUERY; NotFound, InvalidCursor, InvalidRange, InvalidLimit);

/// `GET /api/v1/clicks`: every click on the caller's links kept in the click log (the
/// retention period), oldest logged first, streamed.
#[utoipa::path(
    get,
    path = "/api/v1/clicks",
    tag = "links",
    params(ClickExportParams),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "The clicks: CSV with a header line \
            (`time,code,domain,ip,browser,os,device,bot,referrer,country,count,cursor`) or \
            NDJSON (one `ClickRecord` a line). Each record's `cursor` resumes after it.",
         content((String = "text/csv"), (ClickRecord = "application/x-ndjson")),
         headers(("Content-Disposition" = String, description = "`attachment; filename=\"clicks.csv\"` or `clicks.ndjson`."))),
        ClickExportErrors,
    ),
)]
pub async fn export_clicks(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ClickExportParams>,
) -> Result<Response, ApiError> {
    let export = Export::parse(
        caller.user.id,
        None,
        params.format,
        params.cursor.as_deref(),
        params.from.as_deref(),
        params.to.as_deref(),
        params.limit.map(u64::from),
    )?;
    Ok(export.respond(state))
}

/// `GET /api/v1/links/{code}/clicks`: one link's clicks, as `GET /api/v1/clicks`.
#[utoipa::path(
    get,
    path = "/api/v1/links/{code}/clicks",
    tag = "links",
    params(("code" = String, Path, description = "The link's short code."), LinkClickExportParams),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "The link's clicks, as `GET /api/v1/clicks` gives them.",
         content((String = "text/csv"), (ClickRecord = "application/x-ndjson")),
         headers(("Content-Disposition" = String, description = "`attachment; filename=\"clicks.csv\"` or `clicks.ndjson`."))),
        LinkClickExportErrors,
    ),
)]
pub async fn export_link_clicks(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    ApiQuery(params): ApiQuery<LinkClickExportParams>,
) -> Result<Response, ApiError> {
    let link = owned_link(&state, &caller, params.domain.as_deref(), &code).await?;
    let export = Export::parse(
        caller.user.id,
        Some(link.id),
        params.format,
        params.cursor.as_deref(),
        params.from.as_deref(),
        params.to.as_deref(),
        params.limit.map(u64::from),
    )?;
    Ok(export.respond(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_and_hostile_ones_are_refused() {
        let c = ClickCursor {
            position: 1_700_000_000_123,
            batch: "p1-7_x".into(),
            line: 4,
        };
        assert_eq!(parse_cursor(&cursor_text(&c)).unwrap(), c);
        let whole = parse_cursor("5.99999999999.").unwrap();
        assert_eq!((whole.position, whole.line), (5, u32::MAX));
        for bad in [
            "",
            "x.1.",
            "1.x.",
            "1.2",
            "1.-3.",
            &"9".repeat(300),
            "1.2.a\nb",
            "1.2.a.b",
        ] {
            assert!(parse_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
