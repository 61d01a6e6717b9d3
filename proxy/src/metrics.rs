//! The data plane's Prometheus metrics, in the process's default registry.
//!
//! The per-request path touches only pre-resolved counters and one histogram (atomic
//! adds); everything else (the click pipeline's counts, the route table's size, the sync
//! position) is read from the proxy's own atomics when a scrape asks.

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

use crate::clicks::ClickStats;
use crate::routes::RouteTable;
use crate::sync::SyncStatus;

/// Latency buckets that resolve the redirect path's tens of microseconds.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Statuses with a counter resolved up front (the redirect path's answers).
const COMMON: [u16; 8] = [301, 302, 307, 308, 404, 410, 429, 503];

/// Request metrics of the proxy.
pub struct RequestMetrics {
    by_status: IntCounterVec,
    common: [IntCounter; COMMON.len()],
    duration: Histogram,
}

impl RequestMetrics {
    /// Counts a response and its time.
    pub fn observe(&self, status: u16, seconds: f64) {
        match COMMON.iter().position(|s| *s == status) {
            Some(i) => self.common[i].inc(),
            None => self
                .by_status
                .with_label_values(&[&status.to_string()])
                .inc(),
        }
        self.duration.observe(seconds);
    }
}

/// The proxy's request metrics, registered on first use.
pub static REQUESTS: LazyLock<RequestMetrics> = LazyLock::new(|| {
    let by_status = IntCounterVec::new(
        Opts::new(
            "shortlink_proxy_responses_total",
            "Responses the proxy sent (redirects, its own error pages, forwarded answers), by status.",
        ),
        &["status"],
    )
    .expect("valid metric");
    let duration = Histogram::with_opts(
        HistogramOpts::new(
            "shortlink_proxy_request_duration_seconds",
            "Time from the request's arrival at the proxy to its response being sent.",
        )
        .buckets(BUCKETS.to_vec()),
    )
    .expect("valid metric");
    let registry = prometheus::default_registry();
    // Registering twice (several proxies in one test process) keeps the first.
    let _ = registry.register(Box::new(by_status.clone()));
    let _ = registry.register(Box::new(duration.clone()));
    let common = COMMON.map(|s| by_status.with_label_values(&[&s.to_string()]));
    RequestMetrics {
        by_status,
        common,
        duration,
    }
});

/// Reads the proxy's state at scrape time: click pipeline counts, route table size, sync
/// position.
pub(crate) struct StateCollector {
    clicks: Arc<ClickStats>,
    table: Arc<RouteTable>,
    sync: Arc<SyncStatus>,
    descs: Vec<Desc>,
}

/// (name, help) of every metric the collector reports; counters end in `_total`.
const STATE: [(&str, &str); 9] = [
    (
        "shortlink_clicks_captured_total",
        "Clicks put on the proxy's queue.",
    ),
    (
        "shortlink_clicks_shipped_total",
        "Clicks a control plane accepted.",
    ),
    (
        "shortlink_clicks_spooled_total",
        "Clicks written to the on-disk spool while no control plane took them.",
    ),
    (
        "shortlink_clicks_dropped_total",
        "Clicks lost because the queue or the spool was full.",
    ),
    (
        "shortlink_clicks_rejected_total",
        "Clicks a control plane refused as invalid.",
    ),
    (
        "shortlink_route_table_links",
        "Routes held in the proxy's memory.",
    ),
    (
        "shortlink_route_sync_position",
        "Route change feed position the proxy has applied.",
    ),
    (
        "shortlink_route_table_loaded",
        "1 once the proxy's first bulk load of routes finished.",
    ),
    (
        "shortlink_route_sync_last_success_timestamp_seconds",
        "Unix time the proxy's route table last caught up with the store's change feed (0: never); time() minus it is the sync's staleness.",
    ),
];

impl StateCollector {
    /// Registers a collector for one proxy's state (the first proxy in a process wins).
    pub(crate) fn register(clicks: Arc<ClickStats>, table: Arc<RouteTable>, sync: Arc<SyncStatus>) {
        let descs = STATE
            .iter()
            .filter_map(|(name, help)| {
                Desc::new((*name).into(), (*help).into(), vec![], Default::default()).ok()
            })
            .collect();
        let collector = StateCollector {
            clicks,
            table,
            sync,
            descs,
        };
        let _ = prometheus::default_registry().register(Box::new(collector));
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let c = &self.clicks;
        let counters = [
            c.captured.load(Ordering::Relaxed),
            c.shipped.load(Ordering::Relaxed),
            c.spooled.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed),
            c.rejected.load(Ordering::Relaxed),
        ];
        let gauges = [
            self.table.len() as i64,
            self.sync.position.load(Ordering::Relaxed) as i64,
            i64::from(self.sync.loaded.load(Ordering::Relaxed)),
        ];
        let mut out = Vec::new();
        for ((name, help), value) in STATE.iter().zip(counters) {
            if let Ok(counter) = IntCounter::new(*name, *help) {
                counter.inc_by(value);
                out.extend(counter.collect());
            }
        }
        for ((name, help), value) in STATE[counters.len()..].iter().zip(gauges) {
            if let Ok(gauge) = IntGauge::new(*name, *help) {
                gauge.set(value);
                out.extend(gauge.collect());
            }
        }
        let (name, help) = STATE[counters.len() + gauges.len()];
        if let Ok(gauge) = Gauge::new(name, help) {
            gauge.set(self.sync.caught_up_ms.load(Ordering::Relaxed) as f64 / 1000.0);
            out.extend(gauge.collect());
        }
        out
    }
}

/// Serves the process's metrics in the Prometheus text format: the proxy's admin listener
/// (`proxy.metrics_listen`), for when the proxy runs apart from a control plane.
pub struct MetricsApp;

#[async_trait::async_trait]
impl pingora::apps::http_app::ServeHttp for MetricsApp {
    async fn response(
        &self,
        _session: &mut pingora::protocols::http::ServerSession,
    ) -> http::Response<Vec<u8>> {
        use prometheus::Encoder;
        let encoder = prometheus::TextEncoder::new();
        let mut body = Vec::new();
        let status = match encoder.encode(&prometheus::gather(), &mut body) {
            Ok(()) => 200,
            Err(_) => 500,
        };
        let length = body.len();
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, encoder.format_type())
            .header(http::header::CONTENT_LENGTH, length)
            .body(body)
            .unwrap_or_default()
    }
}
