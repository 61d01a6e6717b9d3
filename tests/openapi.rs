//! The OpenAPI document: served by the real binary, complete (every error code of the API
//! appears, every operation documents its errors with the envelope), the reference page
//! at `/docs` from embedded assets under the web page's CSP, and Schemathesis run over
//! every operation with a valid key finds nothing.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ADMIN_KEY, Options, TestServer};
use serde_json::Value;
use shortlink_control::ErrorCode;

async fn document(server: &TestServer) -> Value {
    let response = server
        .client
        .get(format!("{}/api/v1/openapi.json", server.control))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    response.json().await.unwrap()
}

/// Every (method, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            all.push((method.to_uppercase(), path.clone(), operation));
        }
    }
    all
}

#[tokio::test]
async fn the_document_lists_every_operation_with_its_errors() {
    let server = TestServer::start().await;
    let doc = document(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let operations = operations(&doc);
    let listed: BTreeSet<(String, String)> = operations
        .iter()
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    // The API's routes, as DESIGN.md and the README name them; the router is built from
    // the documented handlers, so this guards the other way: nothing named here is missing.
    for (method, path) in [
        ("POST", "/api/v1/links"),
        ("GET", "/api/v1/links"),
        ("GET", "/api/v1/links/{code}"),
        ("PATCH", "/api/v1/links/{code}"),
        ("DELETE", "/api/v1/links/{code}"),
        ("GET", "/api/v1/links/{code}/stats"),
        ("GET", "/api/v1/stats"),
        ("GET", "/api/v1/clicks"),
        ("GET", "/api/v1/links/{code}/clicks"),
        ("GET", "/api/v1/links/{code}/qr"),
        ("POST", "/api/v1/links/import"),
        ("GET", "/api/v1/links/export"),
        ("POST", "/shorten"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/ws"),
        ("GET", "/api/v1/notifications"),
        ("POST", "/api/v1/uploads"),
        ("POST", "/api/v1/uploads/presign"),
        ("GET", "/api/v1/uploads/{id}"),
        ("PUT", "/api/v1/uploads/{id}/content"),
        ("POST", "/api/v1/uploads/{id}/complete"),
        ("GET", "/f/{id}"),
        ("GET", "/f/{id}/thumb/{size}"),
        ("POST", "/api/v1/domains"),
        ("GET", "/api/v1/domains"),
        ("DELETE", "/api/v1/domains/{name}"),
        ("PATCH", "/api/v1/domains/{name}"),
        ("GET", "/{code}"),
        ("POST", "/{code}"),
        ("POST", "/api/v1/users"),
        ("GET", "/api/v1/users"),
        ("PATCH", "/api/v1/users/{name}"),
        ("POST", "/api/v1/keys"),
        ("GET", "/api/v1/keys"),
        ("DELETE", "/api/v1/keys/{id}"),
        ("POST", "/api/v1/keys/{id}/rotate"),
        ("GET", "/api/v1/admin/links"),
        ("DELETE", "/api/v1/admin/links/{code}"),
        ("POST", "/api/v1/admin/links/{code}/disable"),
        ("POST", "/api/v1/admin/links/{code}/enable"),
        ("GET", "/api/v1/audit"),
        ("POST", "/api/v1/auth/login"),
        ("POST", "/api/v1/auth/logout"),
        ("GET", "/api/v1/auth/me"),
        ("GET", "/api/v1/sessions"),
        ("DELETE", "/api/v1/sessions/{id}"),
        ("POST", "/internal/v1/clicks"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    ] {
        assert!(
            listed.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} is not in the document"
        );
    }

    // Every error answer is the envelope, its code narrowed to that status's codes; every
    // code the API has appears somewhere (`invalid_message` is a WebSocket frame only;
    // `method_not_allowed` answers the methods a path does not have, which a document
    // describes by leaving them out).
    let mut seen = BTreeSet::new();
    for (method, path, operation) in &operations {
        assert!(
            operation["operationId"].is_string(),
            "{method} {path} has no operationId"
        );
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses
                .keys()
                .any(|s| s.starts_with('2') || s.starts_with('3') || s == "101"),
            "{method} {path} documents no success"
        );
        for (status, response) in responses {
            let Some(schema) = response
                .pointer("/content/application~1json/schema/properties/error/properties/code")
            else {
                continue;
            };
            for code in schema["enum"].as_array().unwrap() {
                let code = code.as_str().unwrap();
                let known = ErrorCode::parse(code)
                    .unwrap_or_else(|| panic!("{method} {path}: unknown code {code}"));
                let statuses = [known.status().as_u16().to_string(), "422".to_owned()];
                assert!(
                    statuses.contains(status),
                    "{method} {path}: {code} documented under {status}"
                );
                seen.insert(code.to_owned());
            }
        }
        if operation["security"].is_array() {
            assert!(
                responses.contains_key("401"),
                "{method} {path} needs a key but documents no 401"
            );
        }
    }
    for code in ErrorCode::ALL {
        if !matches!(
            code,
            ErrorCode::InvalidMessage | ErrorCode::MethodNotAllowed
        ) {
            assert!(
                seen.contains(code.as_str()),
                "no operation documents {}",
                code.as_str()
            );
        }
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert_eq!(schemes["session"]["in"], "cookie");
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for target in refs {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{target} is not a local reference"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{target} refers to nothing in the document"
        );
    }
}

/// Every `$ref` in `value`.
fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => refs.push(target.clone()),
                    _ => collect_refs(value, refs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}

/// The JavaScript client is typed from `clients/js/openapi.json`: it must be the document
/// the binary serves. `SHORTLINK_WRITE_OPENAPI=1` writes it (then rebuild the client:
/// `cd clients/js && npm run build`).
#[tokio::test]
async fn the_js_client_is_typed_from_the_served_document() {
    let server = TestServer::start().await;
    let doc = document(&server).await;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js/openapi.json");
    if std::env::var_os("SHORTLINK_WRITE_OPENAPI").is_some() {
        let mut text = serde_json::to_string_pretty(&doc).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
    }
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        committed == doc,
        "clients/js/openapi.json is not the served document: run \
         SHORTLINK_WRITE_OPENAPI=1 cargo test --test openapi the_js_client, then \
         (cd clients/js && npm run build), and commit both"
    );
}

#[tokio::test]
async fn the_reference_page_is_served_from_the_binary_under_the_pages_csp() {
    let server = TestServer::start().await;
    let page = server
        .client
        .get(format!("{}/docs/", server.control))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let page_csp = server
        .client
        .get(format!("{}/ui", server.control))
        .send()
        .await
        .unwrap()
        .headers()["content-security-policy"]
        .clone();
    assert_eq!(csp, page_csp.to_str().unwrap(), "the web page's CSP");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("//cdn") && !html.contains("unpkg"), "{html}");
    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        assert!(html.contains(asset), "the page loads {asset}");
        let response = server
            .client
            .get(format!("{}/docs/{asset}", server.control))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let body = response.text().await.unwrap();
        assert!(body.len() > 100, "{asset} is served");
        if asset == "swagger-initializer.js" {
            assert!(
                body.contains("/api/v1/openapi.json"),
                "the page reads this server's document: {body}"
            );
        }
    }
}

fn schemathesis() -> PathBuf {
    let binary = std::env::var("SCHEMATHESIS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/testinfra/schemathesis/bin/schemathesis")
        });
    assert!(
        binary.exists(),
        "Schemathesis is not installed at {}: run ./scripts/test.sh (it installs it), or \
         python3 -m venv target/testinfra/schemathesis && \
         target/testinfra/schemathesis/bin/pip install schemathesis==4.32.5",
        binary.display()
    );
    binary
}

/// Schemathesis over every operation of the served document, with the admin's key: every
/// check (no 5xx, statuses, content types, headers and bodies as documented, invalid data
/// refused, valid data accepted, stateful links), examples, coverage, fuzzing and
/// stateful phases. The checks' settings and why any is narrowed: tests/schemathesis.toml.
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing() {
    let binary = schemathesis();
    // The documented example webhook URL is on loopback: allowed here, so registrations
    // succeed and the operations on a webhook get real ones.
    let server = TestServer::start_with(Options::default().env(
        "SHORTLINK_CONTROL__WEBHOOKS__ALLOWED_NETWORKS",
        "127.0.0.0/8",
    ))
    .await;
    let report = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let url = format!("{}/api/v1/openapi.json", server.control);
    let key = ADMIN_KEY.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .arg("--config-file")
            .arg(config)
            .args(["run", &url])
            .args(["--checks", "all"])
            .args(["-H", &format!("Authorization: Bearer {key}")])
            .args(["--seed", "1", "--workers", "2", "--no-color"])
            .arg("--report-dir")
            .arg(report.path())
            // Its caches (`.schemathesis`, `.hypothesis`) go there too, not into the repo.
            .current_dir(report.path())
            .env("NO_COLOR", "1")
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Schemathesis found problems:\n{stdout}\n{stderr}\n--- server log ---\n{}",
        server.log_text()
    );
    assert!(
        stdout.contains("passed"),
        "Schemathesis ran no test:\n{stdout}\n{stderr}"
    );
}
