//! Manual check of the memory bound: store and read back the shard of a 4 GiB object
//! (3+1, 1 MiB blocks: ~1.3 GiB per shard) and report this process's peak RSS.
//!
//! `cargo test -p cairn-node --test memory -- --ignored --nocapture`
//!
//! Client and node share this process, so the figure is an upper bound for the node.

mod common;

use bytes::Bytes;
use cairn_common::auth::ClusterKey;
use cairn_common::ids::ObjectId;
use cairn_common::shard::{block_crc, block_trailer, Layout, ShardHeader};
use common::TestNode;
use futures::StreamExt;
use reqwest::{Method, StatusCode};

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

fn block_data(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect::<Vec<u8>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes ~1.3 GiB; run by hand"]
async fn shard_of_a_4_gib_object_streams_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = TestNode::start(dir.path()).await;
    let http = reqwest::Client::new();
    let layout = Layout::new(3, 1, 1 << 20, 4 << 30).expect("layout");
    let header = ShardHeader {
        object_id: ObjectId::random(),
        segment: 0,
        shard_index: 3,
        layout,
        bucket: "b".into(),
        key: "big.ckpt".into(),
    };
    let file_len = header.file_len();
    let key = ClusterKey::new(common::SECRET).shard_key();
    let full = block_data(layout.block_size as usize, 7);
    let last_len = layout.block_len(layout.stripes() - 1);
    let last = block_data(last_len, 13);
    let stripes = layout.stripes();
    let (shard, tag_key) = (header.shard_ref(), key.clone());
    // Each block's data is shared; only its trailer (the tag covers the block number) is
    // made per block.
    let blocks = futures::stream::iter(0..stripes).flat_map(move |s| {
        let data = if layout.block_len(s) == full.len() {
            full.clone()
        } else {
            last.clone()
        };
        let mut tagger = tag_key.block_tagger(&shard, s);
        tagger.update(&data);
        let trailer = block_trailer(&layout, block_crc(&data), Some(&tagger));
        futures::stream::iter([Ok::<_, std::io::Error>(data), Ok(trailer)])
    });
    let body = futures::stream::once(std::future::ready(Ok(header.encode(&key)))).chain(blocks);
    let path = cairn_common::protocol::shard_path(&header.object_id, 0, 3);
    let before = vm_hwm_kib();
    let t = std::time::Instant::now();
    let r = node
        .signed(&http, Method::PUT, &path)
        .header("content-length", file_len)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    let put_secs = t.elapsed().as_secs_f64();
    let after_put = vm_hwm_kib();

    let t = std::time::Instant::now();
    let r = node
        .signed(&http, Method::GET, &path)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let mut stream = r.bytes_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        n += chunk.expect("chunk").len() as u64;
    }
    assert_eq!(n, layout.shard_body_len());
    let get_secs = t.elapsed().as_secs_f64();
    let after_get = vm_hwm_kib();
    let mib = file_len as f64 / (1 << 20) as f64;
    println!(
        "shard {mib:.0} MiB: PUT {:.0} MiB/s, GET {:.0} MiB/s; VmHWM before {} MiB, after PUT {} MiB, after GET {} MiB",
        mib / put_secs,
        mib / get_secs,
        before / 1024,
        after_put / 1024,
        after_get / 1024
    );
    assert!(after_get < 64 * 1024, "peak RSS {after_get} KiB");
    node.stop().await;
}
