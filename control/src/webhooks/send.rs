//! One signed POST to an endpoint, as the Standard Webhooks specification describes it.

use std::time::{Duration, Instant};

use shortlink_core::Webhook;
use shortlink_core::time_util::now_unix;

use super::guard::TargetGuard;

/// Most bytes of a receiver's answer read (to keep the connection reusable); the rest is
/// dropped with the connection.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    /// Time until the answer (or the failure).
    pub latency_ms: u32,
    /// Why it failed, in words (never the URL: it may hold a token).
    pub error: Option<String>,
}

impl Attempt {
    /// True when the receiver took it (2xx).
    pub fn delivered(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends signed messages with one pooled HTTP client.
pub struct Sender {
    client: reqwest::Client,
    guard: TargetGuard,
    timeout: Duration,
}

/// The `webhook-signature` header: `v1,<base64>` for the secret, and for the previous
/// one while it is in its grace period, space-separated.
pub fn signature(
    hook: &Webhook,
    message_id: &str,
    timestamp: i64,
    body: &str,
) -> Result<String, standardwebhooks::WebhookError> {
    let mut signatures = vec![standardwebhooks::Webhook::new(&hook.secret)?.sign(
        message_id,
        timestamp,
        body.as_bytes(),
    )?];
    if let (Some(previous), Some(until)) = (&hook.previous_secret, hook.previous_until)
        && until > timestamp
    {
        signatures.push(standardwebhooks::Webhook::new(previous)?.sign(
            message_id,
            timestamp,
            body.as_bytes(),
        )?);
    }
    Ok(signatures.join(" "))
}

impl Sender {
    /// A sender refusing what `guard` refuses, giving each attempt `timeout`.
    pub fn new(guard: TargetGuard, timeout: Duration) -> Result<Sender, reqwest::Error> {
        let client = reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(guard.clone()))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("shortlink-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            client,
            guard,
            timeout,
        })
    }

    /// The guard on targets.
    pub fn guard(&self) -> &TargetGuard {
        &self.guard
    }

    /// POSTs `body` to the endpoint, signed, as message `message_id`.
    pub async fn send(&self, hook: &Webhook, message_id: &str, body: &str) -> Attempt {
        let started = Instant::now();
        let failed = |error: String| Attempt {
            status: None,
            latency_ms: elapsed_ms(started),
            error: Some(error),
        };
        // Names are checked by the resolver; an address in the URL is checked here.
        let url = match reqwest::Url::parse(&hook.url) {
            Ok(url) => url,
            Err(e) => return failed(format!("the URL cannot be parsed: {e}")),
        };
        if let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = url.host()
            && let Err(why) = self.guard.resolve(url.host_str().unwrap_or(""), 0).await
        {
            return failed(why);
        }
        let timestamp = now_unix();
        let signature = match signature(hook, message_id, timestamp, body) {
            Ok(s) => s,
            Err(e) => return failed(format!("the secret cannot sign: {e}")),
        };
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => return failed(describe(e, self.timeout)),
        };
        let status = response.status().as_u16();
        let latency_ms = elapsed_ms(started);
        let mut read = 0usize;
        while read < MAX_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        Attempt {
            status: Some(status),
            latency_ms,
            error: (!(200..300).contains(&status))
                .then(|| format!("the receiver answered HTTP {status}")),
        }
    }
}

fn elapsed_ms(since: Instant) -> u32 {
    u32::try_from(since.elapsed().as_millis()).unwrap_or(u32::MAX)
}

/// A request error in words, without the URL.
fn describe(error: reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("no answer within {} ms", timeout.as_millis());
    }
    let what = if error.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    let mut text = what.to_owned();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
