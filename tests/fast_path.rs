//! The redirect fast path over raw sockets: requests sent pipelined, split across writes,
//! mixed with requests pingora answers or forwards, or shaped so the fast path leaves them
//! to pingora, each get the answer they get with the fast path off — in order, on one
//! connection — and every redirect is counted as a click.

mod common;

use std::time::Duration;

use common::raw::{Answer, Connection};
use common::{Options, TestServer, wait_total};
use serde_json::json;

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: fast-path-test\r\n{extra}\r\n")
}

/// What a client sees on one connection, and on a second that asks to close. Returns the
/// answers and how many of them were redirects of `code` (the clicks to expect).
async fn conversation(server: &TestServer, code: &str, other: &str) -> (Vec<Answer>, u64) {
    let mut answers = Vec::new();
    let mut c = Connection::open(server).await;
    c.send(format!("HEAD /{other} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await;
    answers.push(c.answer(true).await);
    // A request head split across two writes.
    let split = get(&format!("/{code}?utm_source=x"), "");
    c.send(&split.as_bytes()[..10]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(&split.as_bytes()[10..]).await;
    answers.push(c.answer(false).await);
    // Forwarded to the control plane, answered by pingora, then a redirect again.
    c.send(get("/healthz", "").as_bytes()).await;
    answers.push(c.answer(false).await);
    c.send(get("/nosuchcode1", "").as_bytes()).await;
    answers.push(c.answer(false).await);
    c.send(get(&format!("/{code}"), "").as_bytes()).await;
    answers.push(c.answer(false).await);
    // Shapes the fast path leaves to pingora: a very large head, a POST, a body (after
    // which pingora may close the connection: it answered without reading the body).
    let cookie = format!("Cookie: big={}\r\n", "x".repeat(10_000));
    c.send(get(&format!("/{code}"), &cookie).as_bytes()).await;
    answers.push(c.answer(false).await);
    c.send(
        format!("POST /{code} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    )
    .await;
    let post = c.answer(false).await;
    assert_ne!(post.status, 301, "a POST to a code is not redirected");
    answers.push(post);
    let mut b = Connection::open(server).await;
    b.send(format!("{}hello", get(&format!("/{code}"), "Content-Length: 5\r\n")).as_bytes())
        .await;
    answers.push(b.answer(false).await);
    // Still the same connection, still redirecting.
    c.send(get(&format!("/{code}"), "").as_bytes()).await;
    answers.push(c.answer(false).await);
    // Asking to close: the answer says so and the connection ends.
    c.send(get(&format!("/{code}"), "Connection: close\r\n").as_bytes())
        .await;
    answers.push(c.answer(false).await);
    assert!(
        c.closed().await,
        "the proxy closes after `Connection: close`"
    );
    // HTTP/1.0 (pingora answers it).
    let mut c = Connection::open(server).await;
    c.send(format!("GET /{code} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await;
    answers.push(c.answer(false).await);
    let redirects = answers
        .iter()
        .filter(|a| a.status == 301 && a.location.as_deref() == Some("https://example.com/fast/a"))
        .count() as u64;
    (answers, redirects)
}

async fn start(fast_path: bool) -> (TestServer, String, String) {
    start_with(Options::default().env("SHORTLINK_PROXY__FAST_PATH", &fast_path.to_string())).await
}

async fn start_with(options: Options) -> (TestServer, String, String) {
    let server = TestServer::start_with(options).await;
    let (status, a) = server
        .create(
            common::ADMIN_KEY,
            json!({"url": "https://example.com/fast/a"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, b) = server
        .create(
            common::ADMIN_KEY,
            json!({"url": "https://example.com/fast/b", "redirect": 302}),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    let code = |v: &serde_json::Value| v["code"].as_str().unwrap().to_owned();
    let (a, b) = (code(&a), code(&b));
    // A link not yet in the proxy's table is read through by pingora, then served from
    // the table: the answers are the same either way.
    (server, a, b)
}

#[tokio::test]
async fn raw_requests_get_the_same_answers_with_and_without_the_fast_path() {
    let (fast, a, b) = start(true).await;
    let (fast_answers, fast_redirects) = conversation(&fast, &a, &b).await;
    let statuses: Vec<u16> = fast_answers.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses[..6],
        [302, 301, 200, 404, 301, 301],
        "answers in order: {fast_answers:#?}"
    );
    assert_eq!(statuses[7..], [301, 301, 301, 301], "{fast_answers:#?}");
    assert_eq!(
        fast_answers[0].location.as_deref(),
        Some("https://example.com/fast/b")
    );
    assert_eq!(fast_answers[0].body_len, 0, "HEAD: no body");
    assert!(fast_answers[3].body_len > 0, "the 404 page has a body");
    assert!(
        fast_answers[9].close,
        "the answer to `Connection: close` says so"
    );
    assert_eq!(fast_redirects, 7);

    let (plain, a_plain, b_plain) = start(false).await;
    let (plain_answers, plain_redirects) = conversation(&plain, &a_plain, &b_plain).await;
    assert_eq!(
        fast_answers, plain_answers,
        "the fast path answers as pingora does"
    );
    assert_eq!(plain_redirects, fast_redirects);

    // Pipelined requests (both links now in the table): answered in order on the fast
    // path, and the connection stays open. (pingora alone closes a connection once it sees
    // a pipelined request.)
    let mut c = Connection::open(&fast).await;
    let pipelined = format!(
        "{}HEAD /{b} HTTP/1.1\r\nHost: localhost\r\n\r\n{}",
        get(&format!("/{a}"), ""),
        get(&format!("/{a}?qr"), "")
    );
    c.send(pipelined.as_bytes()).await;
    let answers = [
        c.answer(false).await,
        c.answer(true).await,
        c.answer(false).await,
    ];
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [301, 302, 301], "{answers:#?}");
    c.send(get(&format!("/{a}"), "").as_bytes()).await;
    assert_eq!(c.answer(false).await.status, 301);

    // Clicks: every redirect of `a` (fast path and pingora alike), the HEADs of `b` as bots,
    // the `?qr` one as a scan.
    let stats = wait_total(&fast.client, &fast.proxy, &a, fast_redirects + 3).await;
    assert_eq!(stats["total"], fast_redirects + 3, "{stats}");
    assert_eq!(common::count_of(&stats["referrers"], "qr"), 1, "{stats}");
    let stats = wait_total(&fast.client, &fast.proxy, &b, 2).await;
    assert_eq!(stats["total"], 2, "{stats}");
    assert_eq!(stats["bots"], 2, "a HEAD counts as a bot: {stats}");
}

/// Concurrent keep-alive connections in [`many_connections`].
const CONNECTIONS: usize = 32;
/// Redirects each of them asks for, one after another.
const REQUESTS: usize = 4;

/// `CONNECTIONS` concurrent keep-alive connections, each sending `REQUESTS` requests for
/// `code` (link `a` of [`start_with`]); returns how many got `a`'s redirect.
async fn many_connections(server: &TestServer, code: &str) -> u64 {
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| async {
            let mut c = Connection::open(server).await;
            let mut redirected = 0;
            for _ in 0..REQUESTS {
                c.send(get(&format!("/{code}"), "").as_bytes()).await;
                let answer = c.answer(false).await;
                if answer.status == 301
                    && answer.location.as_deref() == Some("https://example.com/fast/a")
                {
                    redirected += 1;
                }
            }
            redirected
        })
        .collect();
    futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .sum()
}

#[tokio::test]
async fn connections_are_answered_on_per_thread_runtimes_and_with_work_stealing() {
    // The default: one runtime per proxy thread, each connection moved to one of them
    // (all `CONNECTIONS` = 32 land on one thread with probability 2^-31 only).
    let two_threads = || Options::default().env("SHORTLINK_PROXY__THREADS", "2");
    let (per_thread, a, b) = start_with(two_threads()).await;
    let (stealing, a_stealing, b_stealing) =
        start_with(two_threads().env("SHORTLINK_PROXY__WORK_STEALING", "true")).await;

    let (per_thread_answers, per_thread_redirects) = conversation(&per_thread, &a, &b).await;
    let (stealing_answers, _) = conversation(&stealing, &a_stealing, &b_stealing).await;
    assert_eq!(
        per_thread_answers, stealing_answers,
        "both runtimes give the same answers"
    );
    let all = (CONNECTIONS * REQUESTS) as u64;
    assert_eq!(many_connections(&per_thread, &a).await, all);
    assert_eq!(many_connections(&stealing, &a_stealing).await, all);

    // Every redirect on every thread is a click.
    let want = per_thread_redirects + all;
    let stats = wait_total(&per_thread.client, &per_thread.proxy, &a, want).await;
    assert_eq!(stats["total"], want, "{stats}");
}

/// RFC 9112 §3.2: a request with no `Host` (HTTP/1.1), two, or one no host can have is
/// answered 400 and the connection closed, by the fast path and by pingora alike.
#[tokio::test]
async fn host_forms_are_judged_alike_with_and_without_the_fast_path() {
    let cases: &[(&str, &str, u16)] = &[
        ("a name", "Host: localhost\r\n", 301),
        ("any case, a port", "Host: LOCALHOST:8080\r\n", 301),
        ("an IPv4 address", "Host: 127.0.0.1\r\n", 301),
        ("an IPv6 literal", "Host: [::1]:80\r\n", 301),
        ("no Host", "", 400),
        ("an empty Host", "Host: \r\n", 400),
        ("user info", "Host: evil@127.0.0.1\r\n", 400),
        ("a space", "Host: a b\r\n", 400),
        ("a port out of range", "Host: x:99999999\r\n", 400),
        ("an empty port", "Host: x:\r\n", 400),
        ("an open bracket", "Host: [::1\r\n", 400),
        ("two Hosts", "Host: localhost\r\nHost: localhost\r\n", 400),
    ];
    for fast_path in [true, false] {
        let (server, code, _) = start(fast_path).await;
        for (what, host, want) in cases {
            let mut c = Connection::open(&server).await;
            c.send(format!("GET /{code} HTTP/1.1\r\n{host}User-Agent: t\r\n\r\n").as_bytes())
                .await;
            let answer = c.answer(false).await;
            assert_eq!(answer.status, *want, "{what}, fast path {fast_path}");
            if *want == 400 {
                assert!(answer.close, "{what}: the 400 says Connection: close");
                assert!(c.closed().await, "{what}: the connection ends");
            }
        }
        // HTTP/1.0 may omit Host.
        let mut c = Connection::open(&server).await;
        c.send(format!("GET /{code} HTTP/1.0\r\n\r\n").as_bytes())
            .await;
        assert_eq!(c.answer(false).await.status, 301, "HTTP/1.0 without Host");
    }
}
