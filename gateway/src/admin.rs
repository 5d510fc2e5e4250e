//! Unauthenticated operational endpoints beside the S3 API: health, Prometheus metrics,
//! Prometheus HTTP service discovery (`/sd/...`: two-letter names are not valid buckets),
//! and the node list.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

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
            state: match (n.up, n.replaced) {
                (true, _) => "up",
                (false, true) => "replaced",
                (false, false) => "down",
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
