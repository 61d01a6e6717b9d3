//! The edge against slow, hostile and pipelining clients, on the real binary over raw
//! sockets: head deadlines on both ports, the minimum body rate, write deadlines, capped
//! and complete pipelines, oversized heads.

mod common;

use std::time::{Duration, Instant};

use common::raw::Connection;
use common::{ADMIN_KEY, Options, TestServer};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// A server whose deadlines are short enough to cross in a test.
async fn start(fast_path: bool) -> (TestServer, String) {
    TestServer::start_with_link(
        Options::default()
            .env("SHORTLINK_PROXY__FAST_PATH", &fast_path.to_string())
            .env("SHORTLINK_PROXY__REQUEST_HEAD_TIMEOUT_MS", "1000")
            .env("SHORTLINK_PROXY__WRITE_TIMEOUT_MS", "1000")
            .env("SHORTLINK_CONTROL__REQUEST_HEAD_TIMEOUT_MS", "1000")
            .env("SHORTLINK_CONTROL__BODY_GRACE_SECONDS", "1")
            .env("SHORTLINK_CONTROL__MIN_BODY_BYTES_PER_SECOND", "1024"),
        "https://edge.example/a",
    )
    .await
}

/// Sends `bytes` one at a time, 200 ms apart, until the server ends the connection or
/// `for_at_most` passes; returns how long the server kept it open.
async fn trickle(c: &mut Connection, bytes: &[u8], for_at_most: Duration) -> Duration {
    let every = Duration::from_millis(200);
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < for_at_most {
        let byte = [bytes[sent % bytes.len()]];
        if c.stream().write_all(&byte).await.is_err() {
            return started.elapsed();
        }
        sent += 1;
        // The pacing is the attack itself: a byte, then a wait for the server to end it.
        if c.ends_within(every).await {
            return started.elapsed();
        }
    }
    started.elapsed()
}

#[tokio::test]
async fn a_request_head_trickling_in_is_cut_off_on_both_ports() {
    let (server, _) = start(true).await;
    for base in [server.proxy.clone(), server.control.clone()] {
        let mut c = Connection::open_at(&base).await;
        c.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await;
        // A byte every 200 ms never completes the head; the 1 s deadline is not renewed.
        let open = trickle(&mut c, b"abc", Duration::from_secs(6)).await;
        assert!(
            (Duration::from_millis(800)..Duration::from_secs(4)).contains(&open),
            "{base}: a trickled head was kept open for {open:?}, not about the 1 s deadline"
        );
        // A connection that sends nothing at all is ended too.
        let mut idle = Connection::open_at(&base).await;
        assert!(
            idle.ends_within(Duration::from_secs(4)).await,
            "{base}: a silent connection is closed"
        );
    }
    // The proxy still answers.
    assert_eq!(server.follow("healthz").await.status(), 200);
}

#[tokio::test]
async fn an_upload_trickling_in_is_cut_off_through_the_proxy_and_directly() {
    let (server, _) = start(true).await;
    for base in [server.proxy.clone(), server.control.clone()] {
        let mut c = Connection::open_at(&base).await;
        c.send(
            format!(
                "POST /api/v1/links HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: 900000000\r\n\r\n{{\"url\": \""
            )
            .as_bytes(),
        )
        .await;
        // 5 bytes a second against a floor of 1 024 after a 1 s grace.
        let open = trickle(&mut c, b"x", Duration::from_secs(8)).await;
        assert!(
            (Duration::from_millis(800)..Duration::from_secs(5)).contains(&open),
            "{base}: a trickled body was kept open for {open:?}, not about the 1 s grace"
        );
    }
    let (status, _) = server
        .create(ADMIN_KEY, json!({"url": "https://edge.example/after"}))
        .await;
    assert_eq!(status, 201, "the API still answers");
}

#[tokio::test]
async fn a_client_that_pipelines_and_never_reads_is_cut_off() {
    let (server, code) = start(true).await;
    let mut c = Connection::open(&server).await;
    let one = format!("GET /{code} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    // About 16 MB of requests asking for about 60 MB of answers, none of them read.
    let pipeline = one.repeat(16_000_000 / one.len());
    let writer = tokio::spawn(async move {
        let _ = c.stream().write_all(pipeline.as_bytes()).await;
        c
    });
    // The proxy stops reading while its answers wait, then gives up after its 1 s write
    // deadline: the writer's blocked write then fails (or completes) well before 20 s.
    let mut c = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("the proxy cut the non-reading client off")
        .unwrap();
    assert!(
        c.ends_within(Duration::from_secs(10)).await,
        "the connection ends"
    );
    assert_eq!(
        server.follow(&code).await.status(),
        301,
        "others are served"
    );
}

#[tokio::test]
async fn pipelined_requests_behind_one_pingora_answers_are_answered_in_order() {
    for fast_path in [true, false] {
        let (server, code) = start(fast_path).await;
        let mut c = Connection::open(&server).await;
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let body = r#"{"url": "https://edge.example/piped"}"#;
        let post = format!(
            "POST /api/v1/links HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let pipeline = [
            get(&format!("/{code}")),
            get("/nosuchcode7"),
            get(&format!("/{code}")),
            get("/healthz"),
            post,
            format!("HEAD /{code} HTTP/1.0\r\n\r\n"),
        ]
        .concat();
        c.send(pipeline.as_bytes()).await;
        let statuses = [
            c.answer(false).await,
            c.answer(false).await,
            c.answer(false).await,
            c.answer(false).await,
            c.answer(false).await,
        ]
        .map(|a| (a.status, a.close));
        assert_eq!(
            statuses,
            [
                (301, false),
                (404, false),
                (301, false),
                (200, false),
                (201, false)
            ],
            "fast path {fast_path}"
        );
        // HTTP/1.0 without keep-alive: the last answer, then the end.
        let last = c.answer(true).await;
        assert_eq!(last.status, 301, "fast path {fast_path}");
        assert!(c.closed().await, "fast path {fast_path}");
    }
}

#[tokio::test]
async fn a_close_with_input_still_unread_delivers_the_answer_and_a_huge_head_gets_431() {
    let (server, code) = start(true).await;
    // `Connection: close`, then 256 KiB the proxy will never read: the answer must arrive
    // whole (a close with unread input would otherwise reset it).
    let mut c = Connection::open(&server).await;
    let mut request =
        format!("GET /{code} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .into_bytes();
    request.extend(std::iter::repeat_n(b'z', 256 * 1024));
    let _ = c.stream().write_all(&request).await;
    let answer = c.answer(false).await;
    assert_eq!((answer.status, answer.close), (301, true));

    let mut c = Connection::open(&server).await;
    let huge = format!(
        "GET /{code} HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n",
        "b".repeat(70 * 1024)
    );
    let _ = c.stream().write_all(huge.as_bytes()).await;
    let answer = c.answer(false).await;
    assert_eq!((answer.status, answer.close), (431, true));
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_control_plane_that_stops_answering_is_given_up_on() {
    // An upstream that accepts connections and never answers (its TCP health check passes).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let server = TestServer::start_with(
        Options::default()
            .env(
                "SHORTLINK_PROXY__CONTROL_UPSTREAMS",
                &format!("[\"{addr}\"]"),
            )
            .env("SHORTLINK_PROXY__UPSTREAM_TIMEOUT_SECONDS", "1"),
    )
    .await;
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        server
            .client
            .get(format!("{}/api/v1/links", server.proxy))
            .send(),
    )
    .await
    .expect("the proxy answers without waiting for ever")
    .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    holder.abort();
}

#[tokio::test]
async fn links_that_would_loop_back_are_refused() {
    let server = TestServer::start_with(Options::default().env(
        "SHORTLINK_CONTROL__LOOP_ALLOWED_HOSTS",
        "[\"dev.localhost\"]",
    ))
    .await;
    let proxy_port = server.proxy.rsplit(':').next().unwrap().to_owned();
    for url in [
        format!("http://localhost:{proxy_port}/x"),
        format!("http://LOCALHOST.:{proxy_port}/x"),
        format!("http://[::ffff:127.0.0.1]:{proxy_port}/x"),
        format!("http://[::1]:{proxy_port}/x"),
        // 127.0.0.2 (the public URL here is 127.0.0.1, refused as `url_host_blocked`).
        "http://2130706434/x".to_owned(),
        "http://0.0.0.0/x".to_owned(),
        "http://app.localhost/x".to_owned(),
    ] {
        let (status, body) = server.create(ADMIN_KEY, json!({"url": url})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("url_loops")),
            "{url}: {body}"
        );
    }
    // A host an admin allows.
    let (status, body) = server
        .create(ADMIN_KEY, json!({"url": "http://dev.localhost/x"}))
        .await;
    assert_eq!(status, 201, "{body}");

    // A registered custom domain: links to it are refused, in targeting rules too.
    let register = |name: &str| {
        server
            .api(reqwest::Method::POST, "/api/v1/domains", ADMIN_KEY)
            .json(&json!({"name": name}))
            .send()
    };
    assert_eq!(register("go.example").await.unwrap().status(), 201);
    let (status, body) = server
        .create(ADMIN_KEY, json!({"url": "https://GO.example/abc"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("url_loops")),
        "{body}"
    );
    let (status, body) = server
        .create(
            ADMIN_KEY,
            json!({"url": "https://fine.example/", "targeting": {"ios": "https://go.example/app"}}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("url_loops")),
        "{body}"
    );

    // A domain links already point at cannot be registered: they would loop.
    let (status, body) = server
        .create(
            ADMIN_KEY,
            json!({"url": "https://later.example/page", "alias": "tolater"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let r = register("later.example").await.unwrap();
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "domain_targeted", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/tolater"),
        "{body}"
    );
    // Another link's text mentioning the name is not a link to it.
    let (status, _) = server
        .create(
            ADMIN_KEY,
            json!({"url": "https://elsewhere.example/?q=spare.example"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(register("spare.example").await.unwrap().status(), 201);
}

/// At the open-file limit the listener sheds the oldest connections waiting for a request
/// instead of starving new clients behind them.
#[tokio::test]
async fn redirects_are_answered_with_more_slow_connections_than_file_descriptors() {
    // This test process holds 1 100 sockets of its own.
    let limit = rlimit::increase_nofile_limit(4096).unwrap();
    assert!(
        limit >= 1300,
        "the test needs 1 300 open files; the hard limit allows {limit}"
    );
    let server = TestServer::start_with(Options {
        fd_limit: Some(1024),
        ..Options::default()
    })
    .await;
    let (status, link) = server
        .create(ADMIN_KEY, json!({"url": "https://edge.example/crowded"}))
        .await;
    assert_eq!(status, 201, "{link}");
    let code = link["code"].as_str().unwrap().to_owned();
    // 1 100 connections, each sending the start of a head and then nothing (the 60 s head
    // deadline is far off): more than the proxy has descriptors for.
    let addr = server.proxy.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..1100 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Redirects keep being answered: each new client gets its 301 within a few seconds.
    for attempt in 0..5 {
        let answered = tokio::time::timeout(Duration::from_secs(10), async {
            let mut c = Connection::open(&server).await;
            c.send(format!("GET /{code} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
                .await;
            c.answer(false).await.status
        })
        .await;
        assert_eq!(answered, Ok(301), "attempt {attempt}");
    }
    assert!(
        server.log_text().contains("shedding waiting connections"),
        "the proxy shed connections at its limit"
    );
    drop(slow);
}
