//! The minimum request body rate. A body may take `control.body_grace_seconds`; after that
//! it must keep up `control.min_body_bytes_per_second` on average since it began, or its
//! read fails: an upload trickling in a byte at a time does not hold a connection (and a
//! file descriptor) for ever. The handler reading it sees an error, as for a client that
//! went away, and the connection is closed after the answer (see [`crate::unread_body`]).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The slowest a body may arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyRate {
    /// Bytes a second, on average since the body began, once the grace period is over.
    pub min_bytes_per_second: u64,
    /// Time a body may take before the rate applies.
    pub grace: Duration,
}

/// Why a body read failed.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived slower than {0} bytes a second")]
pub struct TooSlow(u64);

/// Middleware: hands the handler a body that fails once it falls behind `rate`.
pub async fn enforce(State(rate): State<BodyRate>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let body = Body::new(Paced {
        inner: body,
        rate,
        started: Instant::now(),
        received: 0,
        timer: None,
    });
    next.run(Request::from_parts(parts, body)).await
}

/// A body with a deadline for each byte count: `started + grace + received / rate`.
struct Paced {
    inner: Body,
    rate: BodyRate,
    started: Instant,
    received: u64,
    /// Armed only while the body waits for data.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Paced {
    /// When the bytes received so far must have been followed by more.
    fn deadline(&self) -> Instant {
        let allowed = Duration::from_secs_f64(
            self.received as f64 / self.rate.min_bytes_per_second.max(1) as f64,
        );
        self.started + self.rate.grace + allowed
    }
}

impl HttpBody for Paced {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let deadline = this.deadline();
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(TooSlow(
                        this.rate.min_bytes_per_second,
                    ))))),
                    Poll::Pending => Poll::Pending,
                }
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    use futures_util::StreamExt;

    /// A body fed by hand, one chunk at a time.
    fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = tokio_stream_of(rx);
        (tx, Body::from_stream(stream))
    }

    fn tokio_stream_of(
        mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok)))
    }

    fn paced(body: Body, per_second: u64, grace_secs: u64) -> Paced {
        Paced {
            inner: body,
            rate: BodyRate {
                min_bytes_per_second: per_second,
                grace: Duration::from_secs(grace_secs),
            },
            started: Instant::now(),
            received: 0,
            timer: None,
        }
    }

    async fn next_frame(body: &mut Paced) -> Option<Result<Frame<Bytes>, axum::Error>> {
        poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_keeping_the_rate_is_read_and_a_trickle_is_cut_off() {
        let (tx, body) = channel_body();
        let mut body = paced(body, 100, 10);
        // 1 000 bytes at once: allowed until 10 s + 10 s.
        tx.send(Bytes::from(vec![b'a'; 1000])).await.unwrap();
        assert_eq!(
            next_frame(&mut body)
                .await
                .unwrap()
                .unwrap()
                .into_data()
                .unwrap()
                .len(),
            1000
        );
        // A byte at 19 s is in time; nothing more: at 20.01 s the read fails.
        let feeder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(19)).await;
            tx.send(Bytes::from_static(b"b")).await.unwrap();
            // Held open, sending nothing.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        assert!(next_frame(&mut body).await.unwrap().is_ok());
        let started = Instant::now();
        let failed = next_frame(&mut body).await.unwrap();
        let error = failed.unwrap_err();
        assert!(
            error.to_string().contains("slower than 100 bytes"),
            "{error}"
        );
        // 1 001 bytes were allowed 10 s + 10.01 s from the start; the byte came at 19 s.
        assert!(started.elapsed() <= Duration::from_millis(1100));
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_body_ends_without_a_timer() {
        let stream =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"done"))]);
        let mut body = paced(Body::from_stream(stream.boxed()), 1, 0);
        assert!(next_frame(&mut body).await.unwrap().is_ok());
        assert!(next_frame(&mut body).await.is_none());
        assert!(body.timer.is_none());
    }
}
