//! The node's HTTP API ([`cairn_common::protocol`]): routes, the cluster-credential check
//! and thin handlers over [`crate::write`], [`crate::read`] and [`crate::store`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use bytes::Bytes;
use cairn_common::auth::{AuthError, BodyClaim, ClusterKey, ReplayGuard, ANY_NODE};
use cairn_common::ids::ObjectId;
use cairn_common::protocol::{
    self, Inventory, ManifestList, NodeInfo, ObjectList, UploadOutcome, MAX_MANIFEST_LEN,
    MAX_REPORTED_BAD, PROTOCOL_VERSION, SHARD_LENGTH_HEADER, SHARD_UPGRADE,
};
use cairn_common::request_id::{self, RequestId};
use cairn_common::shard::ShardKey;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::error::{InjectedFailure, NodeError};
use crate::faults::{self, WriteFault};
use crate::metrics as m;
use crate::read::read_blocks;
use crate::scrub::ScrubState;
use crate::store::{ShardAddr, Store};
use crate::write::{write_shard, BodySource, Faulty, Idle, ShardSource, StreamSource};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The shard store.
    pub store: Arc<Store>,
    /// Cluster secret for request credentials and info proofs.
    pub key: ClusterKey,
    /// Key of shard header and block tags (derived from the cluster secret).
    pub shard_key: ShardKey,
    /// Bearer token `/metrics` requires.
    pub admin_token: Arc<String>,
    /// Nonces of recent requests, so none is accepted twice.
    pub replays: Arc<ReplayGuard>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Shards the background scrub found bad.
    pub scrub: Arc<ScrubState>,
    /// Raw shard uploads in progress (they outlive their request), for a clean shutdown.
    pub uploads: TaskTracker,
    /// How long an upload may go without a byte before it is dropped.
    pub idle_timeout: Duration,
}

/// Builds the router: authenticated `/v1/...` plus open `/health` and `/metrics`.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/v1/shards/{object}/{segment}/{index}",
            put(put_shard).get(get_shard).delete(delete_shard),
        )
        .route(
            "/v1/shards/{object}/{segment}/{index}/header",
            get(get_header),
        )
        .route("/v1/objects/{object}", delete(delete_object))
        .route(
            "/v1/objects/{object}/manifest",
            put(put_manifest).delete(delete_manifest),
        )
        .route("/v1/objects", get(list_objects))
        .route(protocol::MANIFESTS_PATH, get(list_manifests))
        .route("/v1/buckets/{name}", put(put_bucket).delete(delete_bucket))
        .route(protocol::INVENTORY_PATH, get(inventory))
        .route("/v1/info", get(info))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route_layer(middleware::from_fn(trace_call))
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(render_metrics).route_layer(middleware::from_fn_with_state(
                state.clone(),
                require_admin_token,
            )),
        )
        .merge(v1)
        .with_state(state)
}

/// Runs each `/v1/` call inside a span holding the caller's request id
/// ([`request_id::HEADER`]), so the node's lines for a call sit next to the gateway's lines
/// for the S3 request that caused it, and logs the call's outcome.
async fn trace_call(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::parse);
    // At ERROR level so that the span (and its id) is on every line that is logged at all.
    let span = tracing::error_span!(
        "call",
        request_id = tracing::field::Empty,
        method = %req.method(),
        path = %req.uri().path(),
    );
    if let Some(id) = &id {
        span.record("request_id", id.as_str());
    }
    // Health probes and listings come every few seconds: only shard work is worth a line.
    // Heartbeats and GC's periodic listings: debug, so they don't fill an SD card.
    let routine = matches!(
        req.uri().path(),
        "/v1/info" | "/v1/objects" | protocol::INVENTORY_PATH
    );
    let started = Instant::now();
    let call = async move {
        let resp = next.run(req).await;
        let (status, elapsed_ms) = (resp.status().as_u16(), started.elapsed().as_millis() as u64);
        if routine {
            tracing::debug!(status, elapsed_ms, "call");
        } else {
            tracing::info!(status, elapsed_ms, "call");
        }
        resp
    };
    tracing::Instrument::instrument(call, span).await
}

/// The local address a connection arrived on, which a node's proof of the secret is
/// bound to (see [`cairn_common::auth`]).
#[derive(Clone, Copy, Debug)]
pub struct LocalAddr(pub Option<std::net::SocketAddr>);

impl Connected<IncomingStream<'_, NodelayListener>> for LocalAddr {
    fn connect_info(stream: IncomingStream<'_, NodelayListener>) -> Self {
        Self(stream.io().local_addr().ok())
    }
}

/// The node's TCP listener: accepted connections get `TCP_NODELAY` (a shard read's
/// last small write must not wait for an ack).
pub struct NodelayListener(pub TcpListener);

impl axum::serve::Listener for NodelayListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        let _ = io.set_nodelay(true);
        (io, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Largest body sent from memory (manifests, bucket markers) whose digest is checked.
const MAX_CLAIMED_BODY: usize = MAX_MANIFEST_LEN + 64 * 1024;

/// Refuses `/v1/` requests without a valid cluster credential (403, `x-cairn-error:
/// auth`): the tag must match, the nonce be new, the request be meant for this node
/// (only `GET /v1/info` may be sent to whoever answers), and the body be what the
/// credential says — a body sent from memory is read here and its SHA-256 checked, a
/// shard file (only on `PUT /v1/shards/...`) is checked block by block as it is written.
async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .to_string();
    let refuse = |e: AuthError| {
        tracing::warn!(method = %parts.method, path = %path_and_query, error = %e, "refused request");
        NodeError::Auth(e).into_response()
    };
    let verified = match state
        .key
        .verify(parts.method.as_str(), &path_and_query, |name| {
            parts.headers.get(name).and_then(|v| v.to_str().ok())
        }) {
        Ok(v) => v,
        Err(e) => return refuse(e),
    };
    let probe = parts.method == axum::http::Method::GET && parts.uri.path() == "/v1/info";
    let me = state.store.node_id().to_string();
    if verified.node != me && !(probe && verified.node == ANY_NODE) {
        return refuse(AuthError::WrongNode);
    }
    let body = match verified.body {
        BodyClaim::Shard => {
            let shard_put = parts.method == axum::http::Method::PUT
                && parts.uri.path().starts_with("/v1/shards/")
                && !parts.uri.path().ends_with("/header");
            if !shard_put {
                return refuse(AuthError::BadBody);
            }
            body
        }
        claim => {
            let bytes = match axum::body::to_bytes(body, MAX_CLAIMED_BODY).await {
                Ok(b) => b,
                Err(_) => return refuse(AuthError::BadBody),
            };
            if !claim.matches(&bytes) {
                return refuse(AuthError::BadBody);
            }
            Body::from(bytes)
        }
    };
    // Last, so a refused request does not use up its nonce.
    if let Err(e) = state.replays.admit(&verified) {
        return refuse(e);
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Refuses `/metrics` without `Authorization: Bearer <admin token>` (403).
async fn require_admin_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok = given.len() == state.admin_token.len()
        && bool::from(subtle::ConstantTimeEq::ct_eq(
            given.as_bytes(),
            state.admin_token.as_bytes(),
        ));
    if ok {
        next.run(req).await
    } else {
        NodeError::Auth(AuthError::Missing).into_response()
    }
}

/// Runs a blocking store operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    op: impl FnOnce(&Store) -> std::io::Result<T> + Send + 'static,
) -> Result<T, NodeError> {
    let store = state.store.clone();
    Ok(tokio::task::spawn_blocking(move || op(&store))
        .await
        .map_err(|e| NodeError::Internal(format!("store task: {e}")))??)
}

fn parse_addr(object: &str, segment: &str, index: &str) -> Result<ShardAddr, NodeError> {
    Ok(ShardAddr {
        object: parse_object(object)?,
        segment: segment
            .parse()
            .map_err(|_| NodeError::BadRequest(format!("bad segment {segment:?}")))?,
        index: index
            .parse()
            .map_err(|_| NodeError::BadRequest(format!("bad shard index {index:?}")))?,
    })
}

fn parse_object(object: &str) -> Result<ObjectId, NodeError> {
    object
        .parse()
        .map_err(|e: cairn_common::ids::IdParseError| NodeError::BadRequest(e.to_string()))
}

/// The value of `name` in a query string, if present.
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn query_u64(query: Option<&str>, name: &str) -> Result<Option<u64>, NodeError> {
    query_param(query, name)
        .map(|v| {
            v.parse()
                .map_err(|_| NodeError::BadRequest(format!("bad {name}={v:?}")))
        })
        .transpose()
}

async fn put_shard(
    State(state): State<AppState>,
    Path((object, segment, index)): Path<(String, String, String)>,
    mut req: Request,
) -> Result<Response, NodeError> {
    let addr = parse_addr(&object, &segment, &index)?;
    let headers = req.headers();
    let length = |name| -> Result<Option<u64>, NodeError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| NodeError::BadRequest(format!("bad {name}")))
            })
            .transpose()
    };
    let raw = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(SHARD_UPGRADE.as_bytes()));
    if !raw {
        let declared = length(header::CONTENT_LENGTH.as_str())?;
        let fault = state.store.faults().roll_write(declared);
        let body = BodySource::new(req.into_body());
        match store_shard(&state, addr, declared, "http", body, fault).await {
            Ok(_) => Ok(StatusCode::CREATED.into_response()),
            Err(NodeError::Injected(InjectedFailure::Reset)) => Ok(dropped_connection()),
            // The body may be partly unread: the server closes this connection after the
            // answer, and says so, or the client would reuse it and have its next
            // request fail on a closed socket.
            Err(e) => {
                let mut resp = e.into_response();
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                Ok(resp)
            }
        }
    } else {
        let declared = length(SHARD_LENGTH_HEADER)?
            .ok_or_else(|| NodeError::BadRequest(format!("{SHARD_LENGTH_HEADER} missing")))?;
        let fault = state.store.faults().roll_write(Some(declared));
        let upgrade = hyper::upgrade::on(&mut req);
        // The upload runs once this 101 answer is out, on the call's span.
        let uploads = state.uploads.clone();
        uploads.spawn(tracing::Instrument::instrument(
            raw_upload(state, addr, declared, upgrade, fault),
            tracing::Span::current(),
        ));
        let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static(SHARD_UPGRADE));
        Ok(resp)
    }
}

/// A response that never reaches the client: its body fails before its first byte, so
/// the server drops the connection without sending even the status line (an injected
/// connection reset; unread request bytes make the kernel answer with a RST).
fn dropped_connection() -> Response {
    let body = futures::stream::once(std::future::ready(Err::<Bytes, _>(std::io::Error::other(
        "injected fault: connection reset",
    ))));
    (StatusCode::INTERNAL_SERVER_ERROR, Body::from_stream(body)).into_response()
}

/// The rest of a raw upload, on the upgraded connection: store the shard, answer its
/// outcome line, close.
async fn raw_upload(
    state: AppState,
    addr: ShardAddr,
    declared: u64,
    upgrade: OnUpgrade,
    fault: Option<WriteFault>,
) {
    let mut io = match upgrade.await {
        Ok(io) => TokioIo::new(io),
        Err(e) => {
            tracing::info!(error = %e, "raw shard upload: upgrade failed");
            return;
        }
    };
    let result = store_shard(
        &state,
        addr,
        Some(declared),
        "raw",
        StreamSource(&mut io),
        fault,
    )
    .await;
    if let Err(NodeError::Injected(InjectedFailure::Reset)) = result {
        // Dropping the connection with the rest of the file unread sends a RST.
        return;
    }
    let (status, kind) = match &result {
        Ok(_) => (StatusCode::CREATED, UploadOutcome::STORED),
        Err(e) => e.status_and_kind(),
    };
    let outcome = UploadOutcome {
        status: status.as_u16(),
        kind: kind.into(),
    };
    let sent = async {
        io.write_all(outcome.to_line().as_bytes()).await?;
        io.shutdown().await
    };
    if let Err(e) = sent.await {
        tracing::info!(error = %e, "raw shard upload: could not send the outcome");
    }
}

/// Stores one shard from `src` (come over `transport`), with metrics and a log line for
/// the outcome. An injected `fault` fails it as the fault says.
async fn store_shard<S: ShardSource>(
    state: &AppState,
    addr: ShardAddr,
    declared_len: Option<u64>,
    transport: &'static str,
    src: S,
    fault: Option<WriteFault>,
) -> Result<u64, NodeError> {
    let start = Instant::now();
    let src = Idle::new(src, state.idle_timeout);
    let (store, key) = (state.store.clone(), &state.shard_key);
    let result = match fault {
        None => write_shard(store, key, addr, declared_len, src).await,
        // Refused before a byte of the body is read, as a full disk found at once.
        Some(WriteFault::DiskFull) => Err(faults::injected_disk_full()),
        Some(f) => write_shard(store, key, addr, declared_len, Faulty::new(src, f)).await,
    };
    match &result {
        Ok(bytes) => {
            m::write_done(transport, "ok", *bytes, start.elapsed());
            m::shards(state.store.shard_count());
            state.scrub.forget(&addr);
            tracing::debug!(object = %addr.object, segment = addr.segment, index = addr.index, bytes, "stored shard");
        }
        Err(e) => {
            m::write_done(transport, e.metric_label(), 0, start.elapsed());
            tracing::info!(object = %addr.object, segment = addr.segment, index = addr.index, error = %e, "shard write refused");
        }
    }
    result
}

async fn get_shard(
    State(state): State<AppState>,
    Path((object, segment, index)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, NodeError> {
    let addr = parse_addr(&object, &segment, &index)?;
    let from = query_u64(query.as_deref(), "from")?;
    let count = query_u64(query.as_deref(), "count")?;
    let start = Instant::now();
    let opened = read_blocks(state.store.clone(), state.scrub.clone(), addr, from, count).await;
    m::read_started(
        opened
            .as_ref()
            .map(|_| "ok")
            .unwrap_or_else(|e| e.metric_label()),
        start.elapsed(),
    );
    let blocks = opened?;
    let first = futures::stream::once(std::future::ready(Ok::<_, std::io::Error>(blocks.first)));
    let rest = futures::stream::unfold(blocks.rest, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let body = Body::from_stream(futures::StreamExt::chain(first, rest));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(blocks.content_len),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

async fn get_header(
    State(state): State<AppState>,
    Path((object, segment, index)): Path<(String, String, String)>,
) -> Result<Response, NodeError> {
    let addr = parse_addr(&object, &segment, &index)?;
    let bytes: Bytes = crate::read::read_header(
        state.store.clone(),
        state.shard_key.clone(),
        state.scrub.clone(),
        addr,
    )
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn delete_shard(
    State(state): State<AppState>,
    Path((object, segment, index)): Path<(String, String, String)>,
) -> Result<StatusCode, NodeError> {
    let addr = parse_addr(&object, &segment, &index)?;
    blocking(&state, move |store| {
        store.delete_shard(&addr)?;
        store.publish_space();
        Ok(())
    })
    .await?;
    m::shards(state.store.shard_count());
    state.scrub.forget(&addr);
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_object(
    State(state): State<AppState>,
    Path(object): Path<String>,
) -> Result<StatusCode, NodeError> {
    let object = parse_object(&object)?;
    let removed = blocking(&state, move |store| {
        let removed = store.delete_object(&object)?;
        store.publish_space();
        Ok(removed)
    })
    .await?;
    m::shards(state.store.shard_count());
    state.scrub.forget_object(&object);
    tracing::debug!(%object, removed, "deleted object");
    Ok(StatusCode::NO_CONTENT)
}

async fn list_objects(State(state): State<AppState>) -> Result<Json<ObjectList>, NodeError> {
    let objects = blocking(&state, move |store| store.list_objects()).await?;
    Ok(Json(ObjectList { objects }))
}

async fn put_manifest(
    State(state): State<AppState>,
    Path(object): Path<String>,
    body: Body,
) -> Result<StatusCode, NodeError> {
    let object = parse_object(&object)?;
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_LEN)
        .await
        .map_err(|e| NodeError::BadRequest(format!("manifest body: {e}")))?;
    blocking(&state, move |store| store.put_manifest(&object, &bytes)).await?;
    Ok(StatusCode::CREATED)
}

async fn delete_manifest(
    State(state): State<AppState>,
    Path(object): Path<String>,
) -> Result<StatusCode, NodeError> {
    let object = parse_object(&object)?;
    blocking(&state, move |store| store.delete_manifest(&object)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_manifests(State(state): State<AppState>) -> Result<Json<ManifestList>, NodeError> {
    let (manifests, buckets) = blocking(&state, |store| {
        Ok((store.list_manifests()?, store.list_buckets()?))
    })
    .await?;
    Ok(Json(ManifestList { manifests, buckets }))
}

fn marker_name(name: &str) -> Result<String, NodeError> {
    if protocol::valid_marker_name(name) {
        Ok(name.to_string())
    } else {
        Err(NodeError::BadRequest(format!("bad bucket name {name:?}")))
    }
}

async fn put_bucket(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<StatusCode, NodeError> {
    let name = marker_name(&name)?;
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|e| NodeError::BadRequest(format!("bucket marker body: {e}")))?;
    blocking(&state, move |store| store.put_bucket(&name, &bytes)).await?;
    Ok(StatusCode::CREATED)
}

async fn delete_bucket(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, NodeError> {
    let name = marker_name(&name)?;
    blocking(&state, move |store| store.delete_bucket(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn inventory(State(state): State<AppState>) -> Result<Json<Inventory>, NodeError> {
    let inventory = blocking(&state, move |store| store.inventory()).await?;
    Ok(Json(inventory))
}

async fn info(
    State(state): State<AppState>,
    local: Option<axum::Extension<ConnectInfo<LocalAddr>>>,
    RawQuery(query): RawQuery,
) -> Result<Json<NodeInfo>, NodeError> {
    let challenge = query_param(query.as_deref(), "challenge").unwrap_or("");
    let seen_at = local
        .and_then(|c| (c.0).0 .0)
        .map(|a| canonical(a).to_string())
        .unwrap_or_default();
    let node_id = state.store.node_id();
    let (disk, space) = blocking(&state, move |store| {
        Ok((store.disk_space()?, store.reported_space()?))
    })
    .await?;
    m::disk(disk);
    m::space(space);
    Ok(Json(NodeInfo {
        node_id,
        protocol: PROTOCOL_VERSION,
        capacity_bytes: space.capacity,
        free_bytes: space.free,
        shards: state.store.shard_count(),
        proof: state.key.prove(challenge, &node_id.to_string(), &seen_at),
        seen_at,
        bad_shards: state
            .scrub
            .bad_shards()
            .into_iter()
            .take(MAX_REPORTED_BAD)
            .collect(),
    }))
}

/// `addr` with an IPv4-mapped IPv6 address written as IPv4 (as the gateway sees it).
fn canonical(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_parse() {
        let q = Some("from=3&count=10&flag");
        assert_eq!(query_u64(q, "from").expect("from"), Some(3));
        assert_eq!(query_u64(q, "count").expect("count"), Some(10));
        assert_eq!(query_u64(q, "missing").expect("missing"), None);
        assert_eq!(query_param(q, "flag"), Some(""));
        assert!(query_u64(Some("from=x"), "from").is_err());
        assert_eq!(query_u64(None, "from").expect("none"), None);
    }
}
