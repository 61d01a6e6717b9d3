//! Bulk CSV import and export through the API, against the real binary.

mod common;

use common::{ADMIN_KEY, Options, TestServer, error_code};
use reqwest::Method;
use serde_json::Value;

async fn import(s: &TestServer, key: &str, csv: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = s
        .api(Method::POST, "/api/v1/links/import", key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn export(s: &TestServer, key: &str) -> String {
    let r = s
        .api(Method::GET, "/api/v1/links/export", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    r.text().await.unwrap()
}

/// (url, alias, tags, expires_at) of every exported row, sorted.
fn rows(csv: &str) -> Vec<(String, String, String, String)> {
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let mut out: Vec<_> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[0].to_owned(),
                r[1].to_owned(),
                r[2].to_owned(),
                r[3].to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

const MIXED: &str = "url,alias,tags,expires_at\n\
https://bulk.example/1,,x;y,\n\
ftp://bulk.example/bad,,,\n\
https://bulk.example/3,imported-alias,,2031-01-01T00:00:00Z\n\
https://bulk.example/4,,,not-a-time\n\
\"https://bulk.example/5?a=1,2\",,,\n";

#[tokio::test]
async fn import_reports_bad_rows_by_line_imports_the_rest_and_reruns_idempotently() {
    let s = TestServer::start().await;
    let (status, report) = import(&s, ADMIN_KEY, MIXED).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            &report["rows"],
            &report["created"],
            &report["existing"],
            &report["failed"]
        ),
        (&5.into(), &3.into(), &0.into(), &2.into()),
        "{report}"
    );
    let errors: Vec<(u64, &str)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        [(3, "url_scheme_not_allowed"), (5, "invalid_expires_at")]
    );
    let r = s.follow("imported-alias").await;
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "https://bulk.example/3");

    // The same file again: nothing new, nothing duplicated.
    let (_, again) = import(&s, ADMIN_KEY, MIXED).await;
    assert_eq!(
        (&again["created"], &again["existing"], &again["failed"]),
        (&0.into(), &3.into(), &2.into()),
        "{again}"
    );
    let exported = export(&s, ADMIN_KEY).await;
    let got = rows(&exported);
    assert_eq!(got.len(), 3, "{exported}");
    assert!(got.contains(&(
        "https://bulk.example/3".into(),
        "imported-alias".into(),
        String::new(),
        "2031-01-01T00:00:00Z".into()
    )));
    assert!(got.contains(&(
        "https://bulk.example/1".into(),
        String::new(),
        "x;y".into(),
        String::new()
    )));
    assert!(got.iter().any(|r| r.0 == "https://bulk.example/5?a=1,2"));

    // An export imports into another installation as the same links.
    let other = TestServer::start().await;
    let (status, report) = import(&other, ADMIN_KEY, exported.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(report["created"], 3, "{report}");
    assert_eq!(rows(&export(&other, ADMIN_KEY).await), got);
}

#[tokio::test]
async fn import_limits_give_clear_errors() {
    let s =
        TestServer::start_with(Options::default().env("SHORTLINK_CONTROL__MAX_IMPORT_ROWS", "3"))
            .await;
    let (status, body) = import(&s, ADMIN_KEY, MIXED).await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "too_many_rows"),
        "{body}"
    );
    let (status, body) = import(&s, ADMIN_KEY, "url,colour\nhttps://x.example/,red\n").await;
    assert_eq!((status, error_code(&body)), (422, "invalid_csv"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
    let long = format!("url\nhttps://x.example/{}\n", "a".repeat(20_000));
    let (status, body) = import(&s, ADMIN_KEY, long).await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "record_too_long"),
        "{body}"
    );
    let (status, body) = import(&s, ADMIN_KEY, "").await;
    assert_eq!((status, error_code(&body)), (422, "invalid_csv"), "{body}");
}

#[tokio::test]
async fn a_large_import_redirects_everywhere_afterwards() {
    let s = TestServer::start().await;
    let mut csv = String::from("url,tags\n");
    for i in 0..2000 {
        csv.push_str(&format!("https://many.example/{i},batch\n"));
    }
    let (status, report) = import(&s, ADMIN_KEY, csv).await;
    assert_eq!(status, 200);
    assert_eq!(report["created"], 2000, "{report}");
    let exported = export(&s, ADMIN_KEY).await;
    let mut reader = csv::Reader::from_reader(exported.as_bytes());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2000);
    for record in records.iter().step_by(250) {
        let code = record[4].rsplit('/').next().unwrap();
        let r = s.follow(code).await;
        assert_eq!(r.status(), 301, "{code}");
        assert_eq!(r.headers()["location"], &record[0]);
    }
}

#[tokio::test]
async fn the_cli_imports_a_file_and_reports_refused_lines() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("links.csv");
    std::fs::write(&file, MIXED).unwrap();
    let out = tokio::process::Command::new(common::binary())
        .args(["link", "import"])
        .arg(&file)
        .args(["--api", &s.control, "--key", ADMIN_KEY])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("5 rows: 3 created, 0 already there, 2 refused"),
        "{stdout}"
    );
    assert!(stdout.contains("line 3:"), "{stdout}");
}
