//! Bulk CSV import and export through the API, against the real binary.

mod common;

use common::{ADMIN_KEY, Options, TestServer, error_code};
use reqwest::Method;
use serde_json::{Value, json};

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

/// The exported rows as maps of column name to cell.
fn records(csv: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            header
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// (url, alias, tags, expires_at) of every exported row, sorted.
fn rows(csv: &str) -> Vec<(String, String, String, String)> {
    let mut out: Vec<_> = records(csv)
        .into_iter()
        .map(|r| {
            (
                r["url"].clone(),
                r["alias"].clone(),
                r["tags"].clone(),
                r["expires_at"].clone(),
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

/// The listing of `s`'s admin links, without what belongs to one instance (clicks,
/// times, the short URL's host), in a fixed order.
async fn listing(s: &TestServer) -> Vec<Value> {
    let page: Value = s.get_json("/api/v1/links?limit=100", ADMIN_KEY).await;
    let mut items: Vec<Value> = page["items"].as_array().unwrap().clone();
    for item in &mut items {
        let item = item.as_object_mut().unwrap();
        for volatile in ["clicks", "created_at", "updated_at", "short_url"] {
            item.remove(volatile);
        }
    }
    items.sort_by_key(|i| (i["domain"].to_string(), i["code"].to_string()));
    items
}

#[tokio::test]
async fn an_export_imports_into_a_fresh_instance_as_the_same_links_with_every_option() {
    let (a, b) = (TestServer::start().await, TestServer::start().await);
    for s in [&a, &b] {
        let r = s
            .api(Method::POST, "/api/v1/domains", ADMIN_KEY)
            .json(&json!({"name": "go.brand.test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let links = [
        json!({"url": "https://opts.example/plain"}),
        json!({"url": "https://opts.example/branded", "domain": "go.brand.test", "alias": "same"}),
        json!({"url": "https://opts.example/same", "alias": "same"}),
        json!({"url": "https://opts.example/generated-on-brand", "domain": "go.brand.test"}),
        json!({
            "url": "https://opts.example/all",
            "redirect": 307,
            "max_clicks": 5,
            "tags": ["t1", "t-2"],
            "expires_at": "2031-02-03T04:05:06Z",
            "targeting": {"ios": "https://apps.example/ios", "countries": {"NL": "https://opts.example/nl"}},
        }),
    ];
    for link in &links {
        let (status, body) = a.create(ADMIN_KEY, link.clone()).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, _) = a
        .create(
            ADMIN_KEY,
            json!({"url": "https://opts.example/locked", "alias": "locked", "password": "pw-123456"}),
        )
        .await;
    assert_eq!(status, 201);
    let r = a
        .api(Method::PATCH, "/api/v1/links/same", ADMIN_KEY)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let exported = export(&a, ADMIN_KEY).await;
    let (status, report) = import(&b, ADMIN_KEY, exported.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&report["created"], &report["failed"]),
        (&json!(5), &json!(1)),
        "{report}"
    );
    assert!(
        report["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("password-protected"),
        "a protected link is never imported open: {report}"
    );
    // The same links at the same codes, every option kept: the listings agree field by
    // field (but for clicks and times, which belong to the first instance).
    let mut before = listing(&a).await;
    before.retain(|l| l["password_protected"] == false);
    let after = listing(&b).await;
    assert_eq!(before.len(), 5);
    assert!(
        before.iter().any(|l| l["disabled"] == true),
        "the disabled one too"
    );
    assert_eq!(before, after);
    let all = after
        .iter()
        .find(|l| l["url"] == "https://opts.example/all")
        .unwrap();
    assert_eq!(
        (&all["redirect"], &all["max_clicks"], &all["tags"]),
        (&json!(307), &json!(5), &json!(["t1", "t-2"])),
        "{all}"
    );
    assert_eq!(all["targeting"]["ios"], "https://apps.example/ios");
    // Another account of the same instance: generated codes taken by the first account's
    // links get new ones; aliases stay refused.
    let other = a.new_user("second-account").await;
    let (_, elsewhere) = import(&a, &other, exported.clone()).await;
    let codes: Vec<&str> = elsewhere["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        (&elsewhere["created"], codes),
        (&json!(3), vec!["invalid_csv", "alias_taken", "alias_taken"]),
        "{elsewhere}"
    );
    // Importing the export again finds them all.
    let (_, again) = import(&b, ADMIN_KEY, exported).await;
    assert_eq!(
        (&again["existing"], &again["created"]),
        (&json!(5), &json!(0)),
        "{again}"
    );
    let (status, bad) = import(
        &b,
        ADMIN_KEY,
        "url,redirect,max_clicks,targeting\n\
         https://x.example/1,303,,\n\
         https://x.example/2,,zero,\n\
         https://x.example/3,,,{\"ios\": 5}\n",
    )
    .await;
    assert_eq!(status, 200);
    let codes: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "invalid_redirect",
            "invalid_max_clicks",
            "invalid_targeting"
        ],
        "{bad}"
    );
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
    let records = records(&exported);
    assert_eq!(records.len(), 2000);
    for record in records.iter().step_by(250) {
        let code = record["short_url"].rsplit('/').next().unwrap();
        assert_eq!(code, record["code"]);
        let r = s.follow(code).await;
        assert_eq!(r.status(), 301, "{code}");
        assert_eq!(r.headers()["location"], record["url"].as_str());
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
