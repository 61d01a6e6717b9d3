//! Click analytics end to end: capture at the proxy, shipping, ingestion, stats.

mod common;

use std::time::Duration;

use common::{
    ADMIN_KEY, INTERNAL_SECRET, Options, Split, TestServer, count_of, status_and_code, wait_stat,
    wait_total,
};
use reqwest::Method;
use serde_json::{Value, json};

const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

#[tokio::test]
async fn every_redirect_is_counted_in_the_right_buckets() {
    let s = TestServer::start_with(
        Options::default().env("SHORTLINK_PROXY__COUNTRY_HEADER", "cf-ipcountry"),
    )
    .await;
    let (_, body) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://stats.example/", "alias": "counted"}),
        )
        .await;
    assert_eq!(body["code"], "counted");
    s.wait_status("counted", 301, Duration::from_secs(1)).await;
    // wait_status made one GET with reqwest's default (empty) user agent: a bot click.
    let url = format!("{}/counted", s.proxy);
    let plan: &[(&str, usize, Option<&str>, bool)] = &[
        (
            CHROME_WIN,
            10,
            Some("https://news.example.com/story"),
            false,
        ),
        (SAFARI_IPHONE, 10, None, false),
        (
            FIREFOX_LINUX,
            5,
            Some("https://www.social.example/post"),
            false,
        ),
        (GOOGLEBOT, 10, None, false),
        (CHROME_WIN, 5, None, true),
    ];
    for (ua, n, referrer, head) in plan {
        for _ in 0..*n {
            let mut r = if *head {
                s.client.head(&url)
            } else {
                s.client.get(&url)
            }
            .header("user-agent", *ua)
            .header("cf-ipcountry", "NL");
            if let Some(referrer) = referrer {
                r = r.header("referer", *referrer);
            }
            assert_eq!(r.send().await.unwrap().status(), 301);
        }
    }
    let stats = wait_total(&s.client, &s.proxy, "counted", 41).await;
    assert_eq!(stats["total"], 41, "{stats}");
    assert_eq!(stats["humans"], 25);
    assert_eq!(
        stats["bots"], 16,
        "Googlebot, HEAD requests and the UA-less probe"
    );
    // The top-N lists leave bots out unless asked.
    assert_eq!(stats["include_bots"], false);
    assert_eq!(count_of(&stats["browsers"], "Chrome"), 10);
    assert_eq!(count_of(&stats["browsers"], "Safari"), 10);
    assert_eq!(count_of(&stats["browsers"], "Firefox"), 5);
    assert_eq!(count_of(&stats["browsers"], "Googlebot"), 0);
    assert_eq!(count_of(&stats["os"], "iPhone"), 10);
    assert_eq!(count_of(&stats["devices"], "desktop"), 15);
    assert_eq!(count_of(&stats["devices"], "mobile"), 10);
    assert_eq!(count_of(&stats["devices"], "bot"), 0);
    assert_eq!(count_of(&stats["referrers"], "news.example.com"), 10);
    assert_eq!(count_of(&stats["referrers"], "social.example"), 5);
    assert_eq!(count_of(&stats["referrers"], "direct"), 10);
    assert_eq!(count_of(&stats["countries"], "NL"), 25);
    assert_eq!(count_of(&stats["countries"], "unknown"), 0);
    let all: Value = s
        .get_json("/api/v1/links/counted/stats?bots=include", ADMIN_KEY)
        .await;
    assert_eq!(
        (&all["total"], &all["include_bots"]),
        (&json!(41), &json!(true))
    );
    assert_eq!(count_of(&all["browsers"], "Chrome"), 15);
    assert_eq!(count_of(&all["devices"], "bot"), 16);
    assert_eq!(count_of(&all["referrers"], "direct"), 26);
    assert_eq!(count_of(&all["countries"], "NL"), 40);
    assert_eq!(count_of(&all["countries"], "unknown"), 1);
    let series_sum: u64 = stats["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    assert_eq!(series_sum, 41);

    let link: Value = s.get_json("/api/v1/links/counted", ADMIN_KEY).await;
    assert_eq!(link["clicks"], 41);
    let by_day: Value = s
        .get_json("/api/v1/links/counted/stats?interval=day", ADMIN_KEY)
        .await;
    assert_eq!(by_day["total"], 41);
    assert_eq!(by_day["interval"], "day");

    // Owner only, and bad ranges are refused clearly.
    let other = s.new_user("stranger").await;
    let r = s
        .api(Method::GET, "/api/v1/links/counted/stats", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    for (query, code) in [
        (
            "from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z",
            "invalid_range",
        ),
        ("from=yesterday", "invalid_range"),
        ("interval=week", "invalid_query"),
        ("bots=some", "invalid_query"),
        ("tz=Mars/Olympus", "invalid_query"),
        (
            "from=2000-01-01T00:00:00Z&to=2030-01-01T00:00:00Z",
            "range_too_large",
        ),
    ] {
        let r = s
            .api(
                Method::GET,
                &format!("/api/v1/links/counted/stats?{query}"),
                ADMIN_KEY,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(status_and_code(r).await, (422, code.to_owned()), "{query}");
    }
}

#[tokio::test]
async fn ingestion_is_authenticated_validated_and_idempotent() {
    let s = TestServer::start_with(
        Options::default().env("SHORTLINK_INTERNAL_SECRET", INTERNAL_SECRET),
    )
    .await;
    let (status, _) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://ingest.example/", "alias": "ingested"}),
        )
        .await;
    assert_eq!(status, 201);
    // The first link of a fresh store has id 1; the batches below are about it.
    let id = 1;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let batch = |batch_id: &str, n: usize, ts: i64| {
        json!({
            "batch_id": batch_id,
            "clicks": (0..n).map(|_| json!({"l": id, "t": ts, "ua": CHROME_WIN})).collect::<Vec<_>>(),
        })
    };
    let post = |secret: &'static str, body: Value, base: String| {
        s.client
            .post(format!("{base}/internal/v1/clicks"))
            .header("x-shortlink-internal-secret", secret)
            .json(&body)
            .send()
    };
    let r = post("wrong-secret", batch("b1", 3, now_ms), s.control.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a forged batch is refused");
    let r = post(INTERNAL_SECRET, batch("b1", 3, now_ms), s.proxy.clone())
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "the internal endpoint is not reachable through the proxy"
    );
    let r = post(
        INTERNAL_SECRET,
        batch("big", 10_001, now_ms),
        s.control.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        status_and_code(r).await,
        (413, "batch_too_large".to_owned())
    );
    let r = post(
        INTERNAL_SECRET,
        batch("old", 1, now_ms - 40 * 86_400_000),
        s.control.clone(),
    )
    .await
    .unwrap();
    assert_eq!(status_and_code(r).await, (422, "invalid_timestamp".into()));
    let r = post(
        INTERNAL_SECRET,
        batch("bad id!", 1, now_ms),
        s.control.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let r = post(
        INTERNAL_SECRET,
        json!({"batch_id": "x", "clicks": "nope"}),
        s.control.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);

    let r = post(INTERNAL_SECRET, batch("b1", 3, now_ms), s.control.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["applied"], true);
    let r = post(INTERNAL_SECRET, batch("b1", 3, now_ms), s.control.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["applied"],
        false,
        "a batch posted twice is counted once"
    );
    let stats = wait_total(&s.client, &s.proxy, "ingested", 3).await;
    assert_eq!(stats["total"], 3, "{stats}");
}

#[tokio::test]
async fn account_stats_sum_every_link_and_days_start_at_the_zones_midnight() {
    let s = TestServer::start_with(
        Options::default().env("SHORTLINK_INTERNAL_SECRET", INTERNAL_SECRET),
    )
    .await;
    let alice = s.new_user("alice").await;
    // Ids in a fresh store follow creation order: alice's links are 1–3, the admin's 4.
    for (key, alias) in [
        (alice.as_str(), "acct-a"),
        (&alice, "acct-b"),
        (&alice, "acct-c"),
        (ADMIN_KEY, "acct-other"),
    ] {
        let (status, _) = s
            .create(
                key,
                json!({"url": format!("https://acct.example/{alias}"), "alias": alias}),
            )
            .await;
        assert_eq!(status, 201, "{alias}");
    }
    // Yesterday's UTC midnight; clicks half an hour either side of it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let midnight = now - now.rem_euclid(86_400) - 86_400;
    let (before, after) = ((midnight - 1800) * 1000, (midnight + 1800) * 1000);
    let mut clicks = Vec::new();
    for (link, n, ts, ua) in [
        (1, 4, before, CHROME_WIN),
        (1, 1, before, GOOGLEBOT),
        (2, 2, after, SAFARI_IPHONE),
        (3, 1, after, GOOGLEBOT),
        (4, 5, after, CHROME_WIN),
    ] {
        clicks.extend((0..n).map(|_| json!({"l": link, "t": ts, "ua": ua})));
    }
    let r = s
        .client
        .post(format!("{}/internal/v1/clicks", s.control))
        .header("x-shortlink-internal-secret", INTERNAL_SECRET)
        .json(&json!({"batch_id": "account-1", "clicks": clicks}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let range = &format!(
        "from={}&to={}",
        ts_text(midnight - 86_400),
        ts_text(midnight + 86_400)
    );
    let stats = |query: String, key: String| {
        let s = &s;
        async move {
            s.get_json(&format!("/api/v1/stats?{range}&{query}"), &key)
                .await
        }
    };
    let utc = stats("interval=day".into(), alice.clone()).await;
    assert_eq!(
        (&utc["total"], &utc["humans"], &utc["bots"], &utc["tz"]),
        (&json!(8), &json!(6), &json!(2), &json!("UTC")),
        "{utc}"
    );
    assert_eq!(
        utc["series"],
        json!([{"ts": midnight - 86_400, "count": 5}, {"ts": midnight, "count": 3}])
    );
    let top = |v: &Value| -> Vec<(String, u64)> {
        v["links"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["code"].as_str().unwrap().to_owned(),
                    l["clicks"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        top(&utc),
        vec![("acct-a".into(), 4), ("acct-b".into(), 2)],
        "people only: a link only bots clicked is not in the list"
    );
    assert!(
        utc["links"][0]["short_url"]
            .as_str()
            .unwrap()
            .ends_with("/acct-a")
    );
    let with_bots = stats("interval=day&bots=include".into(), alice.clone()).await;
    assert_eq!(
        top(&with_bots),
        vec![
            ("acct-a".into(), 5),
            ("acct-b".into(), 2),
            ("acct-c".into(), 1)
        ]
    );
    // Tokyo (+09:00): both sides of UTC midnight are the same morning there.
    let tokyo = stats("interval=day&tz=Asia/Tokyo".into(), alice.clone()).await;
    assert_eq!(tokyo["tz"], "Asia/Tokyo");
    assert_eq!(
        tokyo["series"],
        json!([{"ts": midnight - 9 * 3600, "count": 8}])
    );
    // Honolulu (-10:00): the same afternoon of the day before.
    let honolulu = stats("interval=day&tz=Pacific/Honolulu".into(), alice.clone()).await;
    assert_eq!(
        honolulu["series"],
        json!([{"ts": midnight - 86_400 + 10 * 3600, "count": 8}])
    );
    // Hourly buckets are instants; a zone does not move them.
    let hourly = stats("interval=hour&tz=Asia/Tokyo".into(), alice.clone()).await;
    assert_eq!(
        hourly["series"],
        json!([{"ts": midnight - 3600, "count": 5}, {"ts": midnight, "count": 3}])
    );
    let admin = stats("interval=day".into(), ADMIN_KEY.to_owned()).await;
    assert_eq!(
        (&admin["total"], top(&admin)),
        (&json!(5), vec![("acct-other".to_owned(), 5)]),
        "an account sees its own links only"
    );
    // Raw clicks: the account's, one link's, resumed from a cursor, in CSV and NDJSON.
    let export = |path: String, key: String| {
        let s = &s;
        async move {
            let r = s.api(Method::GET, &path, &key).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
            (kind, r.text().await.unwrap())
        }
    };
    let records = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (kind, text) = export("/api/v1/clicks?format=ndjson".into(), alice.clone()).await;
    assert_eq!(kind, "application/x-ndjson");
    let mine = records(&text);
    assert_eq!(mine.len(), 8, "{text}");
    let codes: Vec<&str> = mine.iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes.iter().filter(|c| **c == "acct-a").count(), 5);
    assert!(
        !codes.contains(&"acct-other"),
        "another account's clicks stay out"
    );
    let bot = mine
        .iter()
        .find(|r| r["bot"] == true && r["code"] == "acct-a")
        .expect("the bot's click is exported, marked");
    assert_eq!(bot["browser"], "Googlebot", "{bot}");
    assert_eq!(bot["time"], to_ms_text(before), "{bot}");
    assert!(
        mine.iter()
            .all(|r| r["count"] == 1 && r["cursor"].is_string())
    );
    let (_, first) = export("/api/v1/clicks?format=ndjson&limit=3".into(), alice.clone()).await;
    let first = records(&first);
    assert_eq!(first.len(), 3);
    let cursor = first[2]["cursor"].as_str().unwrap();
    let (_, rest) = export(
        format!("/api/v1/clicks?format=ndjson&cursor={cursor}"),
        alice.clone(),
    )
    .await;
    let mut resumed = first.clone();
    resumed.extend(records(&rest));
    assert_eq!(resumed, mine, "a cursor resumes right after its record");
    let (kind, csv) = export("/api/v1/links/acct-b/clicks".into(), alice.clone()).await;
    assert_eq!(kind, "text/csv; charset=utf-8");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "time,code,domain,ip,browser,os,device,bot,referrer,country,count,cursor"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[1].contains(",acct-b,,") && lines[1].contains(",Safari,"),
        "{csv}"
    );
    let (_, later) = export(
        format!("/api/v1/clicks?format=ndjson&from={}", ts_text(midnight)),
        alice.clone(),
    )
    .await;
    assert_eq!(records(&later).len(), 3, "from filters by the click's time");
    let r = s
        .api(Method::GET, "/api/v1/clicks?cursor=not-one", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (422, "invalid_cursor".into()));
    let r = s
        .api(Method::GET, "/api/v1/links/acct-other/clicks", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "another account's link");

    let r = s
        .api(Method::DELETE, "/api/v1/links/acct-b", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let after = stats("interval=day".into(), alice.clone()).await;
    assert_eq!(
        after["total"], 8,
        "a deleted link's clicks stay in the totals"
    );
    assert_eq!(top(&after), vec![("acct-a".into(), 4)]);
    let (_, text) = export("/api/v1/clicks?format=ndjson".into(), alice.clone()).await;
    let orphans = records(&text)
        .into_iter()
        .filter(|r| r["code"] == "")
        .count();
    assert_eq!(orphans, 2, "a deleted link's clicks export without a code");
    let r = s
        .api(Method::GET, "/api/v1/stats?tz=Nowhere/Atlantis", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (422, "invalid_query".into()));
    let r = s
        .client
        .get(format!("{}/api/v1/stats", s.control))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Unix `ms` as the export writes it.
fn to_ms_text(ms: i64) -> String {
    shortlink_core::time_util::ms_to_rfc3339(ms)
}

/// `seconds` as RFC 3339 in UTC (`Z`: nothing to escape in a query).
fn ts_text(seconds: i64) -> String {
    shortlink_core::time_util::to_rfc3339(seconds)
}

/// Batches in a spool folder: each process spools into a folder of its own in it.
fn spooled_batches(spool: &std::path::Path) -> usize {
    let mut batches = 0;
    for entry in std::fs::read_dir(spool).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            batches += spooled_batches(&path);
        } else if path.to_string_lossy().ends_with(".batch.json") {
            batches += 1;
        }
    }
    batches
}

#[tokio::test]
async fn clicks_made_while_the_control_plane_is_down_are_counted_once() {
    let split = Split::new();
    let mut control = split.start("control").await;
    let mut proxy = split.start("proxy").await;
    let (status, _) = split
        .create(json!({"url": "https://outage.example/", "alias": "outage"}))
        .await;
    assert_eq!(status, 201);
    let r = split
        .wait_status("outage", 301, Duration::from_secs(2))
        .await;
    assert_eq!(r.status(), 301, "link reaches the proxy");
    // The polling above made clicks too, without a user agent: bots. The 30 clicks made
    // during the outage are the humans (a desktop Chrome), so they count apart from those
    // however late the polling's clicks are delivered.
    assert!(control.terminate().success(), "{}", control.log_text());
    for _ in 0..30 {
        let r = split
            .http
            .get(format!("{}/outage", split.proxy_url))
            .header("user-agent", CHROME_WIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 301, "the proxy keeps redirecting from memory");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spooled = spooled_batches(&split.data.join("spool"));
    assert!(
        spooled > 0,
        "batches were spooled while the control plane was down"
    );

    let _control = split.start("control").await;
    let stats = wait_stat(&split.http, &split.control_url, "outage", "humans", 30).await;
    assert_eq!(
        stats["humans"].as_u64(),
        Some(30),
        "{stats}\n{}",
        proxy.log_text()
    );
    // Every spooled batch is replayed (the polling's too, if it was spooled), and each once.
    let spool = split.data.join("spool");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while spooled_batches(&spool) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(spooled_batches(&spool), 0, "spool drained");
    let settled = wait_stat(&split.http, &split.control_url, "outage", "humans", 30).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let later = wait_stat(&split.http, &split.control_url, "outage", "humans", 30).await;
    assert_eq!(
        later["total"], settled["total"],
        "nothing replayed twice: {later}"
    );
    assert_eq!(later["humans"].as_u64(), Some(30), "counted once: {later}");
    assert!(proxy.terminate().success());
}

#[tokio::test]
async fn sigterm_on_the_proxy_loses_no_click() {
    let split = Split::new();
    let _control = split.start("control").await;
    let (status, _) = split
        .create(json!({"url": "https://sigterm.example/", "alias": "sigterm"}))
        .await;
    assert_eq!(status, 201);
    let mut proxy = split.start("proxy").await;
    for _ in 0..200 {
        let r = split
            .http
            .get(format!("{}/sigterm", split.proxy_url))
            .header("user-agent", FIREFOX_LINUX)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 301);
    }
    // Stop at once: the last batch is still in memory.
    assert!(proxy.terminate().success(), "{}", proxy.log_text());
    let _proxy = split.start("proxy").await;
    let stats = wait_total(&split.http, &split.control_url, "sigterm", 200).await;
    assert_eq!(stats["total"], 200, "{stats}");
}

/// The scheduling policy of each of `pid`'s threads named `name` (`/proc/.../stat` field 41).
fn thread_policies(pid: u32, name: &str) -> Vec<u32> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads") {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis start at field 3.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        if let Some(policy) = after.split_whitespace().nth(41 - 3) {
            policies.push(policy.parse().unwrap());
        }
    }
    policies
}

#[tokio::test]
async fn the_click_shipper_runs_in_the_idle_class_unless_turned_off() {
    // Where the server may leave the idle class again (root, as the test script runs), the
    // shipper waits in it between batches; elsewhere, and when turned off, it never enters
    // it. The taker never does.
    const SCHED_OTHER: u32 = 0;
    const SCHED_IDLE: u32 = 5;
    let permitted = shortlink_sched::idle_class_permitted();
    let on = TestServer::start().await;
    let off =
        TestServer::start_with(Options::default().env("SHORTLINK_PROXY__SHIP_IDLE_CLASS", "false"))
            .await;
    let (_, body) = on
        .create(
            ADMIN_KEY,
            json!({"url": "https://idle.example/", "alias": "idle-class"}),
        )
        .await;
    assert_eq!(body["code"], "idle-class");
    on.wait_status("idle-class", 301, Duration::from_secs(1))
        .await;
    for _ in 0..20 {
        on.client
            .get(format!("{}/idle-class", on.proxy))
            .send()
            .await
            .unwrap();
    }
    // Clicks shipped from the idle class are counted like any others.
    let stats = wait_total(&on.client, &on.control, "idle-class", 21).await;
    assert_eq!(stats["total"], 21);
    let expected = if permitted { SCHED_IDLE } else { SCHED_OTHER };
    // The shipper's thread name, as the kernel keeps it (15 bytes).
    let shipper = "BG click shippi";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = thread_policies(on.pid(), shipper);
        assert_eq!(seen.len(), 1, "one shipper thread, saw {seen:?}");
        if seen[0] == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shipper policy {} after 10 s, expected {expected}",
            seen[0]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(thread_policies(off.pid(), shipper), vec![SCHED_OTHER]);
    // The taker, which journals the clicks a crash would lose, is never in the idle class.
    let taker = "BG click taking";
    assert_eq!(thread_policies(on.pid(), taker), vec![SCHED_OTHER]);
}

/// Unique visitors through the real pipeline: a visitor is a network and a user agent,
/// bots are not visitors, and one who comes back the next day counts again there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_visitors_count_people_once_per_day() {
    let s = TestServer::start_with(
        Options::default().env("SHORTLINK_INTERNAL_SECRET", INTERNAL_SECRET),
    )
    .await;
    let (status, _) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://uv.example/", "alias": "uvisits"}),
        )
        .await;
    assert_eq!(status, 201);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let day = now - now.rem_euclid(86_400) - 86_400;
    let at = |secs: i64| secs * 1000;
    let clicks = json!([
        // One person three times, and again from another address of the same network.
        {"l": 1, "t": at(day + 600), "ip": "198.51.100.7", "ua": CHROME_WIN},
        {"l": 1, "t": at(day + 700), "ip": "198.51.100.7", "ua": CHROME_WIN},
        {"l": 1, "t": at(day + 7200), "ip": "198.51.100.7", "ua": CHROME_WIN},
        {"l": 1, "t": at(day + 7300), "ip": "198.51.100.9", "ua": CHROME_WIN},
        // Another browser on that network, another network.
        {"l": 1, "t": at(day + 800), "ip": "198.51.100.7", "ua": FIREFOX_LINUX},
        {"l": 1, "t": at(day + 900), "ip": "203.0.113.5", "ua": CHROME_WIN},
        // A bot is not a visitor.
        {"l": 1, "t": at(day + 1000), "ip": "192.0.2.1", "ua": GOOGLEBOT},
        // The first one again, the next day.
        {"l": 1, "t": at(day + 86_400 + 60), "ip": "198.51.100.7", "ua": CHROME_WIN},
    ]);
    let r = s
        .client
        .post(format!("{}/internal/v1/clicks", s.control))
        .header("x-shortlink-internal-secret", INTERNAL_SECRET)
        .json(&json!({"batch_id": "uv-1", "clicks": clicks}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let visitors = |from: i64, to: i64| {
        let s = &s;
        async move {
            let stats = s
                .get_json(
                    &format!(
                        "/api/v1/links/uvisits/stats?from={}&to={}&interval=hour",
                        ts_text(from),
                        ts_text(to)
                    ),
                    ADMIN_KEY,
                )
                .await;
            stats["unique_visitors"].as_u64().expect("unique_visitors")
        }
    };
    assert_eq!(visitors(day, day + 86_400).await, 3, "the first day");
    assert_eq!(visitors(day, day + 2 * 86_400).await, 4, "two days");
    assert_eq!(
        visitors(day + 3600, day + 3 * 3600).await,
        1,
        "02:00 to 03:00"
    );
    assert_eq!(
        visitors(day + 86_400, day + 2 * 86_400).await,
        1,
        "the next day"
    );
}
