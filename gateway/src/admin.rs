//! Operational endpoints beside the S3 API. Read-only ones are open: health, Prometheus
//! metrics, Prometheus HTTP service discovery (`/sd/...`: two-letter names are not valid
//! buckets) and the node list. The one that changes something, declaring a node gone,
//! needs a SigV4 signature with the S3 credentials, like any S3 request.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use cairn_common::ids::NodeId;
use cairn_common::request_id::RequestId;
use serde::Serialize;

use crate::error::S3Error;
use crate::s3::sigv4;
use crate::AppState;

#[derive(Serialize)]
struct SdGroup {
    targets: Vec<String>,
    labels: std::collections::BTreeMap<&'static str, String>,
}

/// `GET /sd/prometheus`: every known node and this gateway as Prometheus HTTP SD targets,
/// so Prometheus finds nodes without typed addresses.
pub async fn prometheus_sd(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut groups = Vec::new();
    for n in state.service.cluster.snapshot() {
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

/// `GET /_cairn/nodes` (`_` cannot start a bucket name, so this never shadows one): the gateway's view of the storage nodes.
pub async fn nodes(State(state): State<AppState>) -> Response {
    let view: Vec<NodeView> = state
        .service
        .cluster
        .snapshot()
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
        sigv4::authenticate(&state.keys, method.as_str(), path_and_query, &headers)?;
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
