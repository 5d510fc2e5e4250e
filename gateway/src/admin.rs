//! Operational endpoints beside the S3 API, all under `/_cairn/` (a bucket name cannot
//! contain `_`, so no bucket is ever shadowed). `/_cairn/health` is open and says only
//! `ok`. Metrics, Prometheus service discovery and the node list need credentials: the
//! admin token as `Authorization: Bearer <token>` (what Prometheus sends with
//! `authorization: {credentials: ...}`), or a SigV4 signature with the S3 credentials.
//! Declaring a node gone changes the cluster, so it takes a SigV4 signature only.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use cairn_common::ids::NodeId;
use cairn_common::request_id::RequestId;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::S3Error;
use crate::s3::sigv4;
use crate::AppState;

/// The bearer token that opens the read-only admin routes.
pub struct AdminToken {
    /// SHA-256 of the token: comparing digests takes the same time whatever the length
    /// or content of a guess.
    digest: [u8; 32],
}

impl AdminToken {
    /// Accepts `token`.
    pub fn new(token: &str) -> Self {
        Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether `given` is the token, in constant time.
    pub fn matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(digest.ct_eq(&self.digest))
    }
}

/// Checks an admin request's credentials: the bearer token, else SigV4.
fn authorize(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), S3Error> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    if let Some(token) = bearer {
        return if state.admin_token.matches(token) {
            Ok(())
        } else {
            Err(S3Error::AccessDenied)
        };
    }
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    sigv4::authenticate_in(
        &state.keys,
        &state.region,
        method.as_str(),
        path_and_query,
        headers,
    )
    .map(|_| ())
}

/// The peer address the accept loop recorded, if any.
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// Runs `handler` if the request carries admin credentials, else answers the S3 error,
/// after counting the failure against its source (and holding the answer back as the
/// S3 routes do).
async fn guarded(
    state: &AppState,
    peer: Peer,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    handler: impl FnOnce() -> Response,
) -> Response {
    match authorize(state, method, uri, headers) {
        Ok(()) => handler(),
        Err(e) => {
            let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
            let peer = peer.map(|p| p.0 .0.ip());
            state.keys.refuse(peer, path_and_query, headers, &e).await;
            let request_id = RequestId::generate().to_string();
            e.to_response(uri.path(), &request_id, *method == Method::HEAD)
        }
    }
}

/// `GET /_cairn/health`: `ok` while the gateway serves (no credentials).
pub async fn health() -> &'static str {
    "ok"
}

/// `GET /_cairn/metrics`: the gateway's Prometheus metrics (admin credentials).
pub async fn metrics(
    State(state): State<AppState>,
    peer: Peer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    guarded(&state, peer, &method, &uri, &headers, || {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            state.metrics.render(),
        )
            .into_response()
    })
    .await
}

#[derive(Serialize)]
struct SdGroup {
    targets: Vec<String>,
    labels: std::collections::BTreeMap<&'static str, String>,
}

/// `GET /_cairn/sd/prometheus` (admin credentials): every known node and this gateway as
/// Prometheus HTTP SD targets, so Prometheus finds nodes without typed addresses. The
/// gateway's target carries `__metrics_path__`, since its metrics are at `/_cairn/metrics`.
pub async fn prometheus_sd(
    State(state): State<AppState>,
    peer: Peer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    guarded(&state, peer, &method, &uri, &headers, || {
        sd_groups(&state, &headers)
    })
    .await
}

fn sd_groups(state: &AppState, headers: &HeaderMap) -> Response {
    let mut groups = Vec::new();
    for n in state.service.nodes() {
        if n.addr.is_empty() {
            continue;
        }
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("job", "cairn-node".to_string());
        labels.insert("cairn_node_id", n.id.to_string());
        groups.push(SdGroup {
            targets: vec![n.addr.clone()],
            labels,
        });
    }
    let me = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(String::from)
        .unwrap_or_else(|| state.listen.to_string());
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("job", "cairn-gateway".to_string());
    labels.insert("__metrics_path__", "/_cairn/metrics".to_string());
    groups.push(SdGroup {
        targets: vec![me],
        labels,
    });
    axum::Json(groups).into_response()
}

#[derive(Serialize)]
struct NodeView {
    id: String,
    addr: String,
    state: &'static str,
    last_seen_ms_ago: Option<u128>,
    down_for_ms: Option<u128>,
    bad_shards: usize,
    capacity_bytes: Option<u64>,
    free_bytes: Option<u64>,
    shards: Option<u64>,
}

/// `GET /_cairn/nodes` (admin credentials): the gateway's view of the storage nodes.
pub async fn nodes(
    State(state): State<AppState>,
    peer: Peer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    guarded(&state, peer, &method, &uri, &headers, || node_list(&state)).await
}

fn node_list(state: &AppState) -> Response {
    let view: Vec<NodeView> = state
        .service
        .nodes()
        .into_iter()
        .map(|n| NodeView {
            id: n.id.to_string(),
            addr: n.addr.clone(),
            state: match (n.gone, n.up, n.replaced) {
                (true, _, _) => "gone",
                (false, true, _) => "up",
                (false, false, true) => "replaced",
                (false, false, false) => "down",
            },
            last_seen_ms_ago: n.last_seen.map(|t| t.elapsed().as_millis()),
            down_for_ms: n.down_since.map(|t| t.elapsed().as_millis()),
            bad_shards: n.info.as_ref().map_or(0, |i| i.bad_shards.len()),
            capacity_bytes: n.info.as_ref().map(|i| i.capacity_bytes),
            free_bytes: n.info.as_ref().map(|i| i.free_bytes),
            shards: n.info.as_ref().map(|i| i.shards),
        })
        .collect();
    axum::Json(view).into_response()
}

#[derive(Serialize)]
struct GoneView {
    id: String,
    /// False when the node had already been declared gone.
    newly_declared: bool,
}

/// `DELETE /_cairn/nodes/{id}` (SigV4-signed with the S3 credentials): declares a storage
/// node gone for good, without waiting for `--repair-after`. It gets no new shards, and
/// repair rebuilds its shards on the other nodes now (reading from it while it is still
/// up, so draining a healthy node never lowers redundancy). Kept in the catalog across
/// restarts; a wiped disk comes back under a new id and is welcome again.
pub async fn declare_gone(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let request_id = RequestId::generate().to_string();
    let path = uri.path().to_string();
    let result = async {
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        sigv4::authenticate_in(
            &state.keys,
            &state.region,
            method.as_str(),
            path_and_query,
            &headers,
        )?;
        let id: NodeId = id.parse().map_err(|e: cairn_common::ids::IdParseError| {
            S3Error::InvalidArgument(e.to_string())
        })?;
        let newly_declared = state.service.declare_node_gone(id).await?;
        Ok::<_, S3Error>(GoneView {
            id: id.to_string(),
            newly_declared,
        })
    }
    .await;
    match result {
        Ok(view) => axum::Json(view).into_response(),
        Err(e) => e.to_response(&path, &request_id, false),
    }
}
