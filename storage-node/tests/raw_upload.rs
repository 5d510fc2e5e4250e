//! Raw shard uploads (`Upgrade: cairn-shard`), driven by hand over a socket against an
//! in-process node on 127.0.0.1:0: the wire protocol itself, not the gateway's client.

mod common;

use std::time::Duration;

use cairn_common::auth::ClusterKey;
use cairn_common::ids::ObjectId;
use cairn_common::protocol::{self, UploadOutcome, SHARD_LENGTH_HEADER, SHARD_UPGRADE};
use cairn_common::shard::Layout;
use cairn_node::NodeConfig;
use common::{TestNode, TestShard, SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// 3+1, 64 KiB blocks, 70 stripes and a short last one: each shard file is ~4.5 MiB, more
/// than two of the node's 2 MiB write buffers.
fn layout() -> Layout {
    Layout::new(3, 1, 64 * 1024, 3 * 64 * 1024 * 70 + 5).expect("layout")
}

/// Sends the upgrade request for `path` (signed with `key`, declaring `len` bytes when
/// given) and reads the answer's head: the socket once the node switched protocols, else
/// the head of its refusal.
async fn open(
    node: &TestNode,
    key: &ClusterKey,
    path: &str,
    len: Option<u64>,
) -> Result<TcpStream, String> {
    let c = common::credential_with(
        key,
        &node.id.to_string(),
        "PUT",
        path,
        common::claim_for("PUT", path),
    );
    let credential = common::head_lines(&c);
    let mut sock = TcpStream::connect(node.addr).await.expect("connect");
    let length = len
        .map(|l| format!("{SHARD_LENGTH_HEADER}: {l}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: {SHARD_UPGRADE}\r\n\
         {length}{credential}\r\n"
    );
    sock.write_all(head.as_bytes()).await.expect("request head");
    // Byte by byte, so nothing past the head is consumed.
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        let b = sock.read_u8().await.expect("answer head");
        answer.push(b);
    }
    let answer = String::from_utf8(answer).expect("utf-8 head");
    if answer.starts_with("HTTP/1.1 101 ") {
        let lower = answer.to_ascii_lowercase();
        assert!(
            lower.contains(&format!("upgrade: {SHARD_UPGRADE}")),
            "101 without our upgrade token: {answer}"
        );
        Ok(sock)
    } else {
        Err(answer)
    }
}

/// Reads the node's one-line outcome (it closes the connection after it).
async fn outcome(sock: &mut TcpStream) -> UploadOutcome {
    let mut line = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut line))
        .await
        .expect("outcome in time")
        .expect("read outcome");
    UploadOutcome::parse(&line).unwrap_or_else(|| panic!("bad outcome {line:?}"))
}

/// A node on `dir`, the cluster key, and shard `index` of a fresh object with its file.
async fn setup(
    dir: &std::path::Path,
    index: u8,
) -> (TestNode, ClusterKey, ObjectId, TestShard, Vec<u8>) {
    let node = TestNode::start(dir).await;
    let oid = ObjectId::random();
    let shard = TestShard::new(oid, 0, index, layout());
    let file = shard.file();
    (node, ClusterKey::new(SECRET), oid, shard, file)
}

fn nothing_stored(node: &TestNode, oid: &ObjectId, index: u8) {
    assert!(
        !node.shard_file(oid, 0, index).exists(),
        "shard became visible"
    );
    assert!(
        node.tmp_entries().is_empty(),
        "temp leftovers: {:?}",
        node.tmp_entries()
    );
}

#[tokio::test]
async fn raw_upload_stores_exactly_the_file_and_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, key, oid, shard, file) = setup(dir.path(), 1).await;
    assert!(file.len() as u64 >= protocol::RAW_UPLOAD_MIN);

    let mut sock = open(&node, &key, &shard.path(), Some(file.len() as u64))
        .await
        .expect("upgrade");
    // Odd pieces with pauses, so the node sees reads of every size.
    for (i, piece) in file.chunks(300_001).enumerate() {
        sock.write_all(piece).await.expect("write");
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let o = outcome(&mut sock).await;
    assert!(o.is_stored(), "{o:?}");
    assert_eq!(
        std::fs::read(node.shard_file(&oid, 0, 1)).expect("shard file"),
        file
    );
    assert!(node.tmp_entries().is_empty());

    let http = reqwest::Client::new();
    let r = node
        .signed(&http, reqwest::Method::GET, &shard.path())
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let n = shard.blocks.len();
    assert_eq!(r.bytes().await.expect("body"), shard.blocks_range(0, n));
    node.stop().await;
}

#[tokio::test]
async fn bad_raw_uploads_store_nothing_and_say_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, key, oid, shard, file) = setup(dir.path(), 2).await;
    let len = file.len() as u64;
    let hlen = shard.header_bytes.len();

    // Refused with the right kind, nothing visible after:
    // - a flipped byte in block 40 (past the first write buffer); the node stops reading
    //   at the bad block, so the rest of our write may fail;
    // - a declared length that is not the header's;
    // - a sender that stops half way (closes its side).
    let mut bad = file.clone();
    bad[hlen + 40 * (64 * 1024 + 4) + 9] ^= 0x04;
    for (declared, bytes, half_close, kind) in [
        (len, &bad[..], false, protocol::ERR_CORRUPT_BLOCK),
        (len + 1, &file[..hlen], false, "bad-length"),
        (len, &file[..file.len() / 2], true, "bad-length"),
    ] {
        let mut sock = open(&node, &key, &shard.path(), Some(declared))
            .await
            .expect("upgrade");
        let wrote = sock.write_all(bytes).await;
        if half_close {
            wrote.expect("half");
            sock.shutdown().await.expect("half-close");
        }
        let o = outcome(&mut sock).await;
        assert_eq!(
            (o.status, o.kind.as_str()),
            (400, kind),
            "declared {declared}"
        );
        nothing_stored(&node, &oid, 2);
    }

    // The sender vanishes mid-file: the temp file goes too.
    let mut sock = open(&node, &key, &shard.path(), Some(len))
        .await
        .expect("upgrade");
    sock.write_all(&file[..file.len() / 3])
        .await
        .expect("third");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(sock);
    assert!(
        node.tmp_emptied().await,
        "temp file of an aborted raw upload survived"
    );
    nothing_stored(&node, &oid, 2);

    // No upgrade without the cluster secret, or without a length.
    let refused = open(&node, &ClusterKey::new("wrong"), &shard.path(), Some(len))
        .await
        .expect_err("upgraded without the secret");
    assert!(refused.starts_with("HTTP/1.1 403 "), "{refused}");
    let refused = open(&node, &key, &shard.path(), None)
        .await
        .expect_err("upgraded without a length");
    assert!(refused.starts_with("HTTP/1.1 400 "), "{refused}");
    nothing_stored(&node, &oid, 2);

    // After all that, a good raw upload still works.
    let mut sock = open(&node, &key, &shard.path(), Some(len))
        .await
        .expect("upgrade");
    sock.write_all(&file).await.expect("write");
    assert!(outcome(&mut sock).await.is_stored());
    assert_eq!(
        std::fs::read(node.shard_file(&oid, 0, 2)).expect("file"),
        file
    );
    node.stop().await;
}

#[tokio::test]
async fn a_sender_gone_silent_is_dropped_after_the_idle_timeout() {
    // A sender that neither sends nor closes (a pulled cable, a power cut): without a
    // timeout the upload would hold its temp file and buffers forever.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = NodeConfig::new(dir.path(), ClusterKey::new(SECRET));
    cfg.idle_timeout = Duration::from_millis(500);
    let node = TestNode::start_with(cfg).await;
    let key = ClusterKey::new(SECRET);
    let oid = ObjectId::random();
    let shard = TestShard::new(oid, 0, 1, layout());
    let file = shard.file();

    // Raw upload: a third of the file, then silence with the connection open.
    let mut sock = open(&node, &key, &shard.path(), Some(file.len() as u64))
        .await
        .expect("upgrade");
    sock.write_all(&file[..file.len() / 3])
        .await
        .expect("third");
    let o = outcome(&mut sock).await;
    assert_eq!((o.status, o.kind.as_str()), (408, "timeout"));
    assert!(node.tmp_emptied().await, "temp file of a timed-out upload");
    nothing_stored(&node, &oid, 1);

    // The same over a plain HTTP body.
    let credential = common::raw_credential(node.addr, "PUT", &shard.path()).await;
    let mut sock = TcpStream::connect(node.addr).await.expect("connect");
    let head = format!(
        "PUT {} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n{credential}\r\n",
        shard.path(),
        file.len()
    );
    sock.write_all(head.as_bytes()).await.expect("head");
    sock.write_all(&file[..file.len() / 3])
        .await
        .expect("third");
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read answer");
    let answer = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 408 "), "{answer}");
    assert!(answer.contains("x-cairn-error: timeout"), "{answer}");
    assert!(node.tmp_emptied().await, "temp file of a timed-out upload");
    nothing_stored(&node, &oid, 1);
    node.stop().await;
}
