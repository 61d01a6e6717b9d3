//! Bulk CSV: `POST /api/v1/links/import` (streamed, per-line results, idempotent re-runs)
//! and `GET /api/v1/links/export` (streamed).
//!
//! Columns (a header row names them, in any order): `url` (required), `alias`, `code` (a
//! generated code to keep), `domain`, `tags` (separated by `;`), `expires_at` (RFC 3339),
//! `redirect` (301, 302, 307, 308), `max_clicks`, `targeting` (the API's JSON object),
//! `fallback_url`, `disabled`, `password_protected` (such rows are refused: the password
//! is not in the file).
//! Export writes them all and adds `short_url`, `clicks` and `created_at`, which import
//! ignores, so an export imports back as the same links at the same codes, but for
//! password-protected ones (only a hash of the password exists).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Serialize;
use shortlink_core::time_util::to_rfc3339;
use shortlink_core::{Link, LinkPatch, Targeting, validate_alias};
use shortlink_store::ListQuery;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::links::{CreateLinkRequest, TakenCode, create};
use crate::openapi::api_errors;
use crate::state::AppState;

/// Longest CSV record, in bytes.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;
/// Line errors listed in a report (all are counted).
const MAX_REPORTED_ERRORS: usize = 1000;
/// Rows created at once.
const CONCURRENCY: usize = 32;
/// Columns import reads, in the order export writes them.
const READ: [&str; 12] = [
    "url",
    "alias",
    "code",
    "domain",
    "tags",
    "expires_at",
    "redirect",
    "max_clicks",
    "targeting",
    "fallback_url",
    "disabled",
    "password_protected",
];
/// Columns export adds, which import skips.
const WRITTEN_ONLY: [&str; 3] = ["short_url", "clicks", "created_at"];

/// What an import did.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Data rows read.
    rows: u64,
    /// Links created.
    created: u64,
    /// Rows that matched a link the caller already has (a re-run).
    existing: u64,
    /// Rows refused.
    failed: u64,
    /// Why rows were refused, by line (the first 1 000).
    errors: Vec<LineError>,
}

/// Why one row was refused.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct LineError {
    /// The row's line: records counted from 1, the header and blank lines included.
    line: u64,
    /// The error code creating the link answered with, as the links API would (e.g.
    /// `url_invalid`, `alias_taken`, `invalid_expires_at`).
    #[schema(value_type = String)]
    code: ErrorCode,
    /// What went wrong, for people.
    message: String,
}

enum Outcome {
    Created,
    Existing,
}

/// Where each column [`READ`] names is in a row (`None`: absent), in [`READ`]'s order.
struct Columns([Option<usize>; READ.len()]);

impl Columns {
    /// The row's non-empty cell of column `name` (one of [`READ`]).
    fn cell<'r>(&self, fields: &'r [String], name: &str) -> Option<&'r String> {
        let at = READ.iter().position(|c| *c == name)?;
        self.0[at]
            .and_then(|i| fields.get(i))
            .filter(|v| !v.is_empty())
    }
}

fn parse_record(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    match reader.records().next() {
        Some(Ok(record)) => Ok(record
            .iter()
            .map(|f| unescape_cell(f.trim()).to_owned())
            .collect()),
        Some(Err(e)) => Err(e.to_string()),
        None => Ok(Vec::new()),
    }
}

fn columns(header: &[String]) -> Result<Columns, ApiError> {
    let find = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    if let Some(unknown) = header.iter().find(|h| {
        !READ
            .iter()
            .chain(&WRITTEN_ONLY)
            .any(|k| k.eq_ignore_ascii_case(h))
    }) {
        return Err(ApiError::new(
            ErrorCode::InvalidCsv,
            format!(
                "unknown column '{unknown}'; columns are {}",
                READ.join(", ")
            ),
        ));
    }
    if find("url").is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidCsv,
            "the first line must name the columns and include url",
        ));
    }
    Ok(Columns(READ.map(find)))
}

/// Creates one row's link; an identical link the caller already has counts as existing.
async fn import_row(
    state: &AppState,
    caller: &Caller,
    columns: &Columns,
    fields: Vec<String>,
) -> Result<Outcome, ApiError> {
    let cell = |name: &str| columns.cell(&fields, name);
    let flag = |name: &str| -> Result<bool, ApiError> {
        match cell(name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::new(
                ErrorCode::InvalidCsv,
                format!("{name} '{other}' is neither true nor false"),
            )),
        }
    };
    if flag("password_protected")? {
        // Its password is not in the file (only a hash exists): created without it, the
        // target would be open to anyone.
        return Err(ApiError::new(
            ErrorCode::InvalidCsv,
            "a password-protected link cannot be imported from CSV (its password is not \
             exported); create it with a password through the API",
        ));
    }
    let disabled = flag("disabled")?;
    let number = |name: &str, code: ErrorCode| -> Result<Option<u64>, ApiError> {
        cell(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::new(code, format!("{name} '{v}' is not a whole number")))
            })
            .transpose()
    };
    let redirect = number("redirect", ErrorCode::InvalidRedirect)?
        .map(|r| u16::try_from(r).unwrap_or(u16::MAX));
    let targeting = cell("targeting")
        .map(|t| {
            serde_json::from_str::<Targeting>(t).map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidTargeting,
                    format!("targeting is not the API's JSON object: {e}"),
                )
            })
        })
        .transpose()?;
    let tags = cell("tags").map(|t| {
        t.split(';')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let request = CreateLinkRequest {
        url: cell("url").cloned().unwrap_or_default(),
        alias: cell("alias").cloned(),
        domain: cell("domain").cloned(),
        expires_at: cell("expires_at").cloned(),
        max_clicks: number("max_clicks", ErrorCode::InvalidMaxClicks)?,
        password: None,
        redirect,
        tags,
        targeting,
        fallback_url: cell("fallback_url").cloned(),
    };
    let code = cell("code").map(|c| validate_alias(c)).transpose()?;
    let (link, existed) = create(state, caller, request, code, TakenCode::SameIsExisting).await?;
    if existed {
        return Ok(Outcome::Existing);
    }
    if disabled {
        let patch = LinkPatch {
            disabled: Some(true),
            ..LinkPatch::default()
        };
        state
            .store()
            .update_link(caller.user.id, &link.domain, link.code.as_str(), patch)
            .await?;
    }
    Ok(Outcome::Created)
}

/// Splits `buffer` at the end of each complete CSV record (a newline outside quotes).
fn take_records(buffer: &mut Vec<u8>, in_quotes: &mut bool, scanned: &mut usize) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    let mut start = 0;
    let mut i = *scanned;
    while i < buffer.len() {
        match buffer[i] {
            b'"' => *in_quotes = !*in_quotes,
            b'\n' if !*in_quotes => {
                records.push(buffer[start..i].to_vec());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    buffer.drain(..start);
    *scanned = buffer.len();
    records
}

api_errors!(ImportLinksErrors: AUTH, BODY; InvalidCsv, RecordTooLong, TooManyRows);

/// `POST /api/v1/links/import`: a CSV body, read as it arrives.
#[utoipa::path(
    post,
    path = "/api/v1/links/import",
    tag = "links",
    request_body(
        content = String,
        content_type = "text/csv",
        description = "A header line naming the columns (`url` required; `alias`; `code`, a \
            generated code to keep; `domain`; `tags` separated by `;`; `expires_at` in RFC 3339; \
            `redirect`; `max_clicks`; `targeting` as the API's JSON object; `fallback_url`; \
            `disabled`; `password_protected`, whose rows are refused; an export's \
            `short_url`, `clicks` and `created_at` are ignored), then one link per line. Rows matching a link the caller already has \
            count as existing, so an import can be run again.",
    ),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "What the import did; refused rows are listed by line.", body = ImportReport),
        ImportLinksErrors,
    ),
)]
pub async fn import_links(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Json<ImportReport>, ApiError> {
    caller.require(shortlink_core::Scope::Links)?;
    state.check_write(&caller.key_hash)?;
    let max_rows = state.config().max_import_rows;
    let mut stream = body.into_data_stream();
    let mut buffer = Vec::new();
    let (mut in_quotes, mut scanned) = (false, 0usize);
    let mut columns: Option<Columns> = None;
    let mut line = 0u64;
    let mut report = ImportReport::default();
    let mut pending: Vec<(u64, Vec<String>)> = Vec::new();
    let mut finished = false;
    while !finished {
        match stream.next().await {
            Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
            Some(Err(e)) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidBody,
                    format!("the upload was interrupted: {e}"),
                ));
            }
            None => {
                finished = true;
                if !buffer.is_empty() && buffer.last() != Some(&b'\n') {
                    buffer.push(b'\n');
                }
            }
        }
        for record in take_records(&mut buffer, &mut in_quotes, &mut scanned) {
            line += 1;
            let record = record.strip_suffix(b"\r").unwrap_or(&record);
            if record.len() > MAX_RECORD_BYTES {
                return Err(ApiError::new(
                    ErrorCode::RecordTooLong,
                    format!("line {line} is longer than {MAX_RECORD_BYTES} bytes"),
                ));
            }
            let fields = parse_record(record)
                .map_err(|e| ApiError::new(ErrorCode::InvalidCsv, format!("line {line}: {e}")))?;
            if fields.iter().all(String::is_empty) {
                continue;
            }
            match &columns {
                None => columns = Some(self::columns(&fields)?),
                Some(_) => {
                    report.rows += 1;
                    if report.rows > max_rows {
                        return Err(ApiError::new(
                            ErrorCode::TooManyRows,
                            format!("an import holds at most {max_rows} rows; split the file"),
                        ));
                    }
                    pending.push((line, fields));
                }
            }
        }
        if buffer.len() > MAX_RECORD_BYTES {
            return Err(ApiError::new(
                ErrorCode::RecordTooLong,
                format!("line {} is longer than {MAX_RECORD_BYTES} bytes", line + 1),
            ));
        }
        if let Some(columns) = &columns
            && (pending.len() >= 1024 || finished)
        {
            let rows = std::mem::take(&mut pending);
            let outcomes: Vec<(u64, Result<Outcome, ApiError>)> =
                futures_util::stream::iter(rows.into_iter().map(|(line, fields)| {
                    let (state, caller) = (&state, &caller);
                    async move { (line, import_row(state, caller, columns, fields).await) }
                }))
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for (line, outcome) in outcomes {
                match outcome {
                    Ok(Outcome::Created) => report.created += 1,
                    Ok(Outcome::Existing) => report.existing += 1,
                    Err(e) => {
                        report.failed += 1;
                        if report.errors.len() < MAX_REPORTED_ERRORS {
                            report.errors.push(LineError {
                                line,
                                code: e.code(),
                                message: e.message().to_owned(),
                            });
                        }
                    }
                }
            }
        }
    }
    if columns.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidCsv,
            "the body is empty; send a header line naming the columns (url first) and rows",
        ));
    }
    report.errors.sort_by_key(|e| e.line);
    Ok(Json(report))
}

/// First characters that make spreadsheets read a cell as a formula (or that they strip
/// before looking for one).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A cell as exported: one a spreadsheet would run as a formula gets a leading `'`
/// (OWASP's advice against CSV injection); the import takes it off again.
fn escape_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(FORMULA_STARTS) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// A cell as imported: the export's escape taken off.
fn unescape_cell(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(FORMULA_STARTS) => rest,
        _ => cell,
    }
}

pub(crate) fn csv_line(fields: &[&str]) -> String {
    let mut writer = csv::WriterBuilder::new().from_writer(Vec::new());
    let _ = writer.write_record(fields.iter().map(|f| escape_cell(f).into_owned()));
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}

fn export_line(state: &AppState, link: &Link) -> String {
    let (alias, code) = if link.custom_alias {
        (link.code.as_str(), "")
    } else {
        ("", link.code.as_str())
    };
    let tags = link.tags.join(";");
    let expires = link.expires_at.map(to_rfc3339).unwrap_or_default();
    let redirect = u16::from(link.redirect).to_string();
    let max_clicks = link.max_clicks.map(|m| m.to_string()).unwrap_or_default();
    let targeting = link
        .targeting
        .as_ref()
        .and_then(|t| serde_json::to_string(t).ok())
        .unwrap_or_default();
    let short_url = state.short_url(&link.domain, link.code.as_str());
    let clicks = link.clicks.to_string();
    let created = to_rfc3339(link.created_at);
    csv_line(&[
        &link.url,
        alias,
        code,
        &link.domain,
        &tags,
        &expires,
        &redirect,
        &max_clicks,
        &targeting,
        link.fallback_url.as_deref().unwrap_or(""),
        if link.disabled { "true" } else { "false" },
        if link.password_hash.is_some() {
            "true"
        } else {
            "false"
        },
        &short_url,
        &clicks,
        &created,
    ])
}

api_errors!(ExportLinksErrors: AUTH; );

/// `GET /api/v1/links/export`: every link of the caller as CSV, newest first, streamed.
#[utoipa::path(
    get,
    path = "/api/v1/links/export",
    tag = "links",
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "The caller's links as CSV: a header line \
            (`url,alias,code,domain,tags,expires_at,redirect,max_clicks,targeting,fallback_url,disabled,password_protected,short_url,clicks,created_at`), \
            then one link per line. \
            Cells a spreadsheet would run as a formula start with `'`.",
         body = String, content_type = "text/csv",
         headers(("Content-Disposition" = String, description = "`attachment; filename=\"links.csv\"`."))),
        ExportLinksErrors,
    ),
)]
pub async fn export_links(State(state): State<AppState>, caller: Caller) -> Response {
    let header: Vec<&str> = READ.iter().chain(&WRITTEN_ONLY).copied().collect();
    let header_line = csv_line(&header);
    let owner = caller.user.id;
    let pages = futures_util::stream::unfold(Some(None), move |cursor| {
        let state = state.clone();
        async move {
            let before_id = cursor?;
            let query = ListQuery {
                limit: 500,
                before_id,
                ..ListQuery::default()
            };
            match state.store().list_links(owner, &query).await {
                Ok(page) => {
                    let text: String = page.items.iter().map(|l| export_line(&state, l)).collect();
                    let next = page.next_before_id.map(Some);
                    Some((Ok::<_, std::io::Error>(text), next))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    });
    let body = futures_util::stream::once(async move { Ok(header_line) }).chain(pages);
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"links.csv\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_escaped_on_export_and_restored_on_import() {
        for cell in ["=1+1", "+1", "-abc", "@SUM(A1)", "\tx", "\rx"] {
            let line = csv_line(&[cell, "plain"]);
            assert!(line.starts_with("'") || line.starts_with("\"'"), "{line:?}");
            let back = parse_record(line.as_bytes()).unwrap();
            assert_eq!(back[0], cell, "{line:?}");
            assert_eq!(back[1], "plain");
        }
        assert_eq!(csv_line(&["https://a.test/", "x"]), "https://a.test/,x\n");
        assert_eq!(
            unescape_cell("'plain"),
            "'plain",
            "only the export's escape is taken off"
        );
    }
}
