//! `--capacity`: what a node reports and the writes it refuses; and a real full file
//! system (a small tmpfs), before and in the middle of a shard's body.

mod common;

use std::time::Duration;

use cairn_common::auth::ClusterKey;
use cairn_common::ids::ObjectId;
use cairn_common::protocol::{self, UploadOutcome, SHARD_LENGTH_HEADER, SHARD_UPGRADE};
use cairn_common::shard::Layout;
use cairn_node::NodeConfig;
use common::{error_kind, info, metric, ProcNode, TestNode, TestShard, SECRET};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1 << 20;

/// 2+1, 256 KiB blocks: a shard file of about `mib` MiB.
fn shard_of(mib: u64, index: u8) -> TestShard {
    let layout = Layout::new(2, 1, 256 * 1024, 2 * mib * MIB).expect("layout");
    TestShard::new(ObjectId::random(), 0, index, layout)
}

/// Uploads `shard` as a raw upload; the node's outcome.
async fn raw_put(addr: std::net::SocketAddr, shard: &TestShard) -> UploadOutcome {
    let file = shard.file();
    let path = shard.path();
    let credential = common::raw_credential(addr, "PUT", &path).await;
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
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
    // The node may refuse part way and close: a failed write is fine, the outcome says why.
    let _ = sock.write_all(&file).await;
    let _ = sock.shutdown().await;
    // A node that refused early may reset the connection after its outcome line (our
    // unread bytes): what was read before the reset is kept in `line`.
    let mut line = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut line))
        .await
        .expect("outcome in time");
    UploadOutcome::parse(&line).unwrap_or_else(|| panic!("bad outcome {line:?}"))
}

async fn plain_put(
    http: &reqwest::Client,
    node: &TestNode,
    shard: &TestShard,
) -> Result<reqwest::Response, reqwest::Error> {
    node.signed(http, Method::PUT, &shard.path())
        .body(shard.file())
        .send()
        .await
}

#[tokio::test]
async fn capacity_caps_what_is_reported_and_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = NodeConfig::new(dir.path(), ClusterKey::new(SECRET));
    cfg.capacity = Some(10 * MIB);
    let node = TestNode::start_with(cfg.clone()).await;
    let http = reqwest::Client::new();
    let i = info(&node, &http).await;
    assert_eq!(i.capacity_bytes, 10 * MIB);
    assert_eq!(i.free_bytes, 10 * MIB);

    // 4 MiB over HTTP, 4 MiB raw: 8 of 10 MiB used (plus headers and crcs).
    let a = shard_of(4, 0);
    let b = shard_of(4, 1);
    let r = plain_put(&http, &node, &a).await.expect("put a");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(raw_put(node.addr, &b).await.is_stored());
    let used = (a.file().len() + b.file().len()) as u64;
    let manifest = b"{\"manifest\":1}".to_vec();
    let r = node
        .signed_body(
            &http,
            Method::PUT,
            &protocol::manifest_path(&a.header.object_id),
            manifest.clone(),
        )
        .send()
        .await
        .expect("manifest");
    assert_eq!(r.status(), StatusCode::CREATED);
    let used = used + manifest.len() as u64;
    let i = info(&node, &http).await;
    assert_eq!(i.free_bytes, 10 * MIB - used);
    assert_eq!(i.capacity_bytes, 10 * MIB);
    assert_eq!(
        metric(node.addr, &http, "cairn_node_capacity_bytes").await,
        Some((10 * MIB) as f64)
    );
    assert_eq!(
        metric(node.addr, &http, "cairn_node_free_bytes").await,
        Some((10 * MIB - used) as f64)
    );

    // Another 4 MiB does not fit: refused as a full disk on both transports, nothing kept.
    let c = shard_of(4, 2);
    let r = plain_put(&http, &node, &c).await.expect("put c");
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(error_kind(&r).as_deref(), Some("disk-full"));
    let out = raw_put(node.addr, &c).await;
    assert_eq!((out.status, out.kind.as_str()), (507, "disk-full"));
    assert!(!node.shard_file(&c.header.object_id, 0, 2).exists());
    assert!(node.tmp_emptied().await, "{:?}", node.tmp_entries());
    assert_eq!(info(&node, &http).await.free_bytes, 10 * MIB - used);
    // A small one still fits.
    let small = shard_of(1, 2);
    let r = plain_put(&http, &node, &small).await.expect("put small");
    assert_eq!(r.status(), StatusCode::CREATED);
    let used = used + small.file().len() as u64;

    // The count survives a restart (scanned from disk).
    node.stop().await;
    let node = TestNode::start_with(cfg).await;
    assert_eq!(info(&node, &http).await.free_bytes, 10 * MIB - used);
    // Deleting frees the room again; then the big shard fits.
    let r = node
        .signed(
            &http,
            Method::DELETE,
            &protocol::object_path(&a.header.object_id),
        )
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let used = used - a.file().len() as u64 - manifest.len() as u64;
    assert_eq!(info(&node, &http).await.free_bytes, 10 * MIB - used);
    assert!(raw_put(node.addr, &c).await.is_stored());
    let r = node
        .signed(&http, Method::DELETE, &b.path())
        .send()
        .await
        .expect("delete shard");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let used = used - b.file().len() as u64 + c.file().len() as u64;
    assert_eq!(info(&node, &http).await.free_bytes, 10 * MIB - used);
    node.stop().await;
}

#[test]
fn sizes_parse() {
    use cairn_node::parse_size;
    assert_eq!(parse_size("1048576"), Ok(MIB));
    assert_eq!(parse_size("40MiB"), Ok(40 * MIB));
    assert_eq!(parse_size("64GiB"), Ok(64 << 30));
    assert_eq!(parse_size("64G"), Ok(64 << 30));
    assert_eq!(parse_size("2TB"), Ok(2 << 40));
    assert_eq!(parse_size("512k"), Ok(512 << 10));
    assert!(parse_size("4 parsecs").is_err());
    assert!(parse_size("1.5G").is_err());
    assert!(parse_size("99999999999T").is_err());
}

/// A node in a user and mount namespace of its own with a `size_mib` tmpfs as its data
/// dir, `filler_mib` of it taken by another file. None where such namespaces are not
/// allowed (the test then says so and checks nothing).
async fn node_on_small_fs(
    root: &std::path::Path,
    size_mib: u64,
    filler_mib: u64,
    faults: &str,
) -> Option<ProcNode> {
    let probe = std::process::Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /mnt 2>/dev/null || mount -t tmpfs tmpfs /tmp",
        ])
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        eprintln!("SKIPPED: cannot mount a tmpfs in a user namespace here");
        return None;
    }
    let mnt = root.join("fs");
    std::fs::create_dir_all(&mnt).expect("mountpoint");
    let script = format!(
        "mount -t tmpfs -o size={size_mib}m tmpfs {m} && mkdir {m}/data && \
         dd if=/dev/zero of={m}/filler bs=1M count={filler_mib} status=none && exec \"$@\"",
        m = mnt.display()
    );
    Some(
        ProcNode::spawn(
            &["unshare", "-rm", "sh", "-c", &script, "sh"],
            &mnt.join("data"),
            &[],
            &[("CAIRN_NODE_FAULTS", faults), ("RUST_LOG", "info")],
            root.join("node.log"),
        )
        .await,
    )
}

/// Files in the node's temp dir, seen through its mount namespace.
fn tmp_files(node: &ProcNode, root: &std::path::Path) -> Vec<String> {
    let pid = node.pid();
    // The node is exec'ed by `sh` in the namespace: its process is the shell's pid.
    let dir = format!("/proc/{pid}/root{}", root.join("fs/data/tmp").display());
    match std::fs::read_dir(&dir) {
        Ok(d) => d
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => panic!("reading {dir}: {e}"),
    }
}

async fn full_disk_refuses_then_recovers(faults: &str) {
    let root = tempfile::tempdir().expect("tempdir");
    // 8 MiB, 2 taken: a 4 MiB shard fits, a 7 MiB one runs out part way.
    let Some(node) = node_on_small_fs(root.path(), 8, 2, faults).await else {
        return;
    };
    let http = reqwest::Client::new();
    let i = node.info(&http).await;
    assert!(i.free_bytes < 7 * MIB, "{i:?}");
    for (n, raw) in [(0u8, false), (1, true)] {
        let big = shard_of(7, n);
        if raw {
            let out = raw_put(node.addr, &big).await;
            assert_eq!((out.status, out.kind.as_str()), (507, "disk-full"), "raw");
        } else {
            let r = node
                .signed(&http, Method::PUT, &big.path())
                .body(big.file())
                .send()
                .await
                .expect("put");
            assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
            assert_eq!(error_kind(&r).as_deref(), Some("disk-full"));
        }
        let mut left = tmp_files(&node, root.path());
        for _ in 0..50 {
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            left = tmp_files(&node, root.path());
        }
        assert!(left.is_empty(), "temp files left: {left:?}");
        // The space came back: a shard that fits is stored.
        let fits = shard_of(4, n);
        let r = node
            .signed(&http, Method::PUT, &fits.path())
            .body(fits.file())
            .send()
            .await
            .unwrap_or_else(|e| panic!("put: {e:?}\n{}", node.log_text()));
        assert_eq!(r.status(), StatusCode::CREATED, "{}", node.log_text());
        let r = node
            .signed(&http, Method::DELETE, &fits.path())
            .send()
            .await
            .expect("delete");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let log = node.log_text();
    assert!(
        log.contains("disk-full") || log.contains("No space left"),
        "{log}"
    );
}

#[tokio::test]
async fn a_full_file_system_is_disk_full_and_leaves_no_temp_file() {
    // With fallocate (tmpfs has it) the shortage shows before the body streams in.
    full_disk_refuses_then_recovers("").await;
}

#[tokio::test]
async fn a_file_system_filling_up_mid_write_is_disk_full_and_leaves_no_temp_file() {
    // Without preallocation, ENOSPC comes from a write() in the middle of the body.
    full_disk_refuses_then_recovers("no-fallocate").await;
}
