//! Clients that go silent: an upload body that brings no byte, or a connection that takes
//! no byte of a response, for the client timeout. A client that died without closing its
//! connection (or stopped reading it) would otherwise hold its request forever: node
//! connections, temp files and buffers for an upload; shard streams, read-ahead blocks and
//! the object's read lease (which holds back the deletion of replaced versions) for a
//! download.
//!
//! - [`IdleBody`] ends a request body that brings nothing while the gateway waits for it;
//!   that becomes S3's `400 RequestTimeout`.
//! - [`IdleWrites`] fails a connection write that cannot go out; hyper then closes the
//!   connection and drops the response, which stops the read behind it. The S3 listener
//!   ([`crate::listener`]) wraps every client connection in it.
//!
//! Only time spent waiting on the client counts: while the gateway itself is not reading
//! or writing (its nodes are slow), no timer runs.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A deadline armed when a wait on the client starts and disarmed by any progress.
struct Watchdog {
    limit: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl Watchdog {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    /// The client made progress.
    fn progress(&mut self) {
        self.armed = false;
    }

    /// The client has not made progress yet: whether `limit` has passed since the wait
    /// began (else `cx` is woken when it has).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            self.sleep.as_mut().reset(Instant::now() + self.limit);
            self.armed = true;
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }

    /// `r`, or a timeout if it is still pending past the limit.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.progress();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no byte for {:?}", self.limit),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

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
    watchdog: Watchdog,
}

impl IdleBody {
    /// Wraps `inner`.
    pub fn new(inner: Body, limit: Duration) -> Self {
        Self {
            inner,
            watchdog: Watchdog::new(limit),
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
            this.watchdog.progress();
            return Poll::Ready(frame);
        }
        if this.watchdog.expired(cx) {
            this.watchdog.progress();
            return Poll::Ready(Some(Err(axum::Error::new(ClientStalled(
                this.watchdog.limit,
            )))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client connection whose every write may wait at most `limit` for room.
pub struct IdleWrites<T> {
    io: T,
    watchdog: Watchdog,
}

impl<T> IdleWrites<T> {
    /// Wraps `io`.
    pub fn new(io: T, limit: Duration) -> Self {
        Self {
            io,
            watchdog: Watchdog::new(limit),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleWrites<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleWrites<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watchdog.watch(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watchdog.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.watchdog.watch(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.watchdog.watch(cx, r)
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

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_fails_the_write_and_a_reader_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limit = Duration::from_secs(20);
        let (server, mut client) = tokio::io::duplex(4096);
        let mut conn = IdleWrites::new(server, limit);
        // The client reads everything, pausing 15 s now and then: no error.
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = vec![0u8; 1024];
            for i in 0.. {
                if i % 16 == 0 {
                    tokio::time::sleep(Duration::from_secs(15)).await;
                }
                match client.read(&mut buf).await.expect("read") {
                    0 => break,
                    n => got += n,
                }
                if got >= 64 * 1024 {
                    break;
                }
            }
            (client, got)
        });
        conn.write_all(&[7u8; 64 * 1024])
            .await
            .expect("a reading client");
        let (client, got) = reader.await.expect("reader");
        assert_eq!(got, 64 * 1024);
        // Now it stops reading: once the pipe is full, the write fails after 20 s.
        let started = tokio::time::Instant::now();
        let e = conn
            .write_all(&[7u8; 64 * 1024])
            .await
            .expect_err("a write to a client that does not read went through");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), limit);
        drop(client);
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures::Stream<Item = T> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
