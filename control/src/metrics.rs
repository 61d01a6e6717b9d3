//! The control plane's Prometheus metrics and `GET /metrics`, which serves the whole
//! process's default registry (in `serve` that includes the proxy's metrics and the
//! process collector's RSS, CPU and file descriptors).
//!
//! Labels are bounded: a route template (never a code or id), a method, a status, an
//! outcome from a fixed list.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, TextEncoder,
};

fn registered<C: prometheus::core::Collector + Clone + 'static>(collector: C) -> C {
    // A second registration (several servers in one test process) keeps the first.
    let _ = prometheus::default_registry().register(Box::new(collector.clone()));
    collector
}

fn counter(name: &str, help: &str) -> IntCounter {
    registered(IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

/// API requests by route template, method and status.
pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "shortlink_http_requests_total",
        "Control plane requests answered, by route template, method and status.",
        &["route", "method", "status"],
    )
});

/// API request latency by route template.
pub static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    registered(
        HistogramVec::new(
            HistogramOpts::new(
                "shortlink_http_request_duration_seconds",
                "Control plane request time until the response head, by route template.",
            )
            .buckets(vec![
                0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 10.0,
            ]),
            &["route"],
        )
        .expect("valid metric"),
    )
});

/// Clicks ingested (applied batches only).
pub static CLICKS_INGESTED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "shortlink_clicks_ingested_total",
        "Clicks applied to the store by ingestion.",
    )
});

/// Clicks of batches settled with counts of unknown outcome (see
/// `IngestOutcome::Uncertain`): their counts may be short by at most this many.
pub static CLICKS_UNCERTAIN: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "shortlink_clicks_uncertain_total",
        "Clicks of batches whose counts were never known written (the process holding \
         them died or lost its writer slot first): counted at most once, possibly not at all.",
    )
});

/// Click batches by outcome: `applied`, `duplicate`, `uncertain`, `rejected`.
pub static CLICK_BATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "shortlink_click_batches_total",
        "Click batches received, by outcome (applied, duplicate, uncertain, rejected).",
        &["outcome"],
    )
});

/// Event streams held now.
pub static SUBSCRIBERS: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(
        IntGauge::new(
            "shortlink_event_subscribers",
            "Event streams (SSE, WebSocket, waiting polls) held by this instance.",
        )
        .expect("valid metric"),
    )
});

/// Events handed to the hub's subscribers.
pub static EVENTS_PUBLISHED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "shortlink_events_published_total",
        "Events read from the store's feed and fanned out by this instance.",
    )
});

/// Subscribers that fell behind and resynced from the log.
pub static EVENT_RESYNCS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "shortlink_event_resyncs_total",
        "Times a slow subscriber overflowed its buffer and caught up from the log.",
    )
});

/// Completed uploads by how they came: `streamed`, `presigned`, `multipart`.
pub static UPLOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "shortlink_uploads_total",
        "Uploads completed, by path (streamed, presigned, multipart).",
        &["path"],
    )
});

/// Bytes of completed uploads.
pub static UPLOAD_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "shortlink_upload_bytes_total",
        "Bytes of completed uploads.",
    )
});

/// Uploads refused for size.
pub static UPLOADS_TOO_LARGE: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "shortlink_uploads_too_large_total",
        "Uploads refused (and discarded) for crossing max_upload_bytes.",
    )
});

/// Uploads removed by the sweep, by reason: `abandoned` (pending past its expiry) or
/// `expired`.
pub static UPLOADS_SWEPT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "shortlink_uploads_swept_total",
        "Uploads removed by the sweep, by reason (abandoned, expired).",
        &["reason"],
    )
});

/// Orphans removed by the scan, by kind: `object` or `multipart`.
pub static UPLOAD_ORPHANS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "shortlink_upload_orphans_removed_total",
        "Objects and multipart uploads no upload owned, removed by the orphan scan, by kind (object, multipart).",
        &["kind"],
    )
});

/// How long the last orphan scan took.
pub static UPLOAD_ORPHAN_SCAN_SECONDS: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    registered(
        prometheus::Gauge::new(
            "shortlink_upload_orphan_scan_seconds",
            "Duration of the last scan of the object store for objects and multipart uploads no upload owns.",
        )
        .expect("valid metric"),
    )
});

/// Objects the orphan scans looked at.
pub static UPLOAD_ORPHAN_SCANNED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "shortlink_upload_orphan_scanned_objects_total",
        "Objects the orphan scans looked at (each a lookup of its upload).",
    )
});

/// How long one round of the upload sweep took (orphan scan included when it ran).
pub static UPLOAD_SWEEP_SECONDS: LazyLock<prometheus::Histogram> = LazyLock::new(|| {
    seconds_histogram(
        "shortlink_upload_sweep_duration_seconds",
        "Duration of one round of the upload sweep, the orphan scan included when it ran.",
    )
});

/// Thumbnail jobs by outcome: `ready`, `failed`, `retry`.
pub static THUMBNAIL_JOBS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "shortlink_thumbnail_jobs_total",
        "Thumbnail jobs run, by outcome (ready, failed, retry).",
        &["outcome"],
    )
});

/// Webhook delivery attempts by outcome: `delivered`, `failed`, `given_up`.
pub static WEBHOOK_DELIVERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "shortlink_webhook_deliveries_total",
        "Webhook delivery attempts, by outcome (delivered, failed, given_up).",
        &["outcome"],
    )
});

/// Webhook endpoints disabled after failing for the whole retry window.
pub static WEBHOOK_DISABLED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "shortlink_webhook_endpoints_disabled_total",
        "Webhook endpoints disabled after failing for the whole retry window.",
    )
});

/// Events read for delivery and not yet delivered, over the endpoints this instance is
/// delivering to.
pub static WEBHOOK_OUTBOX_DEPTH: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(
        IntGauge::new(
            "shortlink_webhook_outbox_depth",
            "Events read for delivery and not delivered yet, over the webhook endpoints this instance delivers to.",
        )
        .expect("valid metric"),
    )
});

/// Age of the oldest event waiting at the head of an endpoint this instance delivers to.
pub static WEBHOOK_BACKLOG_SECONDS: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    registered(
        prometheus::Gauge::new(
            "shortlink_webhook_backlog_seconds",
            "Age of the oldest undelivered event at the head of a webhook endpoint this instance delivers to.",
        )
        .expect("valid metric"),
    )
});

fn seconds_histogram(name: &str, help: &str) -> prometheus::Histogram {
    registered(
        prometheus::Histogram::with_opts(HistogramOpts::new(name, help).buckets(vec![
            0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 300.0, 3600.0,
        ]))
        .expect("valid metric"),
    )
}

/// Time of one webhook delivery attempt, request to response head.
pub static WEBHOOK_DELIVERY_SECONDS: LazyLock<prometheus::Histogram> = LazyLock::new(|| {
    seconds_histogram(
        "shortlink_webhook_delivery_seconds",
        "Time of one webhook delivery attempt, until the receiver's response.",
    )
});

/// Time from an event to its delivery.
pub static WEBHOOK_EVENT_LAG_SECONDS: LazyLock<prometheus::Histogram> = LazyLock::new(|| {
    seconds_histogram(
        "shortlink_webhook_event_lag_seconds",
        "Time from an event being written to its successful webhook delivery.",
    )
});

/// Middleware: counts and times every request by its route template.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    HTTP_DURATION
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    HTTP_REQUESTS
        .with_label_values(&[&route, &method, response.status().as_str()])
        .inc();
    response
}

/// `GET /metrics`: the process's metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics in the Prometheus text exposition format \
            (`text/plain; version=0.0.4`).", body = String, content_type = "text/plain"),
        (status = 500, description = "The metrics could not be encoded: the reason, as text.",
         body = String, content_type = "text/plain"),
    ),
)]
pub async fn metrics() -> Response {
    // Register the lazily made metrics so a scrape before any traffic lists them at 0.
    for metric in [
        &*CLICKS_INGESTED,
        &*CLICKS_UNCERTAIN,
        &*EVENTS_PUBLISHED,
        &*EVENT_RESYNCS,
        &*UPLOAD_BYTES,
        &*UPLOADS_TOO_LARGE,
    ] {
        let _ = metric.get();
    }
    LazyLock::force(&SUBSCRIBERS);
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&HTTP_DURATION);
    for outcome in ["applied", "duplicate", "rejected"] {
        let _ = CLICK_BATCHES.with_label_values(&[outcome]);
    }
    for path in crate::uploads::UploadPath::ALL {
        let _ = UPLOADS.with_label_values(&[path.as_str()]);
    }
    for reason in ["abandoned", "expired"] {
        let _ = UPLOADS_SWEPT.with_label_values(&[reason]);
    }
    for kind in ["object", "multipart"] {
        let _ = UPLOAD_ORPHANS.with_label_values(&[kind]);
    }
    LazyLock::force(&UPLOAD_SWEEP_SECONDS);
    LazyLock::force(&UPLOAD_ORPHAN_SCAN_SECONDS);
    let _ = UPLOAD_ORPHAN_SCANNED.get();
    for outcome in ["ready", "failed", "retry"] {
        let _ = THUMBNAIL_JOBS.with_label_values(&[outcome]);
    }
    for outcome in shortlink_core::DeliveryOutcome::ALL {
        let _ = WEBHOOK_DELIVERIES.with_label_values(&[outcome.as_str()]);
    }
    LazyLock::force(&WEBHOOK_DISABLED);
    LazyLock::force(&WEBHOOK_OUTBOX_DEPTH);
    LazyLock::force(&WEBHOOK_BACKLOG_SECONDS);
    LazyLock::force(&WEBHOOK_DELIVERY_SECONDS);
    LazyLock::force(&WEBHOOK_EVENT_LAG_SECONDS);
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut body) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
        body,
    )
        .into_response()
}
