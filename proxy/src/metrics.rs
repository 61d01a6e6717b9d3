//! The data plane's Prometheus metrics, in the process's default registry.
//!
//! The per-request path adds to plain atomics in its thread's shard (a status counter, a
//! latency bucket, the latency sum), summed at scrape time; everything else (the click
//! pipeline's counts, the route table's size, the sync position) is read from the proxy's
//! own atomics when a scrape asks.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::clicks::ClickStats;
use crate::routes::RouteTable;
use crate::sync::SyncStatus;

/// Latency buckets that resolve the redirect path's tens of microseconds.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Statuses with a counter resolved up front (the redirect path's answers).
const COMMON: [u16; 8] = [301, 302, 307, 308, 404, 410, 429, 503];

/// Shards of the request metrics: request threads pick one each, so two threads never
/// add to the same cache line.
const SHARDS: usize = 16;

/// Hands each thread that observes a request its shard, in the order they first do.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// One thread's share of the request metrics, alone on its cache lines.
#[repr(align(128))]
struct RequestShard {
    common: [AtomicU64; COMMON.len()],
    /// Observations per bucket (not cumulative), the last one past the largest bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for RequestShard {
    fn default() -> Self {
        RequestShard {
            common: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// Request metrics of the proxy: `shortlink_proxy_responses_total{status}` and
/// `shortlink_proxy_request_duration_seconds`, counted in per-thread shards of plain
/// atomics and summed when a scrape asks (statuses outside the common ones go to a
/// labelled counter directly: they are rare).
pub struct RequestMetrics {
    shards: Box<[RequestShard]>,
    uncommon: IntCounterVec,
    descs: Vec<Desc>,
}

const RESPONSES: (&str, &str) = (
    "shortlink_proxy_responses_total",
    "Responses the proxy sent (redirects, its own error pages, forwarded answers), by status.",
);
const DURATION: (&str, &str) = (
    "shortlink_proxy_request_duration_seconds",
    "Time from the request's arrival at the proxy to its response being sent.",
);

impl RequestMetrics {
    /// Counts a response and its time.
    #[inline]
    pub fn observe(&self, status: u16, seconds: f64) {
        let shard = &self.shards[THREAD_SHARD.with(|s| *s)];
        match COMMON.iter().position(|s| *s == status) {
            Some(i) => {
                shard.common[i].fetch_add(1, Ordering::Relaxed);
            }
            None => self
                .uncommon
                .with_label_values(&[&status.to_string()])
                .inc(),
        }
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard
            .sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }

    fn responses(&self) -> Vec<MetricFamily> {
        let Ok(counters) = IntCounterVec::new(Opts::new(RESPONSES.0, RESPONSES.1), &["status"])
        else {
            return Vec::new();
        };
        for (i, status) in COMMON.iter().enumerate() {
            let total: u64 = self
                .shards
                .iter()
                .map(|s| s.common[i].load(Ordering::Relaxed))
                .sum();
            counters
                .with_label_values(&[&status.to_string()])
                .inc_by(total);
        }
        for family in self.uncommon.collect() {
            for metric in family.get_metric() {
                if let Some(label) = metric.get_label().first() {
                    counters
                        .with_label_values(&[label.value()])
                        .inc_by(metric.get_counter().value() as u64);
                }
            }
        }
        counters.collect()
    }

    fn duration(&self) -> MetricFamily {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(BUCKETS.len());
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self
                .shards
                .iter()
                .map(|s| s.buckets[i].load(Ordering::Relaxed))
                .sum::<u64>();
            let mut bucket = prometheus::proto::Bucket::default();
            bucket.set_upper_bound(*bound);
            bucket.set_cumulative_count(cumulative);
            buckets.push(bucket);
        }
        let count = cumulative
            + self
                .shards
                .iter()
                .map(|s| s.buckets[BUCKETS.len()].load(Ordering::Relaxed))
                .sum::<u64>();
        let sum_nanos: u64 = self
            .shards
            .iter()
            .map(|s| s.sum_nanos.load(Ordering::Relaxed))
            .sum();
        let mut histogram = prometheus::proto::Histogram::default();
        histogram.set_sample_count(count);
        histogram.set_sample_sum(sum_nanos as f64 / 1e9);
        histogram.set_bucket(buckets);
        let mut metric = prometheus::proto::Metric::default();
        metric.set_histogram(histogram);
        let mut family = MetricFamily::default();
        family.set_name(DURATION.0.to_owned());
        family.set_help(DURATION.1.to_owned());
        family.set_field_type(prometheus::proto::MetricType::HISTOGRAM);
        family.set_metric(vec![metric]);
        family
    }
}

/// The registered view of [`REQUESTS`].
struct RequestCollector;

impl Collector for RequestCollector {
    fn desc(&self) -> Vec<&Desc> {
        REQUESTS.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = REQUESTS.responses();
        out.push(REQUESTS.duration());
        out
    }
}

/// The proxy's request metrics, registered on first use.
pub static REQUESTS: LazyLock<RequestMetrics> = LazyLock::new(|| {
    let uncommon =
        IntCounterVec::new(Opts::new(RESPONSES.0, RESPONSES.1), &["status"]).expect("valid metric");
    let descs = [RESPONSES, DURATION]
        .iter()
        .filter_map(|(name, help)| {
            Desc::new((*name).into(), (*help).into(), vec![], Default::default()).ok()
        })
        .collect();
    RequestMetrics {
        shards: (0..SHARDS).map(|_| RequestShard::default()).collect(),
        uncommon,
        descs,
    }
});

/// Registers the request metrics in the default registry (once per process).
fn register_requests() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        LazyLock::force(&REQUESTS);
        let _ = prometheus::default_registry().register(Box::new(RequestCollector));
        // Exposed from the start (at zero) with or without TLS, so dashboards and alerts
        // find them.
        LazyLock::force(&TLS);
        LazyLock::force(&PROXY_HEADERS_REFUSED);
    });
}

/// Reads the proxy's state at scrape time: click pipeline counts, route table size, sync
/// position.
pub(crate) struct StateCollector {
    clicks: Arc<ClickStats>,
    table: Arc<RouteTable>,
    sync: Arc<SyncStatus>,
    descs: Vec<Desc>,
}

/// (name, help) of every metric the collector reports; counters end in `_total`.
const STATE: [(&str, &str); 12] = [
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
        "shortlink_clicks_recovered_total",
        "Clicks an earlier process left in the click journal, spooled again at start.",
    ),
    (
        "shortlink_click_files_quarantined_total",
        "Damaged click journal or spool files moved aside to quarantine/ in the spool folder.",
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
        "shortlink_click_lease_unreported",
        "Redirects of capped links answered from this proxy's leases that the store has not been told of yet (a crash now could let them be answered again).",
    ),
    (
        "shortlink_route_sync_last_success_timestamp_seconds",
        "Unix time the proxy's route table last caught up with the store's change feed (0: never); time() minus it is the sync's staleness.",
    ),
];

impl StateCollector {
    /// Registers a collector for one proxy's state (the first proxy in a process wins).
    pub(crate) fn register(clicks: Arc<ClickStats>, table: Arc<RouteTable>, sync: Arc<SyncStatus>) {
        register_requests();
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
            c.recovered.load(Ordering::Relaxed),
            c.quarantined.load(Ordering::Relaxed),
        ];
        let gauges = [
            self.table.len() as i64,
            self.sync.position.load(Ordering::Relaxed) as i64,
            i64::from(self.sync.loaded.load(Ordering::Relaxed)),
            self.table
                .leases()
                .iter()
                .map(|lease| lease.unreported() as i64)
                .sum(),
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

/// The TLS listener's metrics: handshakes by result, certificates served and the soonest
/// expiry among them (no domain names as labels).
pub struct TlsMetrics {
    /// `shortlink_tls_handshakes_total{result}`: `ok`, `failed`, `timeout`.
    pub handshakes: IntCounterVec,
    /// `shortlink_tls_certificates`: certificates served now.
    pub certificates: IntGauge,
    /// `shortlink_tls_certificate_soonest_expiry_timestamp_seconds`.
    pub soonest_expiry: Gauge,
    /// `shortlink_tls_certificate_reload_failures_total`.
    pub reload_failures: IntCounter,
    /// `shortlink_acme_certificates{state}`: names by issuance state, installation-wide.
    pub acme_states: IntGaugeVec,
    /// `shortlink_acme_orders_total{result}`: this proxy's orders, `issued` or `failed`.
    pub acme_orders: IntCounterVec,
    /// `shortlink_acme_challenges_answered_total{type}`: challenge requests answered.
    pub acme_answers: IntCounterVec,
}

/// The TLS metrics, registered in the default registry on first use.
pub static TLS: LazyLock<TlsMetrics> = LazyLock::new(|| {
    let metrics = TlsMetrics {
        handshakes: IntCounterVec::new(
            Opts::new(
                "shortlink_tls_handshakes_total",
                "TLS handshakes on the proxy's HTTPS listener, by result (ok, failed, timeout, acme_challenge).",
            ),
            &["result"],
        )
        .expect("valid metric"),
        certificates: IntGauge::new(
            "shortlink_tls_certificates",
            "Certificates the proxy serves by SNI.",
        )
        .expect("valid metric"),
        soonest_expiry: Gauge::new(
            "shortlink_tls_certificate_soonest_expiry_timestamp_seconds",
            "Unix time the first of the served certificates expires (0: none served).",
        )
        .expect("valid metric"),
        reload_failures: IntCounter::new(
            "shortlink_tls_certificate_reload_failures_total",
            "Changed certificate files that could not be loaded (the certificate before them is still served).",
        )
        .expect("valid metric"),
        acme_states: IntGaugeVec::new(
            Opts::new(
                "shortlink_acme_certificates",
                "Names with automatic certificates, by issuance state (ordering, issued, failed), as the store records them for the whole installation.",
            ),
            &["state"],
        )
        .expect("valid metric"),
        acme_orders: IntCounterVec::new(
            Opts::new(
                "shortlink_acme_orders_total",
                "ACME orders this proxy finished, by result (issued, failed).",
            ),
            &["result"],
        )
        .expect("valid metric"),
        acme_answers: IntCounterVec::new(
            Opts::new(
                "shortlink_acme_challenges_answered_total",
                "ACME challenge requests this proxy answered from the store, by type (http-01, tls-alpn-01).",
            ),
            &["type"],
        )
        .expect("valid metric"),
    };
    let registry = prometheus::default_registry();
    for result in ["ok", "failed", "timeout", "acme_challenge"] {
        metrics.handshakes.with_label_values(&[result]);
    }
    for state in ["ordering", "issued", "failed"] {
        metrics.acme_states.with_label_values(&[state]);
    }
    for result in ["issued", "failed"] {
        metrics.acme_orders.with_label_values(&[result]);
    }
    for kind in ["http-01", "tls-alpn-01"] {
        metrics.acme_answers.with_label_values(&[kind]);
    }
    let _ = registry.register(Box::new(metrics.acme_states.clone()));
    let _ = registry.register(Box::new(metrics.acme_orders.clone()));
    let _ = registry.register(Box::new(metrics.acme_answers.clone()));
    let _ = registry.register(Box::new(metrics.handshakes.clone()));
    let _ = registry.register(Box::new(metrics.certificates.clone()));
    let _ = registry.register(Box::new(metrics.soonest_expiry.clone()));
    let _ = registry.register(Box::new(metrics.reload_failures.clone()));
    metrics
});

/// `shortlink_proxy_protocol_refused_total`: connections closed on a listener with the
/// PROXY protocol on because they did not start with a valid header in time.
pub static PROXY_HEADERS_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    let counter = IntCounter::new(
        "shortlink_proxy_protocol_refused_total",
        "Connections closed because they did not start with a valid PROXY protocol header in time (on listeners that require one).",
    )
    .expect("valid metric");
    let _ = prometheus::default_registry().register(Box::new(counter.clone()));
    counter
});

#[cfg(test)]
mod tests {
    use super::*;

    fn responses(status: &str) -> f64 {
        REQUESTS
            .responses()
            .iter()
            .flat_map(|f| f.get_metric())
            .find(|m| m.get_label().iter().any(|l| l.value() == status))
            .map_or(0.0, |m| m.get_counter().value())
    }

    #[test]
    fn shards_of_several_threads_sum_at_scrape_time() {
        let before_301 = responses("301");
        let before_count = REQUESTS.duration().get_metric()[0]
            .get_histogram()
            .sample_count();
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        REQUESTS.observe(301, 0.000_07);
                    }
                    REQUESTS.observe(418, 2.0);
                });
            }
        });
        assert_eq!(responses("301") - before_301, 3000.0);
        assert!(
            responses("418") >= 3.0,
            "uncommon statuses are reported too"
        );
        let family = REQUESTS.duration();
        let histogram = family.get_metric()[0].get_histogram();
        assert_eq!(histogram.sample_count() - before_count, 3003);
        let buckets = histogram.get_bucket();
        assert_eq!(buckets.len(), BUCKETS.len());
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].cumulative_count() <= w[1].cumulative_count()),
            "cumulative"
        );
        let at_100us = buckets.iter().find(|b| b.upper_bound() == 0.000_1).unwrap();
        assert!(at_100us.cumulative_count() >= 3000);
        assert!(
            buckets.last().unwrap().cumulative_count() < histogram.sample_count(),
            "2 s observations are past the largest bound"
        );
        assert!(histogram.sample_sum() >= 6.0);
    }
}
