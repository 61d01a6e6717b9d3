//! Prometheus metrics: drive a little traffic through every subsystem of the real binary,
//! scrape `/metrics`, and check the exposition parses and counts what happened.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, Options, TestServer, free_port};
use reqwest::Method;
use serde_json::json;

/// One sample: metric name, labels, value.
type Sample = (String, HashMap<String, String>, f64);

/// Parses the Prometheus text format; panics on a line that is not a comment or a sample.
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels {line}"));
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad label {line}"));
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), HashMap::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        out.push((name, labels, value));
    }
    out
}

/// The sum of a metric's samples whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// Every PromQL expression in a dashboard (panels' and nested rows' targets).
fn expressions(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            map.values().for_each(|v| expressions(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// The metric names an expression uses: our prefixes, so functions and labels are not
/// mistaken for metrics.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts = (rest.starts_with("shortlink_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..len].to_owned());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

/// Checks every dashboard in `grafana/dashboards/` names only metrics in `samples`.
fn check_dashboards(samples: &[Sample]) {
    let exported: std::collections::HashSet<&str> =
        samples.iter().map(|(n, _, _)| n.as_str()).collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/dashboards");
    let mut dashboards = 0;
    for entry in std::fs::read_dir(&dir).expect("grafana/dashboards exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        dashboards += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let dashboard: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let mut exprs = Vec::new();
        expressions(&dashboard, &mut exprs);
        assert!(!exprs.is_empty(), "{} has no queries", path.display());
        for expr in &exprs {
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "{}: no shortlink metric in {expr}",
                path.display()
            );
            for name in names {
                assert!(
                    exported.contains(name.as_str()),
                    "{}: {expr} names {name}, which /metrics does not export",
                    path.display()
                );
            }
        }
    }
    assert!(dashboards >= 1, "no dashboard in {}", dir.display());
}

async fn scrape(client: &reqwest::Client, url: &str) -> (String, Vec<Sample>) {
    let r = client.get(url).send().await.expect("scrape");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "Prometheus text format"
    );
    let text = r.text().await.unwrap();
    let samples = parse(&text);
    (text, samples)
}

#[test]
fn dashboard_queries_are_parsed_for_metric_names() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(shortlink_proxy_request_duration_seconds_bucket[5m])))"
        ),
        ["shortlink_proxy_request_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names("rate(process_cpu_seconds_total[1m]) / xshortlink_nope"),
        ["process_cpu_seconds_total"]
    );
}

#[tokio::test]
async fn metrics_count_what_every_subsystem_did() {
    let admin_port = free_port();
    let s = TestServer::start_with(Options::default().env(
        "SHORTLINK_PROXY__METRICS_LISTEN",
        &format!("127.0.0.1:{admin_port}"),
    ))
    .await;
    let (status, link) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://metrics.example/", "alias": "measured"}),
        )
        .await;
    assert_eq!(status, 201, "{link}");
    s.wait_status("measured", 301, Duration::from_secs(2)).await;
    for _ in 0..3 {
        assert_eq!(s.follow("measured").await.status(), 301);
    }
    assert_eq!(s.follow("nosuchcode").await.status(), 404);
    let part = reqwest::multipart::Part::bytes(b"hello metrics".to_vec()).file_name("m.txt");
    let r = s
        .api(Method::POST, "/api/v1/uploads", ADMIN_KEY)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let upload: serde_json::Value = r.json().await.unwrap();
    let held = reqwest::Client::new()
        .get(format!("{}/api/v1/events", s.proxy))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);

    // Clicks reach ingestion within a few seconds.
    // Not through the public proxy port: operators scrape the control plane's listener.
    assert_eq!(s.follow("metrics").await.status(), 404);
    let url = format!("{}/metrics", s.control);
    let deadline = Instant::now() + Duration::from_secs(15);
    let (text, samples) = loop {
        let (text, samples) = scrape(&s.client, &url).await;
        if value(&samples, "shortlink_clicks_ingested_total", &[]) >= 4.0
            || Instant::now() > deadline
        {
            break (text, samples);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let v = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    assert!(
        v("shortlink_proxy_responses_total", &[("status", "301")]) >= 4.0,
        "{text}"
    );
    assert!(v("shortlink_proxy_responses_total", &[("status", "404")]) >= 1.0);
    assert!(v("shortlink_proxy_request_duration_seconds_count", &[]) >= 5.0);
    assert!(
        v(
            "shortlink_proxy_request_duration_seconds_bucket",
            &[("le", "0.001")]
        ) >= 1.0
    );
    assert_eq!(
        v(
            "shortlink_http_requests_total",
            &[
                ("route", "/api/v1/links"),
                ("method", "POST"),
                ("status", "201")
            ]
        ),
        1.0
    );
    assert!(
        v(
            "shortlink_http_request_duration_seconds_count",
            &[("route", "/api/v1/links")]
        ) >= 1.0
    );
    assert!(v("shortlink_route_table_links", &[]) >= 1.0);
    assert_eq!(v("shortlink_route_table_loaded", &[]), 1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let synced = v("shortlink_route_sync_last_success_timestamp_seconds", &[]);
    assert!(
        (now - 30.0..=now + 1.0).contains(&synced),
        "the route sync caught up recently: {synced} vs now {now}"
    );
    assert!(v("shortlink_clicks_captured_total", &[]) >= 4.0);
    assert!(v("shortlink_clicks_shipped_total", &[]) >= 4.0);
    assert!(v("shortlink_clicks_ingested_total", &[]) >= 4.0);
    assert!(v("shortlink_click_batches_total", &[("outcome", "applied")]) >= 1.0);
    assert_eq!(v("shortlink_clicks_dropped_total", &[]), 0.0);
    assert_eq!(v("shortlink_uploads_total", &[("path", "streamed")]), 1.0);
    assert_eq!(v("shortlink_upload_bytes_total", &[]), 13.0);
    assert_eq!(
        v("shortlink_event_subscribers", &[]),
        1.0,
        "the open SSE stream"
    );
    assert!(v("shortlink_events_published_total", &[]) >= 1.0);
    assert!(
        v("process_resident_memory_bytes", &[]) > 1e6,
        "process metrics"
    );
    assert!(v("process_open_fds", &[]) > 0.0);
    // Bounded labels: no code, no upload id, no user in any label.
    let id = upload["id"].as_str().unwrap();
    for (name, labels, _) in &samples {
        for value in labels.values() {
            assert!(
                !value.contains("measured") && !value.contains(id) && !value.contains("nosuchcode"),
                "{name} has an unbounded label value {value}"
            );
        }
    }
    // Counters are named as counters.
    for (name, _, _) in &samples {
        if name.starts_with("shortlink_") && name.contains("total") {
            assert!(name.ends_with("_total"), "{name}");
        }
    }
    drop(held);

    // Every metric a dashboard queries is exported (after traffic through every part).
    check_dashboards(&samples);

    // The proxy's own admin listener serves the same registry (for a proxy run apart).
    let (_, admin) = scrape(&s.client, &format!("http://127.0.0.1:{admin_port}/metrics")).await;
    assert!(
        value(
            &admin,
            "shortlink_proxy_responses_total",
            &[("status", "301")]
        ) >= 4.0
    );
}
