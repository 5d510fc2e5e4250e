//! The S3 listener's accept loop: how many client connections the gateway holds, and for
//! how long it lets one do nothing.
//!
//! - A connection must deliver a request's head within the header timeout, counted from
//!   accept or from the first byte after the previous response; dribbling bytes does not
//!   extend it (slowloris).
//! - A kept-alive connection with no new request for the keep-alive timeout is closed.
//! - At most `max_connections` are held. A new one beyond that closes the oldest
//!   connection that has no request in progress (idle, or still sending a head) to make
//!   room; when every connection is busy, the new one is answered `503 SlowDown` and
//!   closed. `accept` itself never fails for lack of file descriptors: the cap is kept
//!   below the process's limit, and if the system runs out anyway an idle connection is
//!   given up.
//!
//! hyper's own `header_read_timeout` is not used: since hyper 1.6 it also runs from the
//! moment a kept-alive connection goes idle, so one value would be both the header and
//! the keep-alive timeout. Each connection's task enforces both here instead, from what
//! its reads and requests tell (see [`Conn`]).
//!
//! Every request gets [`ConnectInfo`] with the peer's address. Connections come wrapped in
//! [`IdleWrites`], so a client that stops reading a response is dropped too.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::error::S3Error;
use crate::s3::idle::IdleWrites;

/// Open client connections (gauge).
pub const METRIC_OPEN: &str = "cairn_s3_connections_open";
/// Connections answered `503 SlowDown` because every slot was busy (counter).
pub const METRIC_REFUSED: &str = "cairn_s3_connections_refused_total";
/// Idle connections closed to make room for a new one (counter).
pub const METRIC_EVICTED: &str = "cairn_s3_connections_evicted_total";
/// Connections closed for sending no request head in time (`reason="header"`) or no new
/// request while kept alive (`reason="idle"`) (counter).
pub const METRIC_TIMED_OUT: &str = "cairn_s3_connections_timed_out_total";

/// Refusals answered at once; beyond this many in progress a refused connection is
/// closed without an answer (each holds a socket for up to [`REFUSAL_TIME`]).
const MAX_REFUSALS_IN_FLIGHT: usize = 256;
/// How long a refused connection may take to send its head and read the 503.
const REFUSAL_TIME: Duration = Duration::from_secs(2);
/// After a flood ends: this many connections fewer than the peak make freed memory worth
/// handing back to the OS.
const TRIM_AFTER_DROP: usize = 512;
/// How often the open-connection count is checked for a receded flood.
const TRIM_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Connection limits of the S3 listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections held at once (at least 1).
    pub max_connections: usize,
    /// Time to deliver a request head, from accept or from its first byte.
    pub header_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub keepalive_timeout: Duration,
    /// Time a write to the client may wait for room ([`IdleWrites`]).
    pub write_timeout: Duration,
}

/// The default connection cap for an open-files soft limit of `fd_limit`: half of it
/// (the other half is for node connections, the catalog and logs), at least 64 and at
/// most 16384 (each idle connection costs about 10 KB).
pub fn default_max_connections(fd_limit: Option<u64>) -> usize {
    let limit = fd_limit.unwrap_or(1024);
    usize::try_from(limit / 2)
        .unwrap_or(usize::MAX)
        .clamp(64, 16384)
}

/// What a connection is doing, for timeouts and eviction.
const PHASE_HEAD: u8 = 0;
/// Waiting for the first byte of its next request (kept alive).
const PHASE_IDLE: u8 = 1;
/// A request is in progress (from its head until its response is written).
const PHASE_BUSY: u8 = 2;

/// One client connection's shared state: its task, its reads and its requests update it.
struct Conn {
    /// Key in [`Registry::idle`] while no request is in progress (0: none). Changed only
    /// under the registry's lock.
    idle_key: AtomicU64,
    /// One of the `PHASE_*` values.
    phase: AtomicU8,
    /// Requests in progress (their response not yet written). Changed only under the
    /// registry's lock; the connection is idle again only when it drops to 0.
    requests: AtomicU32,
    /// Milliseconds since the listener's epoch at which the current wait began.
    since_ms: AtomicU64,
    /// Set (under the registry's lock) when the listener takes the connection's slot.
    evicted: AtomicBool,
    /// Wakes the connection's task to look at its state again.
    wake: Notify,
}

/// Connections counted against the cap, and the idle ones in the order they went idle.
struct Registry {
    open: usize,
    idle: BTreeMap<u64, Arc<Conn>>,
    next_key: u64,
}

/// What the accept loop and every connection share.
struct Shared {
    registry: Mutex<Registry>,
    epoch: Instant,
    limits: Limits,
    /// Highest open count since memory was last handed back.
    peak: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain counters and a map: still usable.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Puts `conn` in the idle order (newest last).
    fn mark_idle(reg: &mut Registry, conn: &Arc<Conn>) {
        reg.next_key += 1;
        let key = reg.next_key;
        conn.idle_key.store(key, Ordering::Relaxed);
        reg.idle.insert(key, conn.clone());
    }

    fn unmark_idle(reg: &mut Registry, conn: &Conn) {
        let key = conn.idle_key.swap(0, Ordering::Relaxed);
        if key != 0 {
            reg.idle.remove(&key);
        }
    }

    /// Takes a slot for a new connection: a free one, or the oldest idle connection's.
    /// None when every slot is busy.
    fn admit(&self) -> Option<Arc<Conn>> {
        let mut reg = self.lock();
        if reg.open >= self.limits.max_connections {
            let (_, victim) = reg.idle.pop_first()?;
            self.evict(&mut reg, &victim);
        }
        let conn = Arc::new(Conn {
            idle_key: AtomicU64::new(0),
            phase: AtomicU8::new(PHASE_HEAD),
            requests: AtomicU32::new(0),
            since_ms: AtomicU64::new(self.now_ms()),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        });
        Self::mark_idle(&mut reg, &conn);
        reg.open += 1;
        metrics::gauge!(METRIC_OPEN).set(reg.open as f64);
        let open = reg.open as u64;
        self.peak.fetch_max(open, Ordering::Relaxed);
        Some(conn)
    }

    /// Frees `victim`'s slot (already out of the idle order) and tells its task to close it.
    fn evict(&self, reg: &mut Registry, victim: &Conn) {
        victim.idle_key.store(0, Ordering::Relaxed);
        victim.evicted.store(true, Ordering::Relaxed);
        reg.open -= 1;
        metrics::counter!(METRIC_EVICTED).increment(1);
        victim.wake.notify_one();
    }

    /// Gives up the oldest idle connection (the system ran out of file descriptors).
    fn evict_oldest(&self) -> bool {
        let mut reg = self.lock();
        match reg.idle.pop_first() {
            Some((_, victim)) => {
                self.evict(&mut reg, &victim);
                metrics::gauge!(METRIC_OPEN).set(reg.open as f64);
                true
            }
            None => false,
        }
    }

    /// `conn`'s task ended: its slot is free (unless it was taken already).
    fn release(&self, conn: &Conn) {
        let mut reg = self.lock();
        if !conn.evicted.load(Ordering::Relaxed) {
            Self::unmark_idle(&mut reg, conn);
            reg.open -= 1;
            metrics::gauge!(METRIC_OPEN).set(reg.open as f64);
        }
    }

    /// A request's head arrived on `conn`.
    fn begin_request(self: &Arc<Self>, conn: &Arc<Conn>) -> BusyGuard {
        let mut reg = self.lock();
        Self::unmark_idle(&mut reg, conn);
        conn.requests.fetch_add(1, Ordering::Relaxed);
        conn.phase.store(PHASE_BUSY, Ordering::Relaxed);
        drop(reg);
        BusyGuard {
            shared: self.clone(),
            conn: conn.clone(),
        }
    }

    /// `conn`'s request is over (its response written, or abandoned).
    fn end_request(&self, conn: &Arc<Conn>) {
        let mut reg = self.lock();
        let before = conn.requests.fetch_sub(1, Ordering::Relaxed);
        if before > 1 || conn.evicted.load(Ordering::Relaxed) {
            return;
        }
        conn.since_ms.store(self.now_ms(), Ordering::Relaxed);
        conn.phase.store(PHASE_IDLE, Ordering::Relaxed);
        Self::mark_idle(&mut reg, conn);
        drop(reg);
        // Its deadline changed: from none to the keep-alive timeout.
        conn.wake.notify_one();
    }

    /// When `conn` has waited too long, and for what (None while a request is in progress).
    fn deadline(&self, conn: &Conn) -> Option<(Instant, &'static str)> {
        let since = self.epoch + Duration::from_millis(conn.since_ms.load(Ordering::Relaxed));
        match conn.phase.load(Ordering::Relaxed) {
            PHASE_HEAD => Some((since + self.limits.header_timeout, "header")),
            PHASE_IDLE => Some((since + self.limits.keepalive_timeout, "idle")),
            _ => None,
        }
    }
}

/// Marks its connection busy while alive: held by the request and then its response body.
struct BusyGuard {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.shared.end_request(&self.conn);
    }
}

/// A response body that keeps its connection busy until it has been sent (or dropped).
struct TrackedBody {
    inner: Body,
    guard: Option<BusyGuard>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = r {
            this.guard = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket: the first byte read after a response starts the header timeout.
struct Watched<T> {
    io: T,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before
            && this
                .conn
                .phase
                .compare_exchange(PHASE_IDLE, PHASE_HEAD, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            this.conn
                .since_ms
                .store(this.shared.now_ms(), Ordering::Relaxed);
            this.conn.wake.notify_one();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Registers the listener's metrics at zero, so the first event shows in `increase()`.
pub fn register_metrics() {
    metrics::gauge!(METRIC_OPEN).set(0.0);
    metrics::counter!(METRIC_REFUSED).increment(0);
    metrics::counter!(METRIC_EVICTED).increment(0);
    for reason in ["header", "idle"] {
        metrics::counter!(METRIC_TIMED_OUT, "reason" => reason).increment(0);
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then stops
/// accepting, lets requests in progress finish and returns once every connection closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = Limits {
        max_connections: limits.max_connections.max(1),
        ..limits
    };
    register_metrics();
    let shared = Arc::new(Shared {
        registry: Mutex::new(Registry {
            open: 0,
            idle: BTreeMap::new(),
            next_key: 0,
        }),
        epoch: Instant::now(),
        limits,
        peak: AtomicU64::new(0),
    });
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let mut http = hyper::server::conn::http1::Builder::new();
    // The header and keep-alive timeouts are this module's (see the module docs).
    http.timer(TokioTimer::new()).header_read_timeout(None);
    let http = Arc::new(http);
    let trimmer = tokio::spawn(trim_after_floods(shared.clone()));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    on_accept_error(&shared, &e).await;
                    continue;
                }
            },
        };
        let Some(conn) = shared.admit() else {
            metrics::counter!(METRIC_REFUSED).increment(1);
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                tasks.spawn(async move {
                    refuse(stream).await;
                    drop(permit);
                });
            }
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        tasks.spawn(serve_connection(
            shared.clone(),
            conn,
            http.clone(),
            app.clone(),
            stream,
            peer,
            stop.clone(),
        ));
    }
    drop(listener);
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    trimmer.abort();
    Ok(())
}

/// `accept` failed: out of file descriptors (give up an idle connection, so the listener
/// keeps answering), or a connection that died before it was taken (nothing to do).
async fn on_accept_error(shared: &Shared, e: &io::Error) {
    if cairn_common::daemon::is_out_of_fds(e) {
        let freed = shared.evict_oldest();
        cairn_common::log_limited!(warn, key = (); error = %e, freed_idle = freed, "out of file descriptors while accepting; lower --max-connections");
        // The freed socket closes once its task runs; do not spin until then.
        tokio::time::sleep(Duration::from_millis(if freed { 5 } else { 50 })).await;
    } else {
        tracing::debug!(error = %e, "accept failed");
    }
}

/// Answers a connection with `503 SlowDown` and closes it (every slot is busy).
async fn refuse(stream: TcpStream) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(REFUSAL_TIME);
    let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| {
        let resource = req.uri().path().to_string();
        let request_id = cairn_common::request_id::RequestId::generate().to_string();
        let resp = S3Error::SlowDown("the gateway holds as many connections as it may".into())
            .to_response(&resource, &request_id, req.method() == http::Method::HEAD);
        std::future::ready(Ok::<_, Infallible>(resp))
    });
    let conn = http.serve_connection(TokioIo::new(stream), svc);
    match tokio::time::timeout(REFUSAL_TIME, conn).await {
        Ok(Ok(())) | Err(_) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "refused connection"),
    }
}

/// Serves one connection until it closes, times out, is evicted or the server stops.
async fn serve_connection(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    http: Arc<hyper::server::conn::http1::Builder>,
    app: Router,
    stream: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let io = Watched {
        io: IdleWrites::new(stream, shared.limits.write_timeout),
        conn: conn.clone(),
        shared: shared.clone(),
    };
    let svc = {
        let shared = shared.clone();
        let conn = conn.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let guard = shared.begin_request(&conn);
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let resp = match app.oneshot(req.map(Body::new)).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(resp.map(|inner| {
                    Body::new(TrackedBody {
                        inner,
                        guard: Some(guard),
                    })
                }))
            }
        })
    };
    let connection = http.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let deadline = shared.deadline(&conn);
        let expired = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = connection.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "client connection ended");
                }
                break;
            }
            _ = conn.wake.notified() => {
                if conn.evicted.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "idle connection closed to make room");
                    break;
                }
            }
            _ = expired => {
                // The phase may have moved on since the deadline was computed.
                if let Some((at, reason)) = shared.deadline(&conn) {
                    if at <= Instant::now() {
                        metrics::counter!(METRIC_TIMED_OUT, "reason" => reason).increment(1);
                        tracing::debug!(%peer, reason, "client connection timed out");
                        break;
                    }
                }
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
    shared.release(&conn);
}

/// Hands freed memory back to the OS once a flood of connections has receded.
async fn trim_after_floods(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(TRIM_CHECK_EVERY);
    loop {
        tick.tick().await;
        let open = shared.lock().open as u64;
        let peak = shared.peak.load(Ordering::Relaxed);
        if peak >= open + TRIM_AFTER_DROP as u64 {
            shared.peak.store(open, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(cairn_common::daemon::release_free_memory).await;
            tracing::debug!(
                peak,
                open,
                "connection flood receded: freed memory returned"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cap_follows_the_fd_limit() {
        assert_eq!(default_max_connections(Some(1024)), 512);
        assert_eq!(default_max_connections(Some(100)), 64);
        assert_eq!(default_max_connections(Some(1 << 20)), 16384);
        assert_eq!(default_max_connections(None), 512);
    }

    fn shared(max: usize) -> Arc<Shared> {
        Arc::new(Shared {
            registry: Mutex::new(Registry {
                open: 0,
                idle: BTreeMap::new(),
                next_key: 0,
            }),
            epoch: Instant::now(),
            limits: Limits {
                max_connections: max,
                header_timeout: Duration::from_secs(1),
                keepalive_timeout: Duration::from_secs(5),
                write_timeout: Duration::from_secs(1),
            },
            peak: AtomicU64::new(0),
        })
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room_and_busy_ones_never_do() {
        let s = shared(2);
        let a = s.admit().expect("room");
        let b = s.admit().expect("room");
        let busy_b = s.begin_request(&b);
        // Full: a (idle, oldest) goes.
        let c = s.admit().expect("a makes room");
        assert!(a.evicted.load(Ordering::Relaxed));
        assert!(!b.evicted.load(Ordering::Relaxed));
        // b busy, c idle: c goes next; then d is made busy too.
        let d = s.admit().expect("c makes room");
        assert!(c.evicted.load(Ordering::Relaxed));
        let _busy_d = s.begin_request(&d);
        assert!(s.admit().is_none(), "every connection is busy");
        // b's response is sent: it is idle again and can make room.
        drop(busy_b);
        assert!(s.admit().is_some());
        assert!(b.evicted.load(Ordering::Relaxed));
        assert_eq!(s.lock().open, 2);
    }

    #[test]
    fn a_connection_is_idle_only_once_its_last_request_is_over() {
        let s = shared(1);
        let a = s.admit().expect("room");
        let first = s.begin_request(&a);
        let second = s.begin_request(&a);
        drop(first);
        assert!(
            s.admit().is_none(),
            "a connection with a request in progress was evicted"
        );
        drop(second);
        assert!(s.admit().is_some());
        assert!(a.evicted.load(Ordering::Relaxed));
    }

    #[test]
    fn releasing_frees_the_slot_once() {
        let s = shared(1);
        let a = s.admit().expect("room");
        let b = s.admit().expect("a makes room");
        s.release(&a); // a's task ends after its eviction: its slot was b's already
        assert_eq!(s.lock().open, 1);
        s.release(&b);
        assert_eq!(s.lock().open, 0);
        assert!(s.lock().idle.is_empty());
    }
}
