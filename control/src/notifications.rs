//! Notifications over three transports, all authenticated and owner-scoped:
//! Server-Sent Events (`GET /api/v1/events`), WebSocket (`GET /api/v1/ws`) and polling
//! (`GET /api/v1/notifications`). Each sends events as `{"id","type","at","data"}`.
//!
//! Browsers cannot set headers on `EventSource` or `WebSocket`, so the key may also come
//! as `?access_token=` (both) or as a `bearer.<key>` WebSocket subprotocol.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use shortlink_core::EventId;
use tracing::warn;

use crate::auth::{Caller, RECHECK_EVERY, caller_of, still_valid};
use crate::error::{ApiError, ErrorCode};
use crate::extract::ApiQuery;
use crate::hub::{Delivery, EventStream, SubscribeError};
use crate::openapi::api_errors;
use crate::state::AppState;

/// The WebSocket subprotocol the server speaks; clients may offer it beside their key.
pub const WS_PROTOCOL: &str = "shortlink.v1";
/// Prefix of the subprotocol that carries an API key: `bearer.<key>`.
pub const WS_BEARER_PREFIX: &str = "bearer.";

/// WebSocket close code: the key is missing or not valid.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// How long either side's closing handshake may take.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// WebSocket close code: a subscriber limit is reached.
pub const CLOSE_TOO_MANY: u16 = 4429;
/// WebSocket close code: the request was malformed (e.g. a bad cursor).
pub const CLOSE_BAD_REQUEST: u16 = 4400;

/// Most events one poll returns.
const MAX_POLL_LIMIT: usize = 1_000;
/// Events one poll returns when `limit` is not given.
const DEFAULT_POLL_LIMIT: usize = 100;

/// Query of the streaming endpoints.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The API key, for clients that cannot send headers.
    access_token: Option<String>,
    /// Resume after this event id (as the `Last-Event-ID` header does).
    #[param(pattern = "^[0-9]{1,18}$")]
    last_event_id: Option<String>,
}

/// Query of the polling endpoint.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PollQuery {
    /// The API key, for clients that cannot send headers.
    access_token: Option<String>,
    /// Events after this id; default 0 (everything retained).
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<EventId>,
    /// Most events returned; default 100, at most 1 000.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Seconds to wait for an event when there is none yet (long polling); default 0, at
    /// most the configured `poll_max_wait_seconds` (30 by default, the maximum shown).
    #[param(maximum = 30)]
    wait: Option<u64>,
}

// For the OpenAPI document only: the stream's framing.
/// One Server-Sent Event of the stream, as a client's parser reads it.
#[derive(utoipa::ToSchema)]
pub struct StreamEvent {
    /// The event id (decimal): resume after it with `Last-Event-ID`.
    pub id: Option<String>,
    /// The event type: always the default, `message`.
    pub event: Option<String>,
    /// The event as JSON (`{"id","type","at","data"}`), or a `resync` message.
    pub data: Option<String>,
    /// The reconnection delay in milliseconds (the stream's first field).
    pub retry: Option<u64>,
}

// For the OpenAPI document only: events are written as JSON text by
// `shortlink_core::Event::to_json`.
/// One event, as every transport sends it.
#[derive(utoipa::ToSchema)]
pub struct NotificationEvent {
    /// Its position in the caller's log: resume after it.
    pub id: i64,
    /// What happened: `link.created`, `link.updated`, `link.deleted`, `link.clicked`,
    /// `upload.completed`, `upload.thumbnails_ready`, `upload.deleted` or
    /// `webhook.disabled`.
    #[schema(rename = "type")]
    pub kind: String,
    /// When it happened (RFC 3339).
    #[schema(format = DateTime)]
    pub at: String,
    /// The payload: a link (as the links API shows it) for `link.created` and
    /// `link.updated`; `{code, domain, short_url}` for `link.deleted`; the counts of one
    /// ingested batch for `link.clicked`; an upload for `upload.completed` and
    /// `upload.thumbnails_ready`; `{id, filename, reason}` for `upload.deleted` (reason
    /// `deleted`, `abandoned` or `expired`).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

// For the OpenAPI document only: the handler writes the JSON text itself.
/// A page of the caller's events.
#[derive(utoipa::ToSchema)]
pub struct NotificationsPage {
    /// The caller's events after `after`, oldest first.
    pub items: Vec<NotificationEvent>,
    /// The id of the last event returned (or `after` when there is none): the next
    /// request's `after`.
    pub next: i64,
}

fn subscribe_error(e: SubscribeError) -> ApiError {
    match e {
        SubscribeError::ShuttingDown => ApiError::new(ErrorCode::ShuttingDown, e.to_string()),
        SubscribeError::UserLimit(_) | SubscribeError::InstanceLimit(_) => ApiError::new(
            ErrorCode::TooManySubscribers,
            format!("{e}; close another stream first"),
        ),
    }
}

fn parse_cursor(text: &str, name: &str) -> Result<EventId, ApiError> {
    text.trim()
        .parse::<EventId>()
        .ok()
        .filter(|id| *id >= 0)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidCursor,
                format!("{name} must be an event id (a non-negative integer)"),
            )
        })
}

/// The resume point: the `Last-Event-ID` header (what `EventSource` sends when it
/// reconnects), else `?last_event_id=`.
fn resume_point(headers: &HeaderMap, query: &StreamQuery) -> Result<Option<EventId>, ApiError> {
    // The query is checked even when the header wins: a bad value is never ignored.
    let from_query = query
        .last_event_id
        .as_deref()
        .map(|t| parse_cursor(t, "last_event_id"))
        .transpose()?;
    // An empty header is no resume point (as for `EventSource`, which sends none).
    if let Some(value) = headers
        .get("last-event-id")
        .filter(|v| !v.as_bytes().trim_ascii().is_empty())
    {
        let text = value.to_str().map_err(|_| {
            ApiError::new(ErrorCode::InvalidCursor, "Last-Event-ID is not valid text")
        })?;
        return parse_cursor(text, "Last-Event-ID").map(Some);
    }
    Ok(from_query)
}

/// The caller of an event stream: a header, `?access_token=` or the session cookie.
async fn stream_caller(
    state: &AppState,
    headers: &HeaderMap,
    access_token: Option<&str>,
) -> Result<Caller, ApiError> {
    caller_of(state, &axum::http::Method::GET, headers, access_token).await
}

api_errors!(EventStreamErrors: AUTH, QUERY; InvalidCursor, ShuttingDown, TooManySubscribers);

/// `GET /api/v1/events`: the caller's events as Server-Sent Events. Each event has an
/// `id:`; reconnecting with `Last-Event-ID` (or `?last_event_id=`) replays what was
/// missed. Comments (`: heartbeat`) keep idle connections open; a `resync` message means
/// the stream fell behind and continues from the log.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, pattern = "^[0-9]{0,18}$", description = "Resume after this event id \
            (what `EventSource` sends when it reconnects); takes precedence over `last_event_id`."),
    ),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "An endless `text/event-stream`: a `retry:` field first, then one \
            event per message, its `id:` the event id and its `data:` the event as JSON \
            (`{\"id\",\"type\",\"at\",\"data\"}`), or `{\"type\":\"resync\",\"after\",\"message\"}` when the \
            stream fell behind. The stream ends when the key or session stops being valid.",
         body = StreamEvent, content_type = "text/event-stream",
         headers(("X-Accel-Buffering" = String, description = "`no`, so proxies do not buffer the stream."))),
        EventStreamErrors,
    ),
)]
pub async fn sse(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    let caller = stream_caller(&state, &headers, query.access_token.as_deref()).await?;
    let after = resume_point(&headers, &query)?;
    let subscription = state
        .hub()
        .subscribe(caller.user.id)
        .map_err(subscribe_error)?;
    let stream = EventStream::open(state.store().clone(), subscription, after);
    let config = state.config();
    let retry = SseEvent::default().retry(Duration::from_millis(config.events_retry_ms));
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watched = (stream, recheck, state.clone(), caller);
    let events = futures_util::stream::unfold(watched, |mut watched| async move {
        let (stream, recheck, state, caller) = &mut watched;
        let delivery = loop {
            tokio::select! {
                delivery = stream.next() => break delivery,
                _ = recheck.tick() => {
                    // A revoked key, an ended session or a disabled user ends the stream.
                    if !still_valid(state, caller).await {
                        return None;
                    }
                }
            }
        };
        let event = match delivery {
            Ok(Some(Delivery::Event(event))) => SseEvent::default()
                .id(event.id.to_string())
                .data(&event.json),
            Ok(Some(Delivery::Resync)) => SseEvent::default().data(resync_message(stream)),
            Ok(None) => return None,
            Err(e) => {
                // The client reconnects with its last id and catches up from the log.
                warn!(error = %e, "event stream failed");
                return None;
            }
        };
        Some((Ok::<_, std::convert::Infallible>(event), watched))
    });
    let body = futures_util::stream::once(async move { Ok(retry) }).chain(events);
    let keep_alive = KeepAlive::new()
        .interval(Duration::from_secs(config.events_heartbeat_seconds))
        .text("heartbeat");
    let mut response = Sse::new(body).keep_alive(keep_alive).into_response();
    // Proxies such as nginx would otherwise buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn resync_message(stream: &EventStream) -> String {
    format!(
        r#"{{"type":"resync","after":{},"message":"this stream fell behind; what follows comes from the log"}}"#,
        stream.cursor()
    )
}

api_errors!(PollErrors: AUTH, QUERY; InvalidCursor, InvalidLimit, InvalidWait, ShuttingDown, TooManySubscribers);

/// `GET /api/v1/notifications?after=&limit=&wait=`: `{items, next}`; pass `next` as
/// `after` to continue. With `wait`, an empty answer is held back until an event arrives
/// or `wait` seconds pass.
#[utoipa::path(
    get,
    path = "/api/v1/notifications",
    tag = "events",
    params(PollQuery),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "The events after `after` (none when `wait` passed without one).",
         body = NotificationsPage),
        PollErrors,
    ),
)]
pub async fn poll(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<PollQuery>,
) -> Result<Response, ApiError> {
    let caller = stream_caller(&state, &headers, query.access_token.as_deref()).await?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::new(
            ErrorCode::InvalidCursor,
            "after must be a non-negative event id",
        ));
    }
    let limit = query.limit.unwrap_or(DEFAULT_POLL_LIMIT);
    if limit == 0 || limit > MAX_POLL_LIMIT {
        return Err(ApiError::new(
            ErrorCode::InvalidLimit,
            format!("limit must be between 1 and {MAX_POLL_LIMIT}"),
        ));
    }
    let max_wait = state.config().poll_max_wait_seconds;
    let wait = query.wait.unwrap_or(0);
    if wait > max_wait {
        return Err(ApiError::new(
            ErrorCode::InvalidWait,
            format!("wait must be at most {max_wait} seconds"),
        ));
    }
    let user = caller.user.id;
    let mut items = state.store().user_events(user, after, limit).await?;
    if items.is_empty() && wait > 0 {
        let subscription = state.hub().subscribe(user).map_err(subscribe_error)?;
        let mut stream = EventStream::open(state.store().clone(), subscription, Some(after));
        // Whatever arrives first (an event, or a resync) means the log has news.
        if let Ok(next) = tokio::time::timeout(Duration::from_secs(wait), stream.next()).await {
            next?;
            items = state.store().user_events(user, after, limit).await?;
        }
    }
    let next = items.last().map_or(after, |e| e.id);
    let body = format!(
        r#"{{"items":[{}],"next":{next}}}"#,
        items
            .iter()
            .map(|e| e.to_json())
            .collect::<Vec<_>>()
            .join(",")
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// A message a WebSocket client may send.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    /// Replay from the log after this id, then continue live.
    #[schema(value_type = i64, minimum = 0)]
    resume_after: EventId,
}

api_errors!(WebSocketErrors: QUERY; UpgradeRequired, InvalidCursor);

/// `GET /api/v1/ws`: the caller's events over a WebSocket, one text message each. The
/// key comes as a header, `?access_token=`, or a `bearer.<key>` subprotocol (offer
/// `shortlink.v1` beside it; the server selects that). A client may send
/// `{"resume_after": id}` at any time. Failures after the handshake close the socket
/// with 4401 (bad key), 4429 (subscriber limit), 4400 (bad request), 1009 (message too
/// big) or 1001 (server shutting down).
#[utoipa::path(
    get,
    path = "/api/v1/ws",
    tag = "events",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, pattern = "^[0-9]{0,18}$", description = "Resume after this event id; \
            takes precedence over `last_event_id`."),
        ("Sec-WebSocket-Protocol" = Option<String>, Header, description = "`shortlink.v1`, and \
            optionally `bearer.<key>` to carry the API key."),
    ),
    // No `security`: the key (`Authorization: Bearer`, `?access_token=`, a `bearer.<key>`
    // subprotocol or the session cookie) is checked after the handshake, and a refusal is
    // a close frame, never a 401 (see the 101 response).
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket is open. The key is checked now \
            (`Authorization: Bearer`, `?access_token=`, a `bearer.<key>` subprotocol or the session \
            cookie). The server sends each \
            event as a text message (`{\"id\",\"type\",\"at\",\"data\"}`, or a `resync` message), pings \
            every heartbeat, and answers a client message that is not `{\"resume_after\": id}` with \
            `{\"type\":\"error\",\"error\":{\"code\":\"invalid_message\",\"message\"}}`. A missing or \
            invalid key, a bad resume point or a subscriber limit is not refused here: the socket \
            opens and closes at once with 4401, 4400 or 4429 (1001 while shutting down).",
         headers(
            ("Upgrade" = String, description = "`websocket`."),
            ("Connection" = String, description = "`upgrade`."),
            ("Sec-WebSocket-Accept" = String, description = "The handshake's answer to `Sec-WebSocket-Key`."),
            ("Sec-WebSocket-Protocol" = String, description = "`shortlink.v1` when the client offered it (never the bearer protocol)."),
         )),
        WebSocketErrors,
    ),
)]
pub async fn websocket(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            // A bad resume point is the request's own fault, whatever its handshake.
            if let Err(e) = resume_point(&headers, &query) {
                return e.into_response();
            }
            return ApiError::new(
                ErrorCode::UpgradeRequired,
                format!("this endpoint takes a WebSocket handshake: {rejection}"),
            )
            .into_response();
        }
    };
    let offered_key = upgrade
        .requested_protocols()
        .filter_map(|p| p.to_str().ok())
        .flat_map(|p| p.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(WS_BEARER_PREFIX))
        .map(str::to_owned);
    let token = query.access_token.clone().or(offered_key);
    // Refusals are sent as close frames after the handshake: a browser shows a script
    // nothing of a refused handshake, but it does show a close code and reason.
    let opened: Result<(EventStream, Caller), (u16, String)> = async {
        let caller = stream_caller(&state, &headers, token.as_deref())
            .await
            .map_err(|e| (CLOSE_UNAUTHORIZED, e.message().to_owned()))?;
        let after = resume_point(&headers, &query)
            .map_err(|e| (CLOSE_BAD_REQUEST, e.message().to_owned()))?;
        let subscription = state.hub().subscribe(caller.user.id).map_err(|e| match e {
            SubscribeError::ShuttingDown => (1001, e.to_string()),
            _ => (CLOSE_TOO_MANY, e.to_string()),
        })?;
        Ok((
            EventStream::open(state.store().clone(), subscription, after),
            caller,
        ))
    }
    .await;
    // Only `shortlink.v1` is ever selected: echoing `bearer.<key>` would put the key in
    // a response header. A client offering only the bearer protocol gets no protocol.
    let protocols = [WS_PROTOCOL];
    let heartbeat = Duration::from_secs(state.config().events_heartbeat_seconds);
    upgrade
        .protocols(protocols)
        .max_message_size(state.config().ws_max_message_bytes)
        .max_frame_size(state.config().ws_max_message_bytes)
        .on_upgrade(move |socket| async move {
            match opened {
                Ok((stream, caller)) => {
                    run_socket(socket, stream, heartbeat, (&state, &caller)).await
                }
                Err((code, reason)) => close(socket, code, &reason).await,
            }
        })
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    // A close reason is at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    // Complete the closing handshake: wait (briefly) for the client's close frame before
    // dropping the connection, so the close frame is not overtaken by a TCP reset (seen
    // through the proxy as "connection reset without closing handshake").
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

// The fields are in the order `serde_json::json!` wrote them before (sorted by name).
/// An error frame on the WebSocket: the API's error envelope with `"type": "error"`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ErrorFrame {
    /// The error, as in the API's error envelope.
    error: ErrorFrameError,
    /// Always `error`.
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^error$")]
    kind: &'static str,
}

/// The error of a WebSocket error frame.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ErrorFrameError {
    /// Stable, machine-readable error code (`invalid_message`).
    #[schema(value_type = String)]
    code: &'static str,
    /// What went wrong, for people.
    message: String,
}

/// An error frame on the WebSocket: the API's error envelope with `"type": "error"`.
fn error_message(code: ErrorCode, message: &str) -> Message {
    let frame = ErrorFrame {
        error: ErrorFrameError {
            code: code.as_str(),
            message: message.to_owned(),
        },
        kind: "error",
    };
    Message::Text(serde_json::to_string(&frame).unwrap_or_default().into())
}

/// True when a receive error is tungstenite refusing an oversized message.
fn is_too_big(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) =
            e.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        {
            return true;
        }
        source = e.source();
    }
    false
}

async fn run_socket(
    mut socket: WebSocket,
    mut stream: EventStream,
    heartbeat: Duration,
    (state, caller): (&AppState, &Caller),
) {
    let mut ping = tokio::time::interval(heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    recheck.tick().await;
    loop {
        tokio::select! {
            _ = recheck.tick() => {
                if !still_valid(state, caller).await {
                    return close(socket, CLOSE_UNAUTHORIZED, "the key was revoked or expired, or the session ended").await;
                }
            }
            delivery = stream.next() => {
                let message = match delivery {
                    Ok(Some(Delivery::Event(event))) => Message::Text(event.json.as_str().into()),
                    Ok(Some(Delivery::Resync)) => Message::Text(resync_message(&stream).into()),
                    Ok(None) => return close(socket, 1001, "the server is shutting down").await,
                    Err(e) => {
                        warn!(error = %e, "event stream failed");
                        return close(socket, 1011, "the event log is unavailable; reconnect and resume").await;
                    }
                };
                if socket.send(message).await.is_err() {
                    return;
                }
            }
            received = socket.recv() => match received {
                Some(Ok(Message::Text(text))) => match crate::extract::parse_object::<ClientMessage>(text.as_bytes()) {
                    Ok(ClientMessage { resume_after }) if resume_after >= 0 => stream.resume_after(resume_after),
                    _ => {
                        let reply = error_message(
                            ErrorCode::InvalidMessage,
                            r#"send {"resume_after": <event id>} (a non-negative integer)"#,
                        );
                        if socket.send(reply).await.is_err() {
                            return;
                        }
                    }
                },
                Some(Ok(Message::Binary(_))) => {
                    let reply = error_message(ErrorCode::InvalidMessage, "binary messages are not accepted; send JSON text");
                    if socket.send(reply).await.is_err() {
                        return;
                    }
                }
                // Pings are answered by the library; pongs need nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) => {
                    // The library queued the reply to the client's close frame: send it,
                    // completing the closing handshake (without it the client sees 1006).
                    let _ = tokio::time::timeout(CLOSE_WAIT, SinkExt::close(&mut socket)).await;
                    return;
                }
                None => return,
                Some(Err(e)) => {
                    if is_too_big(&e) {
                        return close(socket, 1009, "message too big").await;
                    }
                    return;
                }
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}
