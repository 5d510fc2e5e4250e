//! Client side of the storage node protocol ([`cairn_common::protocol`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_common::auth::{BodyClaim, ClusterKey, ANY_NODE};
use cairn_common::ids::{NodeId, ObjectId};
use cairn_common::protocol::{
    self, Inventory, ManifestList, NodeInfo, UploadOutcome, ERROR_HEADER,
};
use cairn_common::request_id;
use cairn_common::shard::ShardKey;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod raw {
    //! Writing a stream of pieces to a raw connection, several pieces per `writev`.

    use std::collections::VecDeque;
    use std::io::{self, IoSlice};
    use std::time::Duration;

    use bytes::{Buf, Bytes};
    use futures::{FutureExt, Stream, StreamExt};
    use tokio::io::{AsyncWrite, AsyncWriteExt};

    /// Pieces gathered into one `writev` at most.
    const MAX_PIECES: usize = 32;
    /// Bytes gathered into one `writev` at most (pieces already waiting are taken, up to
    /// this; we never wait for more).
    const MAX_BATCH: usize = 256 << 10;

    /// Writes every piece of `body` to `io`, then flushes; the pieces must add up to
    /// exactly `len` bytes. A write that takes nothing for `stall` fails (`TimedOut`);
    /// waiting for `body` has no limit (it moves at the S3 client's pace).
    pub async fn write_stream<W, S>(
        io: &mut W,
        body: S,
        len: u64,
        stall: Duration,
    ) -> io::Result<()>
    where
        W: AsyncWrite + Unpin,
        S: Stream<Item = io::Result<Bytes>>,
    {
        let mut body = std::pin::pin!(body);
        let mut batch: VecDeque<Bytes> = VecDeque::with_capacity(MAX_PIECES);
        let (mut batched, mut sent, mut ended) = (0usize, 0u64, false);
        loop {
            if batch.is_empty() {
                match body.next().await {
                    Some(piece) => {
                        let piece = piece?;
                        batched = piece.len();
                        batch.push_back(piece);
                    }
                    None => break,
                }
            }
            // Take what is already waiting, without waiting for more.
            while !ended && batch.len() < MAX_PIECES && batched < MAX_BATCH {
                match body.next().now_or_never() {
                    Some(Some(piece)) => {
                        let piece = piece?;
                        batched += piece.len();
                        batch.push_back(piece);
                    }
                    Some(None) => ended = true,
                    None => break,
                }
            }
            let slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
            let mut n = within(stall, io.write_vectored(&slices)).await?;
            if n == 0 && batched > 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            sent += n as u64;
            batched -= n;
            while n > 0 {
                let front = &mut batch[0];
                if n >= front.len() {
                    n -= front.len();
                    batch.pop_front();
                } else {
                    front.advance(n);
                    n = 0;
                }
            }
            batch.retain(|b| !b.is_empty());
            if ended && batch.is_empty() {
                break;
            }
        }
        if sent != len {
            return Err(io::Error::other(format!(
                "shard stream gave {sent} bytes, not {len}"
            )));
        }
        within(stall, io.flush()).await
    }

    /// `op`, failing with `TimedOut` if it takes longer than `limit`.
    async fn within<T>(
        limit: Duration,
        op: impl std::future::Future<Output = io::Result<T>>,
    ) -> io::Result<T> {
        tokio::time::timeout(limit, op).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the node took no byte for {limit:?}"),
            )
        })?
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use tokio::io::AsyncReadExt;

        const STALL: Duration = Duration::from_secs(5);

        fn pieces(sizes: &[usize]) -> (Vec<io::Result<Bytes>>, Vec<u8>) {
            let mut all = Vec::new();
            let pieces = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let p: Vec<u8> = (0..n).map(|j| (i * 131 + j * 7) as u8).collect();
                    all.extend_from_slice(&p);
                    Ok(Bytes::from(p))
                })
                .collect();
            (pieces, all)
        }

        #[tokio::test]
        async fn writes_every_piece_in_order_through_a_small_pipe() {
            // 100 pieces, some empty, some larger than a batch; a 4 KiB pipe makes most
            // writes partial.
            let sizes: Vec<usize> = (0..100)
                .map(|i| (i * 7919) % 70_000)
                .chain([0, 3 << 20, 1])
                .collect();
            let (pieces, want) = pieces(&sizes);
            let (mut tx, mut rx) = tokio::io::duplex(4096);
            let reader = tokio::spawn(async move {
                let mut got = Vec::new();
                rx.read_to_end(&mut got).await.expect("read");
                got
            });
            let len = want.len() as u64;
            write_stream(&mut tx, futures::stream::iter(pieces), len, STALL)
                .await
                .expect("write");
            drop(tx);
            assert_eq!(reader.await.expect("reader"), want);
        }

        #[tokio::test]
        async fn a_wrong_total_or_a_failing_stream_is_an_error() {
            let (pieces, want) = pieces(&[10, 20]);
            let mut sink = Vec::new();
            let r = write_stream(
                &mut sink,
                futures::stream::iter(pieces),
                want.len() as u64 + 1,
                STALL,
            )
            .await;
            assert!(r.is_err(), "short stream passed");
            let failing = futures::stream::iter(vec![
                Ok(Bytes::from_static(b"abc")),
                Err(io::Error::other("encoder stopped")),
            ]);
            assert!(write_stream(&mut Vec::new(), failing, 3, STALL)
                .await
                .is_err());
        }

        #[tokio::test]
        async fn a_peer_that_stops_reading_times_the_write_out() {
            let (pieces, want) = pieces(&[64 << 10; 4]);
            // the reader end is kept but never read: the 4 KiB pipe fills and stays full
            let (mut tx, _rx) = tokio::io::duplex(4096);
            let stall = Duration::from_millis(200);
            let started = std::time::Instant::now();
            let r = write_stream(
                &mut tx,
                futures::stream::iter(pieces),
                want.len() as u64,
                stall,
            )
            .await;
            let e = r.expect_err("a write to a silent peer went through");
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            assert!(started.elapsed() >= stall);
        }
    }
}

/// How long a health probe may take, connecting included.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Talks to storage nodes, signing every request with the cluster key.
#[derive(Clone)]
pub struct NodeClient {
    /// Data traffic: shards, manifests, listings.
    http: reqwest::Client,
    /// Health probes only, on connections of their own: a probe never waits behind data
    /// transfers in `http`'s pool, so a gateway busy moving data still asks promptly.
    probe_http: reqwest::Client,
    key: ClusterKey,
    /// Key of shard tags, derived from `key` once.
    shard_key: ShardKey,
    stall: Duration,
    life: Arc<LifeSigns>,
    /// The id each address proved it has: every request names the node it is meant for,
    /// so a node refuses a request captured on its way to another.
    ids: Arc<Mutex<HashMap<String, NodeId>>>,
}

/// When each node address last answered a call: data traffic is proof of life too.
#[derive(Default)]
struct LifeSigns(Mutex<HashMap<String, Instant>>);

impl LifeSigns {
    fn record(&self, addr: &str) {
        let now = Instant::now();
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match g.get_mut(addr) {
            Some(t) => *t = now,
            None => {
                g.insert(addr.to_string(), now);
            }
        }
    }

    fn last(&self, addr: &str) -> Option<Instant> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.get(addr).copied()
    }
}

/// What a failed node call means for the caller.
#[derive(Debug, thiserror::Error)]
pub enum NodeCallError {
    /// The node could not be reached or the transfer broke.
    #[error("transport: {0}")]
    Transport(String),
    /// Nothing listens at the node's address (connection refused): its process is gone.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The gateway could not make the call for want of its own resources (file
    /// descriptors, local ports, memory): this says nothing about the node.
    #[error("local: {0}")]
    Local(String),
    /// The node refused with a status and an error kind.
    #[error("status {status}: {kind}")]
    Refused { status: u16, kind: String },
}

impl NodeCallError {
    /// Classifies a failed HTTP call: a refused connection and a shortage of the
    /// gateway's own resources are told apart from other transport failures.
    fn from_http(e: &reqwest::Error) -> Self {
        // reqwest's own message hides the cause ("error sending request"): name it.
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(e);
        let mut io_kind = None;
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                io_kind.get_or_insert_with(|| classify_io(io));
            }
            source = s.source();
        }
        match io_kind {
            Some(IoCause::Refused) => Self::Unreachable(msg),
            Some(IoCause::Local) => Self::Local(msg),
            _ => Self::Transport(msg),
        }
    }
}

/// What an I/O error on a node connection says about its cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IoCause {
    /// Nothing listens there.
    Refused,
    /// The gateway ran short of its own resources.
    Local,
    /// Anything else (a reset, a timeout, a broken pipe).
    Other,
}

fn classify_io(e: &std::io::Error) -> IoCause {
    // EMFILE (24) and ENFILE (23) have these numbers on Linux and macOS alike; std has
    // no stable ErrorKind for them.
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => IoCause::Refused,
        std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::OutOfMemory => IoCause::Local,
        _ if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) => IoCause::Local,
        _ => IoCause::Other,
    }
}

impl NodeClient {
    /// A client using `key` for the cluster credential. A node that goes `stall` without
    /// taking a byte it is sent, sending a byte it owes, or answering once it has a whole
    /// request fails the call: a powered-off node sends no reset, and a wait on it would
    /// never end.
    pub fn new(key: ClusterKey, stall: Duration) -> Self {
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            // Idle pooled connections to a node that lost power are found dead by the
            // kernel's keepalive probes instead of on their next use.
            .tcp_keepalive(stall);
        // Linux: sent bytes unacknowledged (or a zero window) this long and the kernel
        // drops the connection, whatever the call is waiting for. macOS has no
        // TCP_USER_TIMEOUT; there the application-level stall timeouts of every call
        // (`send`, shard uploads and reads below) bound the same waits on their own.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let builder = builder.tcp_user_timeout(stall);
        let http = builder.build().unwrap_or_else(|_| reqwest::Client::new());
        // One kept-alive connection per node for probes: it stays warm between
        // heartbeats, so a probe needs no new connection through a node's busy accept
        // queue either.
        let probe_builder = reqwest::Client::builder()
            .connect_timeout(PROBE_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .tcp_keepalive(stall);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let probe_builder = probe_builder.tcp_user_timeout(stall);
        let probe_http = probe_builder
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            http,
            probe_http,
            shard_key: key.shard_key(),
            key,
            stall,
            life: Arc::default(),
            ids: Arc::default(),
        }
    }

    /// When the node at `addr` last answered any call of this client (data traffic or
    /// probe), whatever the answer: it was alive then.
    pub fn last_answer(&self, addr: &str) -> Option<Instant> {
        self.life.last(addr)
    }

    /// The key shard headers and blocks are tagged with.
    pub fn shard_key(&self) -> &ShardKey {
        &self.shard_key
    }

    fn silent(&self, what: &str) -> NodeCallError {
        NodeCallError::Transport(format!("{what}: the node was silent for {:?}", self.stall))
    }

    /// The response to `req`, a small request sent from memory, within `stall`.
    async fn send(
        &self,
        addr: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, NodeCallError> {
        match tokio::time::timeout(self.stall, req.send()).await {
            Ok(r) => self.check(addr, r).await,
            Err(_) => Err(self.silent("request")),
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        addr: &str,
        path_and_query: &str,
        body: BodyClaim,
    ) -> reqwest::RequestBuilder {
        let node = self
            .ids
            .lock()
            .ok()
            .and_then(|ids| ids.get(addr).map(|id| id.to_string()));
        // A node not probed yet is named `-`, which it accepts on `/v1/info` only.
        let node = node.as_deref().unwrap_or(ANY_NODE);
        self.request_on(&self.http, method, addr, path_and_query, node, body)
    }

    fn request_on(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        addr: &str,
        path_and_query: &str,
        node: &str,
        body: BodyClaim,
    ) -> reqwest::RequestBuilder {
        let credential = self.key.sign(method.as_str(), path_and_query, node, body);
        let mut req = http.request(method, format!("http://{addr}{path_and_query}"));
        for (name, value) in credential.headers() {
            req = req.header(name, value);
        }
        // The S3 request this call is made for, so the node logs under the same id.
        match request_id::current() {
            Some(id) => req.header(request_id::HEADER, id.as_str()),
            None => req,
        }
    }

    /// The response if it is a success, else the refusal it carries. Any answer is
    /// recorded as a sign of the node's life.
    async fn check(
        &self,
        addr: &str,
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, NodeCallError> {
        let resp = resp.map_err(|e| NodeCallError::from_http(&e))?;
        self.life.record(addr);
        if resp.status().is_success() {
            return Ok(resp);
        }
        let kind = resp
            .headers()
            .get(ERROR_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown")
            .to_string();
        Err(NodeCallError::Refused {
            status: resp.status().as_u16(),
            kind,
        })
    }

    /// Sends a bodiless or small-bodied call and checks its status.
    async fn call(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(), NodeCallError> {
        let req = match body {
            Some(body) => self
                .request(method, addr, path, BodyClaim::of(&body))
                .body(body),
            None => self.request(method, addr, path, BodyClaim::Empty),
        };
        self.send(addr, req).await.map(|_| ())
    }

    /// Asks a node who it is, with a fresh challenge, and checks its proof of the secret.
    /// This is the health probe: it goes on the probe connections, never queued behind
    /// data transfers, and takes at most [`PROBE_TIMEOUT`].
    pub async fn info(&self, addr: &str) -> Result<NodeInfo, NodeCallError> {
        let challenge = hex::encode(rand::random::<[u8; 16]>());
        let path = format!("/v1/info?challenge={challenge}");
        let req = self.request_on(
            &self.probe_http,
            reqwest::Method::GET,
            addr,
            &path,
            ANY_NODE,
            BodyClaim::Empty,
        );
        // tokio's timeout looks at the answer before the clock: on a gateway too busy to
        // poll the probe in time, an answer that has arrived still counts.
        let (body, peer) = tokio::time::timeout(PROBE_TIMEOUT, async {
            let resp = self.check(addr, req.send().await).await?;
            let peer = resp.remote_addr();
            let body = resp
                .bytes()
                .await
                .map_err(|e| NodeCallError::from_http(&e))?;
            Ok::<_, NodeCallError>((body, peer))
        })
        .await
        .map_err(|_| {
            NodeCallError::Transport(format!("probe: no answer within {PROBE_TIMEOUT:?}"))
        })??;
        let info: NodeInfo = serde_json::from_slice(&body)
            .map_err(|e| NodeCallError::Transport(format!("bad node info: {e}")))?;
        // The proof covers the address the node saw the probe arrive on: it must be the
        // one this client connected to, or a device relayed the challenge to a real node.
        let peer = peer.map(|p| std::net::SocketAddr::new(p.ip().to_canonical(), p.port()));
        let at_peer = peer.is_some_and(|p| info.seen_at == p.to_string());
        if !at_peer
            || !self.key.check_proof(
                &challenge,
                &info.node_id.to_string(),
                &info.seen_at,
                &info.proof,
            )
        {
            return Err(NodeCallError::Refused {
                status: 403,
                kind: "bad-proof".into(),
            });
        }
        if let Ok(mut ids) = self.ids.lock() {
            ids.insert(addr.to_string(), info.node_id);
        }
        Ok(info)
    }

    /// Streams a whole `len`-byte shard file to a node; returns once the node has it
    /// durably. Large shards go as a raw upload (see [`protocol`]).
    pub async fn put_shard<S>(
        &self,
        addr: &str,
        object: &ObjectId,
        segment: u32,
        index: u8,
        len: u64,
        body: S,
    ) -> Result<(), NodeCallError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let path = protocol::shard_path(object, segment, index);
        if len >= protocol::RAW_UPLOAD_MIN {
            return self.put_shard_raw(addr, &path, len, body).await;
        }
        // The body moves at the S3 client's pace, so the wait for the answer starts once
        // all of it is sent.
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<()>();
        let body = body.chain(futures::stream::once(async move {
            let _ = sent_tx.send(());
            Ok(Bytes::new())
        }));
        let req = self
            .request(reqwest::Method::PUT, addr, &path, BodyClaim::Shard)
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(body));
        tokio::select! {
            r = req.send() => self.check(addr, r).await.map(|_| ()),
            _ = async {
                let _ = sent_rx.await;
                tokio::time::sleep(self.stall).await;
            } => Err(self.silent("shard upload")),
        }
    }

    /// A raw shard upload: upgrade the connection, write the file, read the outcome.
    async fn put_shard_raw<S>(
        &self,
        addr: &str,
        path: &str,
        len: u64,
        body: S,
    ) -> Result<(), NodeCallError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>>,
    {
        let transport = |what: &str, e: &dyn std::fmt::Display| {
            NodeCallError::Transport(format!("raw shard upload, {what}: {e}"))
        };
        let req = self
            .request(reqwest::Method::PUT, addr, path, BodyClaim::Shard)
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, protocol::SHARD_UPGRADE)
            .header(protocol::SHARD_LENGTH_HEADER, len);
        let resp = tokio::time::timeout(self.stall, req.send())
            .await
            .map_err(|_| self.silent("raw shard upload"))?
            .map_err(|e| NodeCallError::from_http(&e))?;
        self.life.record(addr);
        if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            // A refusal (credential, path) carries its kind; anything else is a node
            // that does not speak raw uploads.
            let status = resp.status().as_u16();
            self.check(addr, Ok(resp)).await?;
            return Err(NodeCallError::Refused {
                status,
                kind: "no-upgrade".into(),
            });
        }
        let mut io = resp.upgrade().await.map_err(|e| transport("upgrade", &e))?;
        let sent = raw::write_stream(&mut io, body, len, self.stall).await;
        if let Err(e) = &sent {
            if e.kind() == std::io::ErrorKind::TimedOut {
                // A node that took nothing for `stall` will not answer either.
                return Err(transport("sending", e));
            }
            // The node may still be waiting for the rest: closing our side ends its read
            // (it then refuses the short file), so the outcome below cannot hang.
            let _ = tokio::time::timeout(self.stall, io.shutdown()).await;
        }
        // The node answers even when it refused the file part way (then our writes may
        // have failed first): its outcome says more than a broken pipe.
        let mut line = Vec::with_capacity(32);
        let mut outcome = (&mut io).take(protocol::MAX_OUTCOME_LINE as u64);
        let read = match tokio::time::timeout(self.stall, outcome.read_to_end(&mut line)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no outcome for {:?}", self.stall),
            )),
        };
        let outcome = UploadOutcome::parse(&line);
        if outcome.is_some() {
            self.life.record(addr);
        }
        match (outcome, sent, read) {
            (Some(o), _, _) if o.is_stored() => Ok(()),
            (Some(o), _, _) => Err(NodeCallError::Refused {
                status: o.status,
                kind: o.kind,
            }),
            (None, Err(e), _) => Err(transport("sending", &e)),
            (None, Ok(()), Err(e)) => Err(transport("reading the outcome", &e)),
            (None, Ok(()), Ok(_)) => Err(transport(
                "outcome",
                &format!("unreadable answer {:?}", String::from_utf8_lossy(&line)),
            )),
        }
    }

    /// Opens a stream of stored blocks `from..from+count` (data + crc each) of a shard.
    pub async fn read_shard(
        &self,
        addr: &str,
        object: &ObjectId,
        segment: u32,
        index: u8,
        from: u64,
        count: u64,
    ) -> Result<impl Stream<Item = Result<Bytes, NodeCallError>> + use<>, NodeCallError> {
        let path = protocol::shard_read_path(object, segment, index, from, count);
        let resp = self
            .send(
                addr,
                self.request(reqwest::Method::GET, addr, &path, BodyClaim::Empty),
            )
            .await?;
        // Each piece must come within `stall` of being asked for (the reader's own pauses,
        // waiting on the S3 client, do not count).
        let stall = self.stall;
        let body = Box::pin(resp.bytes_stream());
        Ok(futures::stream::unfold(
            Some(body),
            move |body| async move {
                let mut body = body?;
                match tokio::time::timeout(stall, body.next()).await {
                    Ok(Some(Ok(b))) => Some((Ok(b), Some(body))),
                    Ok(Some(Err(e))) => Some((Err(NodeCallError::Transport(e.to_string())), None)),
                    Ok(None) => None,
                    Err(_) => Some((
                        Err(NodeCallError::Transport(format!(
                            "shard read: the node was silent for {stall:?}"
                        ))),
                        None,
                    )),
                }
            },
        ))
    }

    /// The encoded header of a stored shard (verified by the node).
    pub async fn read_shard_header(
        &self,
        addr: &str,
        object: &ObjectId,
        segment: u32,
        index: u8,
    ) -> Result<Bytes, NodeCallError> {
        let path = format!("{}/header", protocol::shard_path(object, segment, index));
        let resp = self
            .send(
                addr,
                self.request(reqwest::Method::GET, addr, &path, BodyClaim::Empty),
            )
            .await?;
        tokio::time::timeout(self.stall, resp.bytes())
            .await
            .map_err(|_| self.silent(&path))?
            .map_err(|e| NodeCallError::Transport(e.to_string()))
    }

    /// Deletes one shard on a node.
    pub async fn delete_shard(
        &self,
        addr: &str,
        object: &ObjectId,
        segment: u32,
        index: u8,
    ) -> Result<(), NodeCallError> {
        let path = protocol::shard_path(object, segment, index);
        self.call(reqwest::Method::DELETE, addr, &path, None).await
    }

    /// Stores an object's manifest on a node (durably).
    pub async fn put_manifest(
        &self,
        addr: &str,
        object: &ObjectId,
        manifest: Bytes,
    ) -> Result<(), NodeCallError> {
        let path = protocol::manifest_path(object);
        self.call(reqwest::Method::PUT, addr, &path, Some(manifest))
            .await
    }

    /// Stores a bucket marker on a node (durably).
    pub async fn put_bucket(
        &self,
        addr: &str,
        name: &str,
        marker: Bytes,
    ) -> Result<(), NodeCallError> {
        let path = protocol::bucket_path(name);
        self.call(reqwest::Method::PUT, addr, &path, Some(marker))
            .await
    }

    /// Removes a bucket marker from a node.
    pub async fn delete_bucket(&self, addr: &str, name: &str) -> Result<(), NodeCallError> {
        let path = protocol::bucket_path(name);
        self.call(reqwest::Method::DELETE, addr, &path, None).await
    }

    /// Removes an object's manifest from a node.
    pub async fn delete_manifest(
        &self,
        addr: &str,
        object: &ObjectId,
    ) -> Result<(), NodeCallError> {
        let path = protocol::manifest_path(object);
        self.call(reqwest::Method::DELETE, addr, &path, None).await
    }

    /// Every manifest and bucket marker stored on a node.
    pub async fn manifests(&self, addr: &str) -> Result<ManifestList, NodeCallError> {
        self.get_json(addr, protocol::MANIFESTS_PATH).await
    }

    /// Every shard stored on a node, with sizes and ages.
    pub async fn inventory(&self, addr: &str) -> Result<Inventory, NodeCallError> {
        self.get_json(addr, protocol::INVENTORY_PATH).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
    ) -> Result<T, NodeCallError> {
        let resp = self
            .send(
                addr,
                self.request(reqwest::Method::GET, addr, path, BodyClaim::Empty),
            )
            .await?;
        let body = tokio::time::timeout(self.stall, resp.bytes())
            .await
            .map_err(|_| self.silent(path))?
            .map_err(|e| NodeCallError::Transport(e.to_string()))?;
        serde_json::from_slice(&body)
            .map_err(|e| NodeCallError::Transport(format!("bad answer to {path}: {e}")))
    }

    /// Deletes every shard of an object version on a node.
    pub async fn delete_object(&self, addr: &str, object: &ObjectId) -> Result<(), NodeCallError> {
        let path = protocol::object_path(object);
        self.call(reqwest::Method::DELETE, addr, &path, None).await
    }
}
