//! A stored shard found corrupt by any read (header, first, middle or last block) or by
//! the scrub is reported in `/v1/info`'s `bad_shards` (what the gateway repairs from)
//! and counted, until the shard is rewritten or deleted.

mod common;

use std::time::Duration;

use cairn_common::ids::ObjectId;
use cairn_common::protocol::{self, ShardRef};
use cairn_common::shard::Layout;
use cairn_node::scrub::ScrubConfig;
use cairn_node::NodeConfig;
use common::{info, metric, TestNode, TestShard, SECRET};
use futures::StreamExt;
use reqwest::{Method, StatusCode};

const READ_CORRUPT: &str = "cairn_node_read_corrupt_total";

/// 3+2, 64 KiB blocks, 6 stripes: blocks big enough that a read's response head goes out
/// before a later block is read.
fn layout() -> Layout {
    Layout::new(3, 2, 64 * 1024, 3 * 64 * 1024 * 5 + 999).expect("layout")
}

async fn put(node: &TestNode, http: &reqwest::Client, shard: &TestShard) {
    let r = node
        .signed(http, Method::PUT, &shard.path())
        .body(shard.file())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// Reads the whole shard; whether every byte came and matched.
async fn read_ok(node: &TestNode, http: &reqwest::Client, shard: &TestShard) -> bool {
    let Ok(r) = node.signed(http, Method::GET, &shard.path()).send().await else {
        return false;
    };
    if r.status() != StatusCode::OK {
        return false;
    }
    let mut body = r.bytes_stream();
    let mut got = Vec::new();
    while let Some(item) = body.next().await {
        match item {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => return false,
        }
    }
    got == shard.blocks_range(0, shard.blocks.len())
}

fn addr_of(shard: &TestShard) -> ShardRef {
    ShardRef {
        object: shard.header.object_id,
        segment: shard.header.segment,
        index: shard.header.shard_index,
    }
}

/// Flips one byte at `pos` of the node's file of `shard`.
fn flip(node: &TestNode, shard: &TestShard, pos: usize) {
    let h = &shard.header;
    let file = node.shard_file(&h.object_id, h.segment, h.shard_index);
    let mut bytes = std::fs::read(&file).expect("read shard file");
    bytes[pos] ^= 0x20;
    std::fs::write(&file, bytes).expect("write shard file");
}

/// File offset of a byte in the middle of block `b`'s data.
fn in_block(shard: &TestShard, b: usize) -> usize {
    shard.header_bytes.len()
        + shard.blocks[..b].iter().map(Vec::len).sum::<usize>()
        + shard.blocks[b].len() / 2
}

async fn wait_reported(node: &TestNode, http: &reqwest::Client, want: &[ShardRef]) {
    let mut want = want.to_vec();
    want.sort();
    for _ in 0..100 {
        let mut got = info(node, http).await.bad_shards;
        got.sort();
        if got == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "bad shards {:?}, want {want:?}",
        info(node, http).await.bad_shards
    );
}

#[tokio::test]
async fn reads_report_a_bad_header_first_middle_or_last_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = TestNode::start(dir.path()).await;
    let http = reqwest::Client::new();
    let oid = ObjectId::random();
    // Shard 0: bad first block; 1: middle; 2: last (short) block; 3: header; 4: sound.
    let shards: Vec<TestShard> = (0..5)
        .map(|i| TestShard::new(oid, 7, i, layout()))
        .collect();
    for s in &shards {
        put(&node, &http, s).await;
    }
    let last = shards[2].blocks.len() - 1;
    assert_eq!(last, 5);
    flip(&node, &shards[0], in_block(&shards[0], 0));
    flip(&node, &shards[1], in_block(&shards[1], 3));
    flip(&node, &shards[2], in_block(&shards[2], last));
    flip(&node, &shards[3], 30);
    assert!(info(&node, &http).await.bad_shards.is_empty());

    let before = metric(node.addr, &http, READ_CORRUPT)
        .await
        .expect("metric");
    // The middle and last blocks fail after the response started: the body breaks off.
    for s in &shards[..4] {
        assert!(
            !read_ok(&node, &http, s).await,
            "a corrupt shard was served"
        );
    }
    assert!(read_ok(&node, &http, &shards[4]).await);
    // A ranged read of the middle block alone, and the header route, find it too.
    let r = node
        .signed(
            &http,
            Method::GET,
            &protocol::shard_read_path(&oid, 7, 1, 3, 1),
        )
        .send()
        .await
        .expect("ranged read");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = node
        .signed(&http, Method::GET, &format!("{}/header", shards[3].path()))
        .send()
        .await
        .expect("header read");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let bad: Vec<ShardRef> = shards[..4].iter().map(addr_of).collect();
    wait_reported(&node, &http, &bad).await;
    let after = metric(node.addr, &http, READ_CORRUPT)
        .await
        .expect("metric");
    assert!(after >= before + 6.0, "{before} -> {after}");
    // Reading a bad shard again does not list it twice.
    assert!(!read_ok(&node, &http, &shards[1]).await);
    wait_reported(&node, &http, &bad).await;

    // A rewritten (repair writes a fresh segment; an overwrite is a rewrite too) or
    // deleted shard is not reported.
    put(&node, &http, &shards[0]).await;
    assert!(read_ok(&node, &http, &shards[0]).await);
    let r = node
        .signed(&http, Method::DELETE, &shards[1].path())
        .send()
        .await
        .expect("delete shard");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    wait_reported(&node, &http, &bad[2..]).await;
    let r = node
        .signed(&http, Method::DELETE, &protocol::object_path(&oid))
        .send()
        .await
        .expect("delete object");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    wait_reported(&node, &http, &[]).await;
    node.stop().await;
}

#[tokio::test]
async fn scrub_finds_a_bad_middle_block_without_any_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = NodeConfig::new(dir.path(), cairn_common::auth::ClusterKey::new(SECRET));
    cfg.scrub = ScrubConfig {
        rate: 1 << 30,
        every: Duration::from_millis(100),
    };
    let node = TestNode::start_with(cfg).await;
    let http = reqwest::Client::new();
    let shard = TestShard::new(ObjectId::random(), 0, 1, layout());
    let sound = TestShard::new(ObjectId::random(), 0, 0, layout());
    put(&node, &http, &shard).await;
    put(&node, &http, &sound).await;
    flip(&node, &shard, in_block(&shard, 2));
    wait_reported(&node, &http, &[addr_of(&shard)]).await;
    // Fixed by a rewrite, the next pass leaves it off the list for good.
    put(&node, &http, &shard).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(info(&node, &http).await.bad_shards.is_empty());
    node.stop().await;
}

#[tokio::test]
async fn a_bad_shard_removed_behind_the_api_is_dropped_by_the_next_scrub_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = NodeConfig::new(dir.path(), cairn_common::auth::ClusterKey::new(SECRET));
    cfg.scrub = ScrubConfig {
        rate: 1 << 30,
        every: Duration::from_millis(100),
    };
    let node = TestNode::start_with(cfg).await;
    let http = reqwest::Client::new();
    let shard = TestShard::new(ObjectId::random(), 2, 0, layout());
    put(&node, &http, &shard).await;
    flip(&node, &shard, in_block(&shard, 4));
    assert!(!read_ok(&node, &http, &shard).await);
    wait_reported(&node, &http, &[addr_of(&shard)]).await;
    let h = &shard.header;
    std::fs::remove_file(node.shard_file(&h.object_id, h.segment, h.shard_index)).expect("remove");
    wait_reported(&node, &http, &[]).await;
    node.stop().await;
}
