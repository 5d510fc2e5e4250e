//! The client side of a stalled upload: a request body that brings no byte for the
//! client timeout while the gateway is waiting for one ends with an error, which becomes
//! S3's `400 RequestTimeout`. A client that died without closing its connection would
//! otherwise hold its upload (node connections, temp files, buffers) forever.
//!
//! Only time spent waiting on the client counts: while the gateway itself is not reading
//! (its nodes are slow), no timer runs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

/// The error a stalled body ends with.
#[derive(Debug, thiserror::Error)]
#[error("no request body byte for {0:?}")]
pub struct ClientStalled(pub Duration);

/// Whether `e`, or an error it wraps, is [`ClientStalled`].
pub fn is_stall(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<ClientStalled>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// `req` with its body limited to `limit` of silence per wait.
pub fn limit_idle(req: Request, limit: Duration) -> Request {
    req.map(|body| Body::new(IdleBody::new(body, limit)))
}

/// A body whose every wait for the next frame may last at most `limit`.
pub struct IdleBody {
    inner: Body,
    limit: Duration,
    /// Running while the reader waits; cleared by each frame.
    timer: Option<Pin<Box<Sleep>>>,
}

impl IdleBody {
    /// Wraps `inner`.
    pub fn new(inner: Body, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: None,
        }
    }
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.timer = None;
            return Poll::Ready(frame);
        }
        let limit = this.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.timer = None;
                Poll::Ready(Some(Err(axum::Error::new(ClientStalled(limit)))))
            }
            Poll::Pending => Poll::Pending,
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
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out_and_a_paused_reader_does_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let stream = tokio_stream_from(rx);
        let mut body = IdleBody::new(Body::from_stream(stream), Duration::from_secs(20));
        tx.send(Ok(Bytes::from_static(b"abc"))).await.expect("send");
        let f = body.frame().await.expect("a frame").expect("data");
        assert_eq!(f.into_data().expect("data"), Bytes::from_static(b"abc"));
        // The reader itself pauses for a minute (slow nodes): that is not the client's
        // silence, and data waiting by then is delivered.
        tx.send(Ok(Bytes::from_static(b"de"))).await.expect("send");
        tokio::time::sleep(Duration::from_secs(60)).await;
        let f = body.frame().await.expect("a frame").expect("data");
        assert_eq!(f.into_data().expect("data"), Bytes::from_static(b"de"));
        // Now the client sends nothing: 20 s of waiting end the body with a stall.
        let started = tokio::time::Instant::now();
        let e = body.frame().await.expect("an item").expect_err("a stall");
        assert!(is_stall(&e), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(20));
        drop(tx);
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures::Stream<Item = T> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
