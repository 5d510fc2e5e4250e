//! Whether the cluster is back to full redundancy, from the gateway's metrics.

use std::time::{Duration, Instant};

use anyhow::Result;
use cairn_benches::cluster::Cluster;

use crate::args::{Args, MIB};
use crate::corrupt::Corrupted;

/// The value of an unlabelled sample `name` in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Segments repair re-striped (`cairn_repair_segments_total{result="ok"}`) and repair
/// attempts of any result, from the gateway's `/_cairn/metrics`.
pub async fn repair_counts(cluster: &Cluster) -> Option<(u64, u64)> {
    let (200, text) = cluster.gateway_get("/_cairn/metrics").await.ok()? else {
        return None;
    };
    let mut ok = 0.0;
    let mut all = 0.0;
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("cairn_repair_segments_total{") {
            let v: f64 = rest
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            all += v;
            if rest.contains("result=\"ok\"") {
                ok += v;
            }
        }
    }
    Some((ok as u64, all as u64))
}

/// Node `i` as the gateway sees it (`/_cairn/nodes`), for the report.
pub async fn node_view(cluster: &Cluster, i: usize) -> Option<String> {
    let (200, text) = cluster.gateway_get("/_cairn/nodes").await.ok()? else {
        return None;
    };
    let nodes: serde_json::Value = serde_json::from_str(&text).ok()?;
    let addr = cluster.nodes.get(i)?.addr.to_string();
    let n = nodes
        .as_array()?
        .iter()
        .find(|n| n["addr"].as_str() == Some(&addr))?;
    let mib = |v: &serde_json::Value| {
        v.as_u64().map_or_else(
            || "?".to_string(),
            |b| format!("{:.1} MiB", b as f64 / MIB as f64),
        )
    };
    Some(format!(
        "{}, capacity {}, free {}, {} shards",
        n["state"].as_str().unwrap_or("?"),
        mib(&n["capacity_bytes"]),
        mib(&n["free_bytes"]),
        n["shards"].as_u64().map_or("?".into(), |s| s.to_string())
    ))
}

/// Waits until the cluster is back to full redundancy: every node up, no corrupted shard
/// still referenced, `cairn_repair_queue_segments` 0, and no repair attempt for two repair
/// intervals (so at least one whole pass found nothing to do). Returns the seconds from
/// `since` to the start of that quiet time, or `None` after `timeout`.
pub async fn wait_full_redundancy(
    cluster: &mut Cluster,
    args: &Args,
    corrupted: &[Corrupted],
    since: Instant,
    timeout: Duration,
) -> Result<Option<f64>> {
    // The gateway runs a repair pass every --repair-after / 2, within 1 s..30 s.
    let every = (args.repair_after / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let quiet_needed = every * 2 + Duration::from_millis(500);
    let want_up = cluster.nodes.len() as f64;
    let mut quiet: Option<(Instant, u64)> = None;
    loop {
        cluster.check_alive()?;
        let text = match cluster.gateway_get("/_cairn/metrics").await {
            Ok((200, t)) => t,
            _ => String::new(),
        };
        let up = metric(&text, "cairn_nodes_up");
        let any_down = text.lines().any(|l| {
            l.starts_with("cairn_node_up{")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(0.0)
        });
        let queue = metric(&text, "cairn_repair_queue_segments");
        let attempts = repair_counts(cluster).await.map(|c| c.1);
        let unrepaired = corrupted
            .iter()
            .filter(|c| c.still_referenced(cluster))
            .count();
        let full = up == Some(want_up) && !any_down && queue == Some(0.0) && unrepaired == 0;
        let state = format!(
            "nodes up {up:?} (any down: {any_down}), repair queue {queue:?}, corrupt shards \
             still referenced {unrepaired}, repair attempts {attempts:?}"
        );
        match (full, attempts, quiet) {
            (true, Some(a), Some((start, seen))) if a == seen => {
                if start.elapsed() >= quiet_needed {
                    return Ok(Some(start.duration_since(since).as_secs_f64()));
                }
            }
            (true, Some(a), _) => quiet = Some((Instant::now(), a)),
            _ => quiet = None,
        }
        if since.elapsed() >= timeout {
            eprintln!("NOT BACK TO FULL REDUNDANCY after {timeout:?}: {state}");
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
