//! Injected faults (`CAIRN_NODE_FAULTS`): every kind of write failure on both transports
//! stores nothing and leaves no temp file; a node can lie about its free space.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_common::auth::ClusterKey;
use cairn_common::ids::ObjectId;
use cairn_common::protocol::{UploadOutcome, SHARD_LENGTH_HEADER, SHARD_UPGRADE};
use cairn_common::shard::Layout;
use cairn_node::faults::Faults;
use cairn_node::NodeConfig;
use common::{error_kind, ProcNode, TestNode, TestShard, SECRET};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 2+1, 64 KiB blocks: a shard file of about 1.2 MiB.
fn shard(index: u8) -> TestShard {
    let layout = Layout::new(2, 1, 64 * 1024, 2 * 64 * 1024 * 9 + 77).expect("layout");
    TestShard::new(ObjectId::random(), 0, index, layout)
}

async fn node_with_faults(dir: &std::path::Path, spec: &str) -> TestNode {
    let mut cfg = NodeConfig::new(dir, ClusterKey::new(SECRET));
    cfg.faults = Faults::parse(spec).expect("faults");
    TestNode::start_with(cfg).await
}

/// Nothing of `s` was kept: no shard file, no temp file.
async fn nothing_stored(node: &TestNode, s: &TestShard) {
    let h = &s.header;
    assert!(!node
        .shard_file(&h.object_id, h.segment, h.shard_index)
        .exists());
    assert!(
        node.tmp_emptied().await,
        "temp files left: {:?}",
        node.tmp_entries()
    );
}

#[tokio::test]
async fn failing_plain_puts_fail_in_every_way_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node_with_faults(dir.path(), "write-fail=1").await;
    let http = reqwest::Client::new();
    let mut seen = BTreeMap::new();
    for _ in 0..30 {
        let s = shard(0);
        let outcome = match node
            .signed(&http, Method::PUT, &s.path())
            .body(s.file())
            .send()
            .await
        {
            // Dropped without an answer: not even a status line came.
            Err(e) => {
                assert!(!e.is_status(), "{e}");
                "reset".to_string()
            }
            Ok(r) => {
                let kind = error_kind(&r).unwrap_or_else(|| format!("none ({})", r.status()));
                match (r.status(), kind.as_str()) {
                    (StatusCode::INSUFFICIENT_STORAGE, "disk-full")
                    | (StatusCode::INTERNAL_SERVER_ERROR, "internal") => {}
                    other => panic!("unexpected answer {other:?}"),
                }
                kind
            }
        };
        *seen.entry(outcome).or_insert(0) += 1;
        nothing_stored(&node, &s).await;
    }
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        ["disk-full", "internal", "reset"],
        "{seen:?}"
    );
    node.stop().await;
}

/// Sends `s` as a raw upload: the node's outcome line (None if it closed without one).
async fn raw_put(node: &TestNode, s: &TestShard) -> Option<UploadOutcome> {
    let file = s.file();
    let path = s.path();
    let credential = common::raw_credential(node.addr, "PUT", &path).await;
    let mut sock = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: {SHARD_UPGRADE}\r\n\
         {SHARD_LENGTH_HEADER}: {}\r\n{credential}\r\n",
        file.len()
    );
    sock.write_all(head.as_bytes()).await.expect("head");
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        answer.push(sock.read_u8().await.expect("answer head"));
    }
    assert!(answer.starts_with(b"HTTP/1.1 101 "), "{answer:?}");
    let _ = sock.write_all(&file).await;
    let _ = sock.shutdown().await;
    let mut line = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut line))
        .await
        .expect("the node answers or closes in time");
    if line.is_empty() {
        None
    } else {
        Some(UploadOutcome::parse(&line).unwrap_or_else(|| panic!("bad outcome {line:?}")))
    }
}

#[tokio::test]
async fn failing_raw_uploads_fail_in_every_way_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node_with_faults(dir.path(), "write-fail=1").await;
    let mut seen = BTreeMap::new();
    for _ in 0..30 {
        let s = shard(1);
        let outcome = match raw_put(&node, &s).await {
            None => "reset".to_string(),
            Some(o) => {
                match (o.status, o.kind.as_str()) {
                    (507, "disk-full") | (500, "internal") => {}
                    other => panic!("unexpected outcome {other:?}"),
                }
                o.kind
            }
        };
        *seen.entry(outcome).or_insert(0) += 1;
        nothing_stored(&node, &s).await;
    }
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        ["disk-full", "internal", "reset"],
        "{seen:?}"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_probability_of_zero_fails_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node_with_faults(dir.path(), "write-fail=0").await;
    let http = reqwest::Client::new();
    for i in 0..10u8 {
        let s = shard(i % 3);
        if i % 2 == 0 {
            let r = node
                .signed(&http, Method::PUT, &s.path())
                .body(s.file())
                .send()
                .await
                .expect("put");
            assert_eq!(r.status(), StatusCode::CREATED);
        } else {
            assert!(raw_put(&node, &s).await.expect("outcome").is_stored());
        }
    }
    node.stop().await;
}

#[tokio::test]
async fn a_node_can_lie_about_its_free_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = ProcNode::spawn(
        &[],
        dir.path(),
        &[],
        &[
            ("CAIRN_NODE_FAULTS", "report-free=12345"),
            ("CAIRN_NODE_CAPACITY", "64MiB"),
        ],
        dir.path().join("node.log"),
    )
    .await;
    let http = reqwest::Client::new();
    let info = node.info(&http).await;
    assert_eq!(info.free_bytes, 12345);
    assert_eq!(info.capacity_bytes, 64 << 20);
    assert_eq!(
        common::metric(node.addr, &http, "cairn_node_free_bytes").await,
        Some(12345.0)
    );
    assert_eq!(
        common::metric(node.addr, &http, "cairn_node_capacity_bytes").await,
        Some((64u64 << 20) as f64)
    );
    // The truth is still enforced: 64 MiB of room, whatever is reported.
    let s = shard(0);
    let r = node
        .signed(&http, Method::PUT, &s.path())
        .body(s.file())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(node.info(&http).await.free_bytes, 12345);
    let log = node.log_text();
    assert!(
        log.contains("WARN") && log.contains("injecting faults"),
        "{log}"
    );
}

#[tokio::test]
async fn a_bad_fault_spec_stops_the_node_from_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn-node"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env("CAIRN_CLUSTER_SECRET", SECRET)
        .env("CAIRN_NODE_FAULTS", "write-fail=2")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("write-fail"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
