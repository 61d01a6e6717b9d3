//! `POST /internal/v1/clicks`: click batches from proxies. Authenticated by the shared
//! internal secret, validated, enriched off the async threads, applied idempotently.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use serde::Serialize;
use shortlink_core::ClickBatch;
use shortlink_core::time_util::now_unix;
use std::sync::Arc;

use shortlink_analytics::{EnrichError, Enricher};
use shortlink_store::{IngestOutcome, Store};

use crate::config::ControlConfig;

use crate::error::{ApiError, ErrorCode};
use crate::extract::ApiJson;
use crate::metrics;
use crate::openapi::api_errors;
use crate::state::AppState;

/// Header carrying the internal secret.
pub const SECRET_HEADER: &str = shortlink_core::hop::SECRET_HEADER;
/// Longest accepted `User-Agent` or `Referer` in a click, in bytes.
pub const MAX_FIELD_BYTES: usize = 2048;
/// How far in the future a click's time may be (clock skew between machines), in ms.
const FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

/// Proof that the request carries the internal secret; checked before the body is read.
pub struct Internal;

impl FromRequestParts<AppState> for Internal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(secret) = state.internal_secret() else {
            return Err(ApiError::new(
                ErrorCode::IngestionDisabled,
                "no internal secret is configured, so click ingestion is off",
            ));
        };
        let given = parts
            .headers
            .get(SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if constant_time_eq(given, secret.as_bytes()) {
            Ok(Internal)
        } else {
            Err(ApiError::unauthorized("missing or wrong internal secret"))
        }
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Answer to an ingested batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestResponse {
    /// The batch's id, as sent.
    batch_id: String,
    /// False when the batch id was applied before (nothing counted twice).
    applied: bool,
    /// Clicks the batch stands for (folded events count `n` each).
    clicks: usize,
}

// For the OpenAPI document only: the schema of `ClickBatch`, which the handler reads.
/// A batch of clicks, as proxies ship them.
#[derive(utoipa::ToSchema)]
pub struct ClickBatchBody {
    /// Unique per batch: a batch sent again is applied once.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub batch_id: String,
    /// The clicks (at most the configured `max_batch_clicks`, 10 000 by default).
    pub clicks: Vec<ClickEventBody>,
}

// For the OpenAPI document only: the wire format of `shortlink_core::ClickEvent`.
/// One click of a batch (one-letter names keep batches small).
#[derive(utoipa::ToSchema)]
pub struct ClickEventBody {
    /// The followed link's id.
    #[schema(rename = "l")]
    pub link_id: i64,
    /// When, in Unix milliseconds: within the click retention (30 days by default) and
    /// at most 5 minutes ahead.
    #[schema(rename = "t")]
    pub ts_ms: i64,
    /// The client's IP address (v4 or v6).
    pub ip: Option<String>,
    /// The `User-Agent` (at most 2048 bytes).
    #[schema(rename = "ua", max_length = 2048)]
    pub user_agent: Option<String>,
    /// The `Referer` (at most 2048 bytes).
    #[schema(rename = "r", max_length = 2048)]
    pub referrer: Option<String>,
    /// The `Host` the request was made to (at most 2048 bytes).
    #[schema(rename = "hs", max_length = 2048)]
    pub host: Option<String>,
    /// A country code from a trusted header (at most 2048 bytes).
    #[schema(rename = "c", max_length = 2048)]
    pub country: Option<String>,
    /// True for a HEAD request (counted as a bot); default false.
    #[schema(rename = "h", required = false)]
    pub head: bool,
    /// True for a scan of the link's QR code; default false.
    #[schema(rename = "q", required = false)]
    pub qr: bool,
    /// How many identical clicks this stands for; default 1.
    #[schema(rename = "n", required = false, minimum = 1)]
    pub count: u32,
}

/// Counts a stored batch of `clicks` clicks in the metrics by its outcome.
fn record(outcome: IngestOutcome, clicks: u64) {
    let label = match outcome {
        IngestOutcome::Applied => {
            metrics::CLICKS_INGESTED.inc_by(clicks);
            "applied"
        }
        IngestOutcome::Duplicate => "duplicate",
        IngestOutcome::Uncertain { clicks: uncertain } => {
            metrics::CLICKS_INGESTED.inc_by(clicks.saturating_sub(uncertain));
            metrics::CLICKS_UNCERTAIN.inc_by(uncertain);
            "uncertain"
        }
    };
    metrics::CLICK_BATCHES.with_label_values(&[label]).inc();
}

/// Validates, enriches and stores click batches: the HTTP endpoint's work, also callable
/// in-process (by `serve`, where the proxy lives in the same process).
pub struct Ingestor {
    store: Arc<dyn Store>,
    enricher: Arc<Enricher>,
    max_batch_clicks: usize,
    retention_days: u32,
}

impl Ingestor {
    /// An ingestor with the limits and enrichment settings of `config`.
    pub fn new(store: Arc<dyn Store>, config: &ControlConfig) -> Result<Ingestor, EnrichError> {
        Ok(Ingestor {
            store,
            enricher: Arc::new(Enricher::new(
                config.geoip_database.as_deref(),
                config.keep_full_ip,
            )?),
            max_batch_clicks: config.max_batch_clicks,
            retention_days: config.click_retention_days,
        })
    }

    /// The enricher (its GeoIP lookup decides countries for targeting, too).
    pub fn enricher(&self) -> &Arc<Enricher> {
        &self.enricher
    }

    /// Gives the enricher the installation's secret for visitor ids, once.
    async fn key_visitors(&self) -> Result<(), ApiError> {
        if !self.enricher.has_visitor_secret() {
            let secret = self.store.installation_secret().await?;
            self.enricher.set_visitor_secret(secret);
        }
        Ok(())
    }

    /// Validates, enriches on the calling thread and stores a batch.
    pub async fn apply(&self, batch: &ClickBatch) -> Result<IngestOutcome, ApiError> {
        counted(self.validate(batch))?;
        self.key_visitors().await?;
        let enriched = batch
            .clicks
            .iter()
            .map(|c| self.enricher.enrich(c))
            .collect();
        self.store_batch(&batch.batch_id, enriched).await
    }

    async fn store_batch(
        &self,
        batch_id: &str,
        enriched: Vec<shortlink_core::EnrichedClick>,
    ) -> Result<IngestOutcome, ApiError> {
        let clicks: u64 = enriched.iter().map(|c| u64::from(c.count.max(1))).sum();
        // In a task of its own: a batch once started is stored to the end even when its
        // sender hangs up (a write cut off half-way would leave it unsettled, and on CQL
        // the batches folded with it too).
        // The outcome is counted there too, so it is counted when the sender is gone.
        let (store, id) = (self.store.clone(), batch_id.to_owned());
        let outcome = tokio::spawn(async move {
            let outcome = store.ingest_clicks(&id, enriched).await?;
            record(outcome, clicks);
            Ok::<_, shortlink_store::StoreError>(outcome)
        })
        .await
        .map_err(ApiError::internal)??;
        Ok(outcome)
    }

    /// Like [`Ingestor::apply`], with the enrichment on the blocking pool.
    async fn apply_off_thread(&self, batch: ClickBatch) -> Result<IngestOutcome, ApiError> {
        counted(self.validate(&batch))?;
        self.key_visitors().await?;
        let enricher = self.enricher.clone();
        let ClickBatch { batch_id, clicks } = batch;
        // User-agent parsing and bot matching cost microseconds per click: keep them off
        // the async workers.
        let enriched = tokio::task::spawn_blocking(move || {
            clicks
                .iter()
                .map(|c| enricher.enrich(c))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(ApiError::internal)?;
        self.store_batch(&batch_id, enriched).await
    }

    fn validate(&self, batch: &ClickBatch) -> Result<(), ApiError> {
        let id = &batch.batch_id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ApiError::new(
                ErrorCode::InvalidBatchId,
                "batch_id must be 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        let max = self.max_batch_clicks;
        if batch.clicks.len() > max {
            return Err(ApiError::new(
                ErrorCode::BatchTooLarge,
                format!("a batch may hold at most {max} clicks"),
            ));
        }
        let now_ms = now_unix() * 1000;
        let oldest = now_ms - i64::from(self.retention_days) * 86_400_000;
        for click in &batch.clicks {
            if click.count == 0 {
                return Err(ApiError::new(
                    ErrorCode::InvalidCount,
                    "a click's count (n) must be at least 1",
                ));
            }
            if click.ts_ms < oldest || click.ts_ms > now_ms + FUTURE_SKEW_MS {
                return Err(ApiError::new(
                    ErrorCode::InvalidTimestamp,
                    format!(
                        "click time {} ms is outside the accepted window",
                        click.ts_ms
                    ),
                ));
            }
            let long = |f: &Option<String>| f.as_ref().is_some_and(|v| v.len() > MAX_FIELD_BYTES);
            if long(&click.user_agent)
                || long(&click.referrer)
                || long(&click.host)
                || long(&click.country)
            {
                return Err(ApiError::new(
                    ErrorCode::FieldTooLong,
                    format!("click fields may be at most {MAX_FIELD_BYTES} bytes"),
                ));
            }
        }
        Ok(())
    }
}

/// Counts a refused batch.
fn counted(validation: Result<(), ApiError>) -> Result<(), ApiError> {
    if validation.is_err() {
        metrics::CLICK_BATCHES
            .with_label_values(&["rejected"])
            .inc();
    }
    validation
}

api_errors!(IngestClicksErrors: JSON_BODY; IngestionDisabled, Unauthorized, Internal, InvalidBatchId, BatchTooLarge, InvalidCount, InvalidTimestamp, FieldTooLong);

/// `POST /internal/v1/clicks`.
#[utoipa::path(
    post,
    path = "/internal/v1/clicks",
    tag = "operations",
    request_body(
        content = ClickBatchBody,
        description = "A batch of clicks from a proxy (at most the configured `max_batch_bytes`, 8 MiB by default).",
    ),
    security(("internal" = [])),
    responses(
        (status = 200, description = "The batch is counted (or was before: `applied` is false).", body = IngestResponse),
        IngestClicksErrors,
    ),
)]
pub async fn ingest_clicks(
    State(state): State<AppState>,
    _internal: Internal,
    ApiJson(batch): ApiJson<ClickBatch>,
) -> Result<Json<IngestResponse>, ApiError> {
    let count: usize = batch.clicks.iter().map(|c| c.count.max(1) as usize).sum();
    let batch_id = batch.batch_id.clone();
    let outcome = state.ingestor().apply_off_thread(batch).await?;
    Ok(Json(IngestResponse {
        batch_id,
        applied: matches!(
            outcome,
            IngestOutcome::Applied | IngestOutcome::Uncertain { .. }
        ),
        clicks: count,
    }))
}
