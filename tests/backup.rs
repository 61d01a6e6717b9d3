//! Backup and restore on the real binary: an installation with every kind of data is
//! backed up while it runs, restored SQLite → SQLite (command line), SQLite → CQL
//! (command line) and CQL → SQLite (admin API), and each restored installation gives
//! the same API answers and redirects as the original.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{ADMIN_KEY, INTERNAL_SECRET, Options, TestServer, binary, error_code};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use shortlink_core::time_util::to_rfc3339;

fn cql_nodes() -> String {
    std::env::var("CQL_TEST_NODES").unwrap_or_else(|_| {
        panic!(
            "CQL_TEST_NODES is not set: these tests need a CQL server. Run scripts/test.sh \
             (it installs and starts Cassandra), or start one and set CQL_TEST_NODES=127.0.0.1:9042"
        )
    })
}

/// The settings of a node on a fresh keyspace.
fn cql_env(keyspace: &str) -> Vec<(String, String)> {
    let nodes: Vec<String> = cql_nodes().split(',').map(|n| format!("\"{n}\"")).collect();
    [
        ("SHORTLINK_STORE__ENGINE", "cql".to_owned()),
        (
            "SHORTLINK_STORE__CQL__NODES",
            format!("[{}]", nodes.join(",")),
        ),
        ("SHORTLINK_STORE__CQL__KEYSPACE", keyspace.to_owned()),
        ("SHORTLINK_STORE__CQL__SETTLE_MS", "300".to_owned()),
        ("SHORTLINK_LOG", "info,scylla=warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Runs the binary with `args`, the data folder `data` and `env`; asserts it succeeded.
fn cli(args: &[&str], data: &Path, env: &[(String, String)]) -> Output {
    let out = Command::new(binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SHORTLINK_DATA_DIR", data)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run shortlink");
    assert!(
        out.status.success(),
        "shortlink {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What the original holds that the answers are read with.
struct Fixture {
    bob: String,
    upload: String,
    day: i64,
}

async fn ok_json(r: reqwest::RequestBuilder) -> Value {
    let r = r.send().await.expect("request");
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// Users, a key, a domain with a fallback, links with every option, an upload, a webhook,
/// and clicks over two days with bots among them.
async fn populate(s: &TestServer) -> Fixture {
    let bob = s.new_user("bob").await;
    ok_json(
        s.api(Method::POST, "/api/v1/domains", ADMIN_KEY)
            .json(&json!({"name": "go.example", "fallback_url": "https://example.com/gone"})),
    )
    .await;
    let links = [
        (ADMIN_KEY, json!({"url": "https://example.com/admin"})),
        (bob.as_str(), json!({"url": "https://example.com/plain"})),
        (
            &bob,
            json!({"url": "https://example.com/full", "alias": "full", "tags": ["a", "b"],
                "expires_at": "2099-01-01T00:00:00Z", "max_clicks": 1000, "redirect": 307,
                "fallback_url": "https://example.com/after",
                "targeting": {"ios": "https://apps.apple.com/app/id1",
                    "countries": {"de": "https://example.de/"}}}),
        ),
        (
            &bob,
            json!({"url": "https://example.com/secret", "alias": "secret", "password": "hunter22"}),
        ),
        (
            &bob,
            json!({"url": "https://example.com/on-domain", "alias": "dom", "domain": "go.example"}),
        ),
        (
            &bob,
            json!({"url": "https://example.com/capped", "alias": "capped", "max_clicks": 1}),
        ),
    ];
    for (key, body) in links {
        let (status, link) = s.create(key, body).await;
        assert_eq!(status, 201, "{link}");
    }
    let off = s
        .create(
            &bob,
            json!({"url": "https://example.com/off", "alias": "off"}),
        )
        .await;
    assert_eq!(off.0, 201);
    ok_json(
        s.api(Method::PATCH, "/api/v1/links/off", &bob)
            .json(&json!({"disabled": true})),
    )
    .await;
    let part = Part::bytes(b"hello, backup\n".repeat(100_000))
        .file_name("notes.txt")
        .mime_str("text/plain")
        .unwrap();
    let upload = ok_json(
        s.api(Method::POST, "/api/v1/uploads", &bob)
            .multipart(Form::new().part("file", part)),
    )
    .await;
    let upload = upload["id"].as_str().unwrap().to_owned();
    // A link that is clicked, then deleted: its clicks stay in the account's statistics.
    let (status, _) = s
        .create(
            &bob,
            json!({"url": "https://example.com/gone", "alias": "gone"}),
        )
        .await;
    assert_eq!(status, 201);
    ok_json(
        s.api(Method::POST, "/api/v1/webhooks", &bob)
            .json(&json!({"url": "http://127.0.0.1:9/hook"})),
    )
    .await;
    // Ids in a fresh store follow creation order: the admin's link is 1, bob's 2–7, the
    // upload's 8, the deleted one 9.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Two days back: the latest click (day + 100 000 s) is past at any hour of today.
    let day = now - now.rem_euclid(86_400) - 2 * 86_400;
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
    let bot = "Googlebot/2.1 (+http://www.google.com/bot.html)";
    let mut clicks = Vec::new();
    for (link, n, at, ua, country, referrer) in [
        (1, 3, day + 600, chrome, "DE", "https://news.example/a"),
        (2, 5, day + 4000, chrome, "FR", "https://news.example/b"),
        (2, 2, day + 90_000, bot, "US", "https://search.example/"),
        (3, 4, day + 7200, chrome, "DE", "https://mail.example/"),
        (5, 1, day + 100_000, chrome, "JP", "https://news.example/c"),
        (9, 6, day + 50_000, chrome, "NL", "https://news.example/d"),
    ] {
        clicks.extend((0..n).map(|i| {
            json!({"l": link, "t": at * 1000 + i, "ua": ua, "c": country, "r": referrer,
                "ip": format!("203.0.113.{}", 10 + i)})
        }));
    }
    let r = s
        .client
        .post(format!("{}/internal/v1/clicks", s.control))
        .header("x-shortlink-internal-secret", INTERNAL_SECRET)
        .json(&json!({"batch_id": "backup-1", "clicks": clicks}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .api(Method::DELETE, "/api/v1/links/gone", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    Fixture { bob, upload, day }
}

/// Where every installation of the test says its links are, so their short URLs match.
const PUBLIC_URL: &str = "http://sho.rt";

/// Options of an installation of the test.
fn options() -> Options {
    Options::default().env("SHORTLINK_PUBLIC_URL", PUBLIC_URL)
}

/// Drops `field` from every object in `value`.
fn strip(value: &mut Value, field: &str) {
    match value {
        Value::Object(map) => {
            map.remove(field);
            map.values_mut().for_each(|v| strip(v, field));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| strip(v, field)),
        _ => {}
    }
}

/// Everything the API says about the fixture's data (cursors, which name positions in a
/// backend, and a key's last use, which reading these answers moves, left out).
async fn answers(s: &TestServer, fx: &Fixture) -> Value {
    let range = format!(
        "from={}&to={}",
        to_rfc3339(fx.day - 86_400),
        to_rfc3339(fx.day + 2 * 86_400)
    );
    let mut out = serde_json::Map::new();
    for (who, key) in [("admin", ADMIN_KEY), ("bob", fx.bob.as_str())] {
        let links = s.get_json("/api/v1/links?limit=100", key).await;
        for link in links["items"].as_array().unwrap() {
            let code = link["code"].as_str().unwrap();
            let domain = link["domain"]
                .as_str()
                .map(|d| format!("&domain={d}"))
                .unwrap_or_default();
            for interval in ["day", "hour"] {
                let stats = s
                    .get_json(
                        &format!("/api/v1/links/{code}/stats?{range}&interval={interval}{domain}"),
                        key,
                    )
                    .await;
                out.insert(format!("{who} {code}{domain} stats {interval}"), stats);
            }
            let bots = s
                .get_json(
                    &format!("/api/v1/links/{code}/stats?{range}&bots=include{domain}"),
                    key,
                )
                .await;
            out.insert(format!("{who} {code}{domain} stats bots"), bots);
        }
        out.insert(format!("{who} links"), links);
        for interval in ["day", "hour"] {
            let stats = s
                .get_json(&format!("/api/v1/stats?{range}&interval={interval}"), key)
                .await;
            out.insert(format!("{who} account {interval}"), stats);
        }
        let r = s
            .api(Method::GET, "/api/v1/clicks?format=ndjson", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut clicks: Vec<Value> = r
            .text()
            .await
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        clicks.iter_mut().for_each(|c| strip(c, "cursor"));
        clicks.sort_by_key(|c| c.to_string());
        out.insert(format!("{who} clicks"), Value::Array(clicks));
        let mut keys = s.get_json("/api/v1/keys", key).await;
        strip(&mut keys, "last_used_at");
        out.insert(format!("{who} keys"), keys);
    }
    let mut users = s.get_json("/api/v1/users", ADMIN_KEY).await;
    strip(&mut users, "id");
    out.insert("users".into(), users);
    out.insert(
        "domains".into(),
        s.get_json("/api/v1/domains", ADMIN_KEY).await,
    );
    let mut upload = s
        .get_json(&format!("/api/v1/uploads/{}", fx.upload), &fx.bob)
        .await;
    strip(&mut upload, "url");
    out.insert("upload".into(), upload);
    out.insert(
        "webhooks".into(),
        s.get_json("/api/v1/webhooks", &fx.bob).await,
    );
    Value::Object(out)
}

/// `answers` without when the admin user and its bootstrap key were made.
fn own_admin_aside(mut answers: Value) -> Value {
    for list in ["users", "admin keys"] {
        for item in answers[list]["items"].as_array_mut().unwrap() {
            if item["name"] == "admin" || item["user"] == "admin" {
                item.as_object_mut().unwrap().remove("created_at");
            }
        }
        let items = answers[list]["items"].as_array_mut().unwrap();
        items.sort_by_key(|i| i.to_string());
    }
    answers
}

/// Asserts two `answers` are equal, naming the entries that differ.
fn assert_same(got: &Value, want: &Value, what: &str) {
    let (got, want) = (got.as_object().unwrap(), want.as_object().unwrap());
    let mut differ = Vec::new();
    for (key, value) in want {
        if got.get(key) != Some(value) {
            differ.push(format!("{key}:\n  got  {:?}\n  want {value}", got.get(key)));
        }
    }
    differ.extend(
        got.keys()
            .filter(|k| !want.contains_key(*k))
            .map(|k| format!("{k}: not expected")),
    );
    assert!(differ.is_empty(), "{what}: {}", differ.join("\n"));
}

/// What the proxy answers for each link (visiting counts clicks: read after `answers`).
async fn visits(s: &TestServer, fx: &Fixture) -> Vec<(String, u16, String)> {
    let mut seen = Vec::new();
    let links = s.get_json("/api/v1/links?limit=100", &fx.bob).await;
    let mut codes: Vec<(String, Option<String>)> = links["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["code"].as_str().unwrap().to_owned(),
                l["domain"].as_str().map(str::to_owned),
            )
        })
        .collect();
    codes.sort();
    for (code, domain) in codes {
        let headers: Vec<(&str, &str)> = domain.iter().map(|d| ("host", d.as_str())).collect();
        for _ in 0..2 {
            let r = s.follow_with(&code, &headers).await;
            let location = r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned())
                .unwrap_or_default();
            seen.push((code.clone(), r.status().as_u16(), location));
        }
    }
    let upload = s
        .get_json(&format!("/api/v1/uploads/{}", fx.upload), &fx.bob)
        .await;
    let short = upload["short_url"].as_str().unwrap();
    let code = short.rsplit('/').next().unwrap();
    let r = s.follow(code).await;
    let status = r.status().as_u16();
    let bytes = if status == 200 {
        r.bytes().await.unwrap().to_vec()
    } else {
        // The proxy sends uploads to where the control plane serves them.
        let location = r.headers()["location"]
            .to_str()
            .unwrap()
            .replace(PUBLIC_URL, &s.proxy);
        s.client
            .get(location)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    };
    seen.push((
        "upload".into(),
        status,
        format!(
            "{} bytes, the file's own: {}",
            bytes.len(),
            bytes == b"hello, backup\n".repeat(100_000)
        ),
    ));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_either_backend_with_the_same_answers() {
    let a = TestServer::start_with(
        options()
            .env("SHORTLINK_INTERNAL_SECRET", INTERNAL_SECRET)
            .env(
                "SHORTLINK_CONTROL__WEBHOOKS__ALLOWED_NETWORKS",
                "[\"127.0.0.0/8\"]",
            ),
    )
    .await;
    let fx = populate(&a).await;
    let want = answers(&a, &fx).await;
    assert_eq!(want["bob account day"]["total"], json!(18), "{want}");

    // The running installation, backed up from the command line.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("a.backup.zst");
    let out = cli(&["backup", file.to_str().unwrap()], &a.data, &[]);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("link 8"), "{progress}");
    assert!(std::fs::metadata(&file).unwrap().len() > 0);
    let snapshots: Vec<_> = std::fs::read_dir(&a.data)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("backup-snapshot")
        })
        .collect();
    assert!(snapshots.is_empty(), "the snapshot copy is removed");
    let want_visits = visits(&a, &fx).await;
    assert!(
        want_visits
            .iter()
            .any(|(c, s, l)| c == "full" && *s == 307 && l == "https://example.com/full"),
        "{want_visits:?}"
    );

    // SQLite → SQLite, from the command line, before the new installation first starts.
    let b_data = work.path().join("b");
    cli(&["restore", file.to_str().unwrap()], &b_data, &[]);
    let b = TestServer::start_with(Options {
        data: Some(b_data.clone()),
        ..options()
    })
    .await;
    assert_same(&answers(&b, &fx).await, &want, "SQLite → SQLite");
    assert_eq!(visits(&b, &fx).await, want_visits, "SQLite → SQLite");
    // A new link does not take the deleted link's id, and with it its statistics.
    let (status, fresh) = b
        .create(
            &fx.bob,
            json!({"url": "https://example.com/new", "alias": "newone"}),
        )
        .await;
    assert_eq!(status, 201, "{fresh}");
    let stats = b
        .get_json(
            &format!(
                "/api/v1/links/newone/stats?from={}&to={}",
                to_rfc3339(fx.day - 86_400),
                to_rfc3339(fx.day + 2 * 86_400)
            ),
            &fx.bob,
        )
        .await;
    assert_eq!(stats["total"], json!(0), "{stats}");
    // A second restore into an installation that holds data is refused.
    let again = Command::new(binary())
        .args(["restore", file.to_str().unwrap()])
        .env("SHORTLINK_DATA_DIR", &b_data)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("fresh one"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    drop(b);

    // SQLite → CQL, from the command line, into a keyspace `migrate` made.
    let keyspace = format!("sl_restore_{:08x}", rand::random::<u32>());
    let env = cql_env(&keyspace);
    let c_data = work.path().join("c");
    cli(&["migrate"], &c_data, &env);
    cli(&["restore", file.to_str().unwrap()], &c_data, &env);
    let mut c_options = Options {
        data: Some(c_data),
        ..options()
    };
    for (k, v) in &env {
        c_options = c_options.env(k, v);
    }
    let c = TestServer::start_with(c_options).await;
    assert_same(&answers(&c, &fx).await, &want, "SQLite → CQL");
    // Its backup through the admin API, before visits add clicks.
    let r = c
        .api(Method::GET, "/api/v1/admin/backup", ADMIN_KEY)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zstd");
    let from_cql = r.bytes().await.unwrap();
    let r = c
        .api(Method::GET, "/api/v1/admin/backup", &fx.bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "only admins back up");
    assert_eq!(visits(&c, &fx).await, want_visits, "SQLite → CQL");
    drop(c);

    // CQL → SQLite, through the admin API of a fresh installation (its own admin kept).
    let d = TestServer::start_with(options()).await;
    let restore = |body: Vec<u8>, key: &'static str| {
        d.api(Method::POST, "/api/v1/admin/restore", key)
            .header("content-type", "application/zstd")
            .body(body)
            .timeout(Duration::from_secs(60))
            .send()
    };
    let r = restore(b"not a backup".to_vec(), ADMIN_KEY).await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(error_code(&r.json().await.unwrap()), "invalid_backup");
    let r = restore(from_cql.to_vec(), ADMIN_KEY).await.unwrap();
    let status = r.status();
    let summary: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["records"]["link"], json!(8), "{summary}");
    assert_eq!(summary["missing_objects"], json!(0), "{summary}");
    // The installation keeps its own admin: only when it was made differs.
    assert_same(
        &own_admin_aside(answers(&d, &fx).await),
        &own_admin_aside(want.clone()),
        "CQL → SQLite",
    );
    assert_eq!(visits(&d, &fx).await, want_visits, "CQL → SQLite");
    let r = restore(from_cql.to_vec(), ADMIN_KEY).await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(error_code(&r.json().await.unwrap()), "not_empty");
}

/// A backup cut short (a failure while it streamed, a truncated copy) is refused before
/// anything is written, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_backup_is_refused() {
    let a = TestServer::start().await;
    // More links than a restore writes at once, so a half-read file would have written some.
    let csv: String = std::iter::once("url\n".to_owned())
        .chain((0..6000).map(|i| format!("https://example.com/{i}\n")))
        .collect();
    let r = a
        .api(Method::POST, "/api/v1/links/import", ADMIN_KEY)
        .header("content-type", "text/csv")
        .body(csv)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = a
        .api(Method::GET, "/api/v1/admin/backup", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let whole = r.bytes().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let cut = work.path().join("cut.zst");
    std::fs::write(&cut, &whole[..whole.len() - 20]).unwrap();
    let out = Command::new(binary())
        .args(["restore", cut.to_str().unwrap()])
        .env("SHORTLINK_DATA_DIR", work.path().join("fresh"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cut off") || stderr.contains("unreadable stream"),
        "{stderr}"
    );
    // Nothing was written: the whole backup restores into the same place.
    let whole_file = work.path().join("whole.zst");
    std::fs::write(&whole_file, &whole).unwrap();
    let out = Command::new(binary())
        .args(["restore", whole_file.to_str().unwrap()])
        .env("SHORTLINK_DATA_DIR", work.path().join("fresh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
