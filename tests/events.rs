//! Notifications end to end over real sockets: SSE, WebSocket and polling, through the
//! proxy as users reach them.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_KEY, Options, Plane, Split, TestServer, free_port, status_and_code};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// How long a test waits for an event the issue says arrives within a second.
const WITHIN: Duration = Duration::from_secs(1);

/// A Server-Sent Events client reading one response.
struct Sse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

/// One SSE message: its `id:` and `data:` (comments and `retry:` are skipped).
#[derive(Debug, Clone)]
struct SseMessage {
    id: Option<i64>,
    data: Value,
}

impl Sse {
    async fn open(base: &str, key: &str, last_event_id: Option<i64>) -> Sse {
        let r = Sse::request(base, Some(key), last_event_id).await;
        assert_eq!(r.status(), 200, "SSE opens");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Sse {
            body: Box::pin(r.bytes_stream()),
            buffer: String::new(),
        }
    }

    async fn request(base: &str, key: Option<&str>, last: Option<i64>) -> reqwest::Response {
        let client = reqwest::Client::new();
        let mut request = client.get(format!("{base}/api/v1/events"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(id) = last {
            request = request.header("Last-Event-ID", id.to_string());
        }
        request.send().await.expect("SSE request")
    }

    /// The next message with data, or `None` if none comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<SseMessage> {
        let deadline = Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = Some(serde_json::from_str(v.trim()).unwrap());
                    }
                }
                if let Some(data) = data {
                    return Some(SseMessage { id, data });
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
                Ok(_) => return None,
                Err(_) => return None,
            }
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(s: &TestServer) -> String {
    format!("{}/api/v1/ws", s.proxy.replacen("http://", "ws://", 1))
}

async fn ws_open(s: &TestServer, key: &str) -> Ws {
    let mut request = ws_url(s).into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket opens");
    assert_eq!(response.status(), 101);
    ws
}

/// The next text message as JSON, or the close frame's code as `{"closed": code}`.
async fn ws_next(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await.ok()?? {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Message::Close(frame)) => {
                return Some(json!({
                    "closed": frame.as_ref().map(|f| u16::from(f.code)),
                    "reason": frame.map(|f| f.reason.to_string()),
                }));
            }
            Ok(_) => continue,
            Err(e) => return Some(json!({"error": e.to_string()})),
        }
    }
}

async fn poll(s: &TestServer, key: &str, query: &str) -> (u16, Value) {
    let r = s
        .api(Method::GET, &format!("/api/v1/notifications?{query}"), key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Starts a poll that waits up to 10 s for events after `after`; yields the body and when
/// it was answered.
fn long_poll(s: &TestServer, after: i64) -> tokio::task::JoinHandle<(Value, Instant)> {
    let proxy = s.proxy.clone();
    tokio::spawn(async move {
        let body: Value = reqwest::Client::new()
            .get(format!(
                "{proxy}/api/v1/notifications?after={after}&wait=10"
            ))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (body, Instant::now())
    })
}

async fn create(s: &TestServer, key: &str, alias: &str) -> Instant {
    let started = Instant::now();
    let (status, _) = s
        .create(
            key,
            json!({"url": format!("https://{alias}.example/"), "alias": alias}),
        )
        .await;
    assert_eq!(status, 201, "create {alias}");
    started
}

#[tokio::test]
async fn each_transport_receives_link_created_within_a_second() {
    let s = TestServer::start().await;
    let mut sse = Sse::open(&s.proxy, ADMIN_KEY, None).await;
    let mut ws = ws_open(&s, ADMIN_KEY).await;
    let (_, start) = poll(&s, ADMIN_KEY, "").await;
    let cursor = start["next"].as_i64().expect("poll gives a cursor");

    let started = create(&s, ADMIN_KEY, "fresh1").await;
    let got = sse.next(WITHIN).await.expect("SSE event within 1 s");
    println!("SSE latency {:?}", started.elapsed());
    assert_eq!(got.data["type"], "link.created");
    assert_eq!(got.data["data"]["code"], "fresh1");
    assert_eq!(
        got.id,
        got.data["id"].as_i64(),
        "the SSE id is the event id"
    );

    let got = ws_next(&mut ws, WITHIN)
        .await
        .expect("WebSocket event within 1 s");
    assert_eq!(got["type"], "link.created");
    assert_eq!(got["data"]["code"], "fresh1");

    // A waiting poll returns as soon as the next event exists.
    let waiting = long_poll(&s, cursor);
    let started = Instant::now();
    let (body, answered) = waiting.await.unwrap();
    let waited = answered.duration_since(started);
    assert!(waited < WITHIN, "the event was already there: {waited:?}");
    assert_eq!(body["items"][0]["type"], "link.created");
    assert_eq!(body["items"][0]["data"]["code"], "fresh1");
    let next = body["next"].as_i64().unwrap();

    let (_, empty) = poll(&s, ADMIN_KEY, &format!("after={next}")).await;
    assert_eq!(empty["items"], json!([]));
    assert_eq!(empty["next"], next, "an empty page keeps the cursor");
    let waiting = long_poll(&s, next);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = create(&s, ADMIN_KEY, "fresh2").await;
    let (body, answered) = waiting.await.unwrap();
    assert!(
        answered.duration_since(started) < WITHIN,
        "a waiting poll answers within 1 s of the event"
    );
    assert_eq!(body["items"][0]["data"]["code"], "fresh2");
}

#[tokio::test]
async fn reconnecting_with_the_last_id_gets_exactly_what_was_missed() {
    let s = TestServer::start().await;
    let key = s.new_user("resumer").await;
    let mut sse = Sse::open(&s.proxy, &key, None).await;
    create(&s, &key, "seen1").await;
    let seen = sse.next(WITHIN).await.expect("first event");
    let last = seen.id.unwrap();
    drop(sse);

    // Missed while away: three creations, an update and a delete.
    for alias in ["miss1", "miss2", "miss3"] {
        create(&s, &key, alias).await;
    }
    let r = s
        .api(Method::PATCH, "/api/v1/links/miss1", &key)
        .json(&json!({"url": "https://changed.example/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .api(Method::DELETE, "/api/v1/links/miss2", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let expected = [
        ("link.created", "miss1"),
        ("link.created", "miss2"),
        ("link.created", "miss3"),
        ("link.updated", "miss1"),
        ("link.deleted", "miss2"),
    ];

    // SSE with Last-Event-ID.
    let mut sse = Sse::open(&s.proxy, &key, Some(last)).await;
    let mut ids = Vec::new();
    for (kind, code) in expected {
        let m = sse.next(WITHIN).await.expect("a missed event");
        assert_eq!(
            (m.data["type"].as_str(), m.data["data"]["code"].as_str()),
            (Some(kind), Some(code))
        );
        ids.push(m.id.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
    assert!(
        sse.next(Duration::from_millis(300)).await.is_none(),
        "no duplicates, nothing more"
    );

    // WebSocket with {"resume_after"}.
    let mut ws = ws_open(&s, &key).await;
    ws.send(Message::Text(
        json!({"resume_after": last}).to_string().into(),
    ))
    .await
    .unwrap();
    for (i, (kind, code)) in expected.iter().enumerate() {
        let m = ws_next(&mut ws, WITHIN).await.expect("a missed event");
        assert_eq!(
            (m["type"].as_str(), m["data"]["code"].as_str()),
            (Some(*kind), Some(*code))
        );
        assert_eq!(m["id"].as_i64(), Some(ids[i]));
    }
    assert!(
        ws_next(&mut ws, Duration::from_millis(300)).await.is_none(),
        "no duplicates"
    );
    ws.send(Message::Text("not json".into())).await.unwrap();
    let reply = ws_next(&mut ws, WITHIN).await.unwrap();
    assert_eq!(reply["error"]["code"], "invalid_message");

    // Polling from the same cursor, in pages of two.
    let mut after = last;
    let mut polled = Vec::new();
    loop {
        let (status, page) = poll(&s, &key, &format!("after={after}&limit=2")).await;
        assert_eq!(status, 200);
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        assert!(items.len() <= 2);
        polled.extend(items.iter().map(|i| i["id"].as_i64().unwrap()));
        after = page["next"].as_i64().unwrap();
    }
    assert_eq!(polled, ids, "polling sees the same events");
}

#[tokio::test]
async fn users_only_ever_see_their_own_events() {
    let s = TestServer::start().await;
    let alice = s.new_user("alice").await;
    let bob = s.new_user("bob").await;
    let mut sse = Sse::open(&s.proxy, &bob, Some(0)).await;
    let mut ws = ws_open(&s, &bob).await;
    ws.send(Message::Text(json!({"resume_after": 0}).to_string().into()))
        .await
        .unwrap();
    create(&s, &alice, "alices1").await;
    create(&s, &alice, "alices2").await;
    create(&s, &bob, "bobs1").await;
    let m = sse.next(WITHIN).await.expect("bob's event");
    assert_eq!(
        m.data["data"]["code"], "bobs1",
        "bob's first event is his own"
    );
    assert!(sse.next(Duration::from_millis(300)).await.is_none());
    let m = ws_next(&mut ws, WITHIN).await.expect("bob's event");
    assert_eq!(m["data"]["code"], "bobs1");
    assert!(ws_next(&mut ws, Duration::from_millis(300)).await.is_none());
    let (_, page) = poll(&s, &bob, "after=0").await;
    let codes: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["data"]["code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes, ["bobs1"]);
    // Alice's own poll sees hers only.
    let (_, page) = poll(&s, &alice, "after=0").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn rapid_clicks_arrive_coalesced_and_sum_up() {
    let s = TestServer::start().await;
    create(&s, ADMIN_KEY, "viral").await;
    s.wait_status("viral", 301, Duration::from_secs(2)).await;
    // wait_status clicked once at least; start counting from a fresh stream after that
    // click has been delivered.
    let mut sse = Sse::open(&s.proxy, ADMIN_KEY, Some(0)).await;
    let mut before = 0;
    while let Some(m) = sse.next(Duration::from_millis(800)).await {
        if m.data["type"] == "link.clicked" {
            before += m.data["data"]["count"].as_u64().unwrap();
        }
    }
    assert!(before >= 1, "the wait_status click shows up");
    for _ in 0..100 {
        assert_eq!(s.follow("viral").await.status(), 301);
    }
    let mut sum = 0;
    let mut events = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sum < 100 && Instant::now() < deadline {
        if let Some(m) = sse.next(Duration::from_secs(1)).await
            && m.data["type"] == "link.clicked"
        {
            assert_eq!(m.data["data"]["code"], "viral");
            sum += m.data["data"]["count"].as_u64().unwrap();
            events += 1;
        }
    }
    assert_eq!(sum, 100, "the counts sum to the clicks");
    assert!(events < 100, "coalesced: {events} events for 100 clicks");
    println!("100 clicks → {events} link.clicked events");
}

#[tokio::test]
async fn bad_keys_are_refused_on_every_transport() {
    let s = TestServer::start().await;
    // SSE: no key, a wrong key, a wrong query token.
    let (status, code) = status_and_code(Sse::request(&s.proxy, None, None).await).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    let (status, _) = status_and_code(Sse::request(&s.proxy, Some("sl_wrong"), None).await).await;
    assert_eq!(status, 401);
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/events?access_token=sl_wrong", s.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Polling.
    let (status, body) = poll(&s, "sl_wrong", "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    // WebSocket: the handshake completes, then a 4401 close with a reason.
    let mut ws = ws_open(&s, "sl_wrong").await;
    let closed = ws_next(&mut ws, WITHIN).await.unwrap();
    assert_eq!(closed["closed"], 4401, "{closed}");
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&s)).await.unwrap();
    let closed = ws_next(&mut ws, WITHIN).await.unwrap();
    assert_eq!(closed["closed"], 4401, "no key at all: {closed}");
    // Good keys in the places browsers can use: the query and a subprotocol.
    let url = format!("{}?access_token={ADMIN_KEY}", ws_url(&s));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    create(&s, ADMIN_KEY, "viaquery").await;
    let message = ws_next(&mut ws, WITHIN).await.unwrap();
    assert_eq!(message["data"]["code"], "viaquery", "{message}");
    let mut request = ws_url(&s).into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("shortlink.v1, bearer.{ADMIN_KEY}")).unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "shortlink.v1");
    create(&s, ADMIN_KEY, "viaproto").await;
    let message = ws_next(&mut ws, WITHIN).await.unwrap();
    assert_eq!(message["data"]["code"], "viaproto", "{message}");
    let mut sse = {
        let r = reqwest::Client::new()
            .get(format!(
                "{}/api/v1/events?access_token={ADMIN_KEY}",
                s.proxy
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "SSE accepts the key as a query parameter");
        Sse {
            body: Box::pin(r.bytes_stream()),
            buffer: String::new(),
        }
    };
    create(&s, ADMIN_KEY, "viasse").await;
    assert_eq!(
        sse.next(WITHIN).await.unwrap().data["data"]["code"],
        "viasse"
    );
}

#[tokio::test]
async fn limits_give_clear_errors() {
    let s = TestServer::start_with(
        Options::default()
            .env("SHORTLINK_CONTROL__MAX_SUBSCRIBERS_PER_USER", "2")
            .env("SHORTLINK_CONTROL__WS_MAX_MESSAGE_BYTES", "256"),
    )
    .await;
    let key = s.new_user("greedy").await;
    let _one = Sse::open(&s.proxy, &key, None).await;
    let mut two = ws_open(&s, &key).await;
    let (status, code) = status_and_code(Sse::request(&s.proxy, Some(&key), None).await).await;
    assert_eq!((status, code.as_str()), (429, "too_many_subscribers"));
    let mut three = ws_open(&s, &key).await;
    let closed = ws_next(&mut three, WITHIN).await.unwrap();
    assert_eq!(closed["closed"], 4429, "{closed}");
    // Another user is not affected.
    let _other = Sse::open(&s.proxy, ADMIN_KEY, None).await;
    // A message over the size limit closes the socket with 1009.
    two.send(Message::Text("x".repeat(1000).into()))
        .await
        .unwrap();
    let closed = ws_next(&mut two, WITHIN).await.unwrap();
    assert_eq!(closed["closed"], 1009, "{closed}");
    // With that socket gone, the user has room again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _again = Sse::open(&s.proxy, &key, None).await;
    // Bad cursors and limits.
    for query in ["after=-1", "after=x", "limit=0", "limit=1001", "wait=31"] {
        let (status, body) = poll(&s, &key, query).await;
        assert_eq!(status, 422, "{query}: {body}");
    }
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/events", s.proxy))
        .bearer_auth(&key)
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    let (status, code) = status_and_code(r).await;
    assert_eq!((status, code.as_str()), (422, "invalid_cursor"));
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_open_streams() {
    let mut s = TestServer::start().await;
    let _sse = Sse::open(&s.proxy, ADMIN_KEY, None).await;
    let _ws = ws_open(&s, ADMIN_KEY).await;
    let started = Instant::now();
    let status = s.terminate();
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGTERM with open streams exits promptly: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_second_control_plane_on_the_same_store_delivers_events_written_by_the_first() {
    let split = Split::new();
    let _first = split.start("control").await;
    let second_port = free_port();
    let mut second = Plane::start("control", &split.data, free_port(), second_port);
    let second_url = format!("http://127.0.0.1:{second_port}");
    second
        .wait_ok(&split.http, &format!("{second_url}/readyz"))
        .await;
    let mut sse = Sse::open(&second_url, ADMIN_KEY, None).await;
    let started = Instant::now();
    let (status, _) = split
        .create(json!({"url": "https://shared.example/", "alias": "shared1"}))
        .await;
    assert_eq!(status, 201);
    // The second instance learns of it by polling the store's feed (500 ms by default).
    let m = sse
        .next(Duration::from_secs(2))
        .await
        .expect("the other instance delivers it");
    assert_eq!(m.data["type"], "link.created");
    assert_eq!(m.data["data"]["code"], "shared1");
    println!("cross-instance delivery {:?}", started.elapsed());
}

#[tokio::test]
async fn idle_streams_get_heartbeats_and_a_retry_hint() {
    let s = TestServer::start_with(
        Options::default().env("SHORTLINK_CONTROL__EVENTS_HEARTBEAT_SECONDS", "1"),
    )
    .await;
    let r = Sse::request(&s.proxy, Some(ADMIN_KEY), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let mut body = Box::pin(r.bytes_stream());
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !text.contains(": heartbeat") && Instant::now() < deadline {
        if let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_secs(1), body.next()).await
        {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
    assert!(
        text.starts_with("retry:2000") || text.starts_with("retry: 2000"),
        "{text:?}"
    );
    assert!(
        text.contains(": heartbeat"),
        "a heartbeat comment within 5 s: {text:?}"
    );
    // WebSocket: the server pings.
    let mut ws = ws_open(&s, ADMIN_KEY).await;
    let pinged = tokio::time::timeout(Duration::from_secs(5), async {
        let mut seen = Vec::new();
        while let Some(m) = ws.next().await {
            match m {
                Ok(m) if m.is_ping() => return Ok(()),
                other => seen.push(format!("{other:?}")),
            }
        }
        Err(seen)
    })
    .await;
    assert_eq!(
        pinged,
        Ok(Ok(())),
        "the server pings an idle WebSocket (the stream ended after other messages instead)"
    );
}

#[tokio::test]
async fn a_websocket_closed_by_the_client_gets_the_closing_handshake() {
    let s = TestServer::start().await;
    for base in [s.proxy.clone(), s.control.clone()] {
        let url = format!("{}/api/v1/ws", base.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {ADMIN_KEY}")).unwrap(),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        ws.close(None).await.unwrap();
        // The server's close frame comes back, then the stream ends cleanly (a dropped
        // connection would show as an error: 1006 in a browser).
        let reply = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.to_string()),
                }
            }
        })
        .await
        .expect("the server answers the close");
        assert_eq!(reply, Ok(()), "via {base}");
    }
}

/// The proxy keeps every upgraded tunnel, however quickly the control plane answers the
/// upgrade (cloudflare/pingora#946, patched in `vendor/pingora-proxy`: a `101` read before
/// the request's empty body was forwarded used to end the tunnel at once, about one
/// connection in four).
#[tokio::test]
async fn websockets_through_the_proxy_survive_a_fast_upgrade() {
    let s = std::sync::Arc::new(TestServer::start().await);
    // Eight clients at once, each opening one WebSocket after another: the race needs the
    // proxy's two halves scheduled apart, which a busy box does.
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let s = s.clone();
            tokio::spawn(async move {
                for attempt in 0..40 {
                    let mut ws = ws_open(&s, ADMIN_KEY).await;
                    let what = format!("client {client}, attempt {attempt}");
                    ws.send(Message::Ping(b"are you there".to_vec().into()))
                        .await
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    let pong = tokio::time::timeout(Duration::from_secs(5), async {
                        loop {
                            match ws.next().await {
                                Some(Ok(Message::Pong(data))) => return Ok(data.to_vec()),
                                Some(Ok(_)) => continue,
                                Some(Err(e)) => return Err(e.to_string()),
                                None => return Err("the tunnel ended".to_owned()),
                            }
                        }
                    })
                    .await
                    .unwrap_or_else(|_| panic!("{what}: no pong"));
                    assert_eq!(pong, Ok(b"are you there".to_vec()), "{what}");
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
}
