//! Reading every key back and judging it against what the clients were told.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use aws_sdk_s3::Client;
use bytes::Bytes;
use cairn_benches::cluster::Cluster;
use sha2::{Digest, Sha256};

use crate::clients::{put, BUCKET};
use crate::model::{show, Content, Findings, KeyModel, Outcome, Shared, State};

/// Tampers with two keys without telling the model and checks that `verify` reports
/// exactly one lost and one partial visible object.
pub async fn self_check(shared: &Shared) -> Result<()> {
    let (lose, sneak) = {
        let m = shared.model.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = m.iter().filter(|(_, k)| k.acked.is_some()).map(|(n, _)| n);
        let lose = present.next().cloned();
        let sneak = m
            .iter()
            .find(|(n, k)| Some(*n) != lose.as_ref() && !k.sent.is_empty())
            .map(|(n, k)| (n.clone(), k.sent[0]));
        (lose, sneak)
    };
    let (Some(lose), Some((sneak, _))) = (lose, sneak) else {
        bail!("self-check: not enough objects to tamper with");
    };
    shared
        .client
        .delete_object()
        .bucket(BUCKET)
        .key(&lose)
        .send()
        .await
        .map_err(|e| anyhow!("self-check delete: {e}"))?;
    // A version "sent but never acknowledged": recorded as sent, written behind the model.
    let data = b"self-check: never acknowledged".to_vec();
    let content = Content {
        size: data.len() as u64,
        sha: Sha256::digest(&data).into(),
    };
    shared.with_key(&sneak, |k| k.sent.push(content));
    if put(shared.client.clone(), sneak.clone(), Bytes::from(data), 0).await != Outcome::Acked {
        bail!("self-check: PUT of {sneak} failed");
    }
    println!(
        "self-check: deleted {lose} and wrote an unacknowledged version of {sneak} behind the \
         clients' backs; the checker must report both"
    );
    let f = verify(shared, None).await?;
    if (f.lost, f.partial, f.corrupt) != (1, 1, 0) {
        bail!("self-check: the checker missed tampering: {f:?}");
    }
    println!(
        "self-check: a deleted acknowledged object and an unacknowledged version were both caught"
    );
    Ok(())
}

/// What a key holds now, read in full.
pub enum Seen {
    State(State),
    /// The read failed (not a 404).
    Unreadable(String),
}

pub async fn read_key(client: &Client, key: &str) -> Seen {
    let out = match client.get_object().bucket(BUCKET).key(key).send().await {
        Ok(o) => o,
        Err(e) => {
            if e.raw_response().map(|r| r.status().as_u16()) == Some(404) {
                return Seen::State(None);
            }
            return Seen::Unreadable(format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        }
    };
    let mut body = out.body;
    let mut sha = Sha256::new();
    let mut size = 0u64;
    loop {
        match body.next().await {
            None => break,
            Some(Ok(b)) => {
                size += b.len() as u64;
                sha.update(&b);
            }
            Some(Err(e)) => return Seen::Unreadable(format!("body broke after {size} B: {e}")),
        }
    }
    Seen::State(Some(Content {
        size,
        sha: sha.finalize().into(),
    }))
}

/// An SDK error's first line (their Display can run to kilobytes).
pub fn first_line(e: &str) -> &str {
    let end = e.find(" (ServiceError").unwrap_or(e.len()).min(300);
    e.get(..end).unwrap_or(e)
}

/// Every key in the listing, with its size.
pub async fn list_all(client: &Client) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(BUCKET)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            anyhow!(
                "ListObjectsV2: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        })?;
        for o in page.contents() {
            if let Some(k) = o.key() {
                out.insert(k.to_string(), o.size().unwrap_or(0) as u64);
            }
        }
    }
    Ok(out)
}

/// Reads every key back and compares it with the model, then settles the model on what is
/// there. With `node_down` (a second pass, the model already settled) any failure means an
/// object was acknowledged with less redundancy than promised.
pub async fn verify(shared: &Shared, node_down: Option<usize>) -> Result<Findings> {
    let listed = list_all(&shared.client).await?;
    let keys = keys_to_check(shared, &listed);
    let mut f = Findings::default();
    let tag = node_down.map_or(String::new(), |n| format!(" (node{n} down)"));
    for key in keys {
        let seen = read_patiently(&shared.client, &key, &tag, &mut f).await;
        f.checked += 1;
        let mut m = shared.model.lock().unwrap_or_else(|p| p.into_inner());
        let k = m.entry(key.clone()).or_default();
        match seen {
            Seen::Unreadable(e) => {
                f.lost += 1;
                f.unreadable += 1;
                eprintln!(
                    "LOST{tag}: {key} unreadable: {}; acknowledged: {} at {:?}",
                    first_line(&e),
                    show(&k.acked),
                    k.acked_at
                );
            }
            Seen::State(state) => judge(&key, k, state, listed.get(&key).copied(), &tag, &mut f),
        }
    }
    Ok(f)
}

/// Reads everything back with node `n` down (SIGKILLed), then starts it again and waits
/// until the gateway sees every node up.
pub async fn verify_with_node_down(
    cluster: &mut Cluster,
    shared: &Shared,
    n: usize,
    ready: Duration,
) -> Result<Findings> {
    cluster.nodes[n].kill()?;
    let found = verify(shared, Some(n)).await?;
    cluster.nodes[n].restart(ready).await?;
    cluster.wait_nodes_up(ready).await?;
    Ok(found)
}

/// Every key of the model and every listed key it does not know, sorted.
fn keys_to_check(shared: &Shared, listed: &BTreeMap<String, u64>) -> Vec<String> {
    let m = shared.model.lock().unwrap_or_else(|p| p.into_inner());
    let mut k: Vec<String> = m.keys().cloned().collect();
    k.extend(listed.keys().filter(|l| !m.contains_key(*l)).cloned());
    k.sort();
    k.dedup();
    k
}

/// Reads `key`; after a failure, reads it again for a few seconds before giving up,
/// counting a later success as `unavailable` in `f`.
async fn read_patiently(client: &Client, key: &str, tag: &str, f: &mut Findings) -> Seen {
    let mut seen = read_key(client, key).await;
    if let Seen::Unreadable(e) = &seen {
        // Give the gateway a few heartbeats to notice nodes are back before calling
        // the object lost.
        eprintln!("UNAVAILABLE{tag}: {key}: {}", first_line(e));
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            seen = read_key(client, key).await;
            if matches!(seen, Seen::State(_)) {
                f.unavailable += 1;
                break;
            }
        }
    }
    seen
}

/// Judges what `key` holds (`state`, listed with size `listed_as`) against its model `k`,
/// counts any problem in `f`, and settles the model on `state`.
fn judge(
    key: &str,
    k: &mut KeyModel,
    state: State,
    listed_as: Option<u64>,
    tag: &str,
    f: &mut Findings,
) {
    if listed_as != state.map(|c| c.size) {
        f.partial += 1;
        eprintln!(
            "LISTING{tag}: {key} listed as {listed_as:?} but reads as {}",
            show(&state)
        );
    }
    if k.allows(&state) {
        if state != k.acked {
            f.resolved_landed += 1;
        }
    } else {
        report_problem(key, k, state, tag, f);
    }
    // Carry on from what is there now, so each problem is counted once.
    k.acked = state;
    k.maybe.clear();
}

/// Counts and prints what is wrong with `state`, which `k` does not allow.
fn report_problem(key: &str, k: &KeyModel, state: State, tag: &str, f: &mut Findings) {
    match state {
        None => {
            f.lost += 1;
            eprintln!(
                "LOST{tag}: {key} is gone; acknowledged: {} at {:?} (round, s)",
                show(&k.acked),
                k.acked_at
            );
        }
        Some(c) if k.sent.contains(&c) => {
            f.partial += 1;
            eprintln!(
                "PARTIAL VISIBLE{tag}: {key} holds {c}, which was not acknowledged or was \
                 replaced; acknowledged: {}, in doubt: {:?}",
                show(&k.acked),
                k.maybe.iter().map(show).collect::<Vec<_>>()
            );
        }
        Some(c) => {
            f.corrupt += 1;
            eprintln!(
                "CORRUPT{tag}: {key} holds {c}, which no client sent; acknowledged: {}",
                show(&k.acked)
            );
        }
    }
}
