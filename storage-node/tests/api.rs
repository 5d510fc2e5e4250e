//! The node's HTTP API, end to end against an in-process node on 127.0.0.1:0.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_common::auth::{BodyClaim, ClusterKey, ANY_NODE};
use cairn_common::ids::ObjectId;
use cairn_common::protocol::{self, NodeInfo, ObjectList};
use cairn_common::shard::{Layout, ShardHeader, CRC_LEN, TAG_LEN};
use common::{error_kind, TestNode, TestShard, SECRET};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use tokio::io::AsyncWriteExt;

/// 3+1, 1 KiB blocks, 5 full stripes and a short last one: 6 blocks per shard.
fn layout() -> Layout {
    Layout::new(3, 1, 1024, 3 * 1024 * 5 + 7).expect("layout")
}

/// Reads a body to its end or first error: (bytes received, whether it failed).
async fn drain(r: reqwest::Response) -> (Vec<u8>, bool) {
    let mut body = r.bytes_stream();
    let mut got = Vec::new();
    while let Some(item) = body.next().await {
        match item {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

async fn put(
    node: &TestNode,
    http: &reqwest::Client,
    path: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    node.signed(http, Method::PUT, path)
        .body(body)
        .send()
        .await
        .expect("send put")
}

async fn get(node: &TestNode, http: &reqwest::Client, path_and_query: &str) -> reqwest::Response {
    node.signed(http, Method::GET, path_and_query)
        .send()
        .await
        .expect("send get")
}

#[tokio::test]
async fn put_then_read_ranges_header_list_and_info() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = TestNode::start(dir.path()).await;
    let http = reqwest::Client::new();
    let oid = ObjectId::random();
    let shard = TestShard::new(oid, 0, 2, layout());
    assert_eq!(shard.blocks.len(), 6);

    let resp = put(&node, &http, &shard.path(), shard.file()).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    // Exactly the uploaded bytes are on disk, at the documented place; no temp leftovers.
    let on_disk = std::fs::read(node.shard_file(&oid, 0, 2)).expect("shard file");
    assert_eq!(on_disk, shard.file());
    assert!(node.tmp_entries().is_empty());

    // Whole shard (no query), a middle range, a range clamped at the end.
    let r = get(&node, &http, &shard.path()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body"), shard.blocks_range(0, 6));
    let r = get(&node, &http, &protocol::shard_read_path(&oid, 0, 2, 2, 2)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.content_length(),
        Some(shard.blocks_range(2, 4).len() as u64)
    );
    assert_eq!(r.bytes().await.expect("body"), shard.blocks_range(2, 4));
    let r = get(&node, &http, &protocol::shard_read_path(&oid, 0, 2, 4, 100)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let tail = r.bytes().await.expect("body");
    assert_eq!(tail, shard.blocks_range(4, 6));
    assert_eq!(
        tail.len(),
        1024 + 3 + 2 * (CRC_LEN + TAG_LEN),
        "last block is ceil(7/3) bytes + trailer"
    );
    // Zero blocks is an empty success; starting past the end is 416.
    let r = get(&node, &http, &protocol::shard_read_path(&oid, 0, 2, 1, 0)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.expect("body").is_empty());
    let r = get(&node, &http, &protocol::shard_read_path(&oid, 0, 2, 6, 1)).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(error_kind(&r).as_deref(), Some("bad-range"));

    // Header.
    let r = get(&node, &http, &format!("{}/header", shard.path())).await;
    assert_eq!(r.status(), StatusCode::OK);
    let hb = r.bytes().await.expect("body");
    assert_eq!(hb, shard.header_bytes);
    assert_eq!(ShardHeader::decode(&hb).expect("decode"), shard.header);

    // Other shards of the object are independent; missing ones are 404.
    let r = get(&node, &http, &protocol::shard_read_path(&oid, 0, 1, 0, 1)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_kind(&r).as_deref(), Some(protocol::ERR_NO_SUCH_SHARD));
    let r = get(
        &node,
        &http,
        &format!("{}/header", protocol::shard_path(&oid, 9, 2)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // List and info.
    let r = get(&node, &http, "/v1/objects").await;
    assert_eq!(r.status(), StatusCode::OK);
    let list: ObjectList = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert_eq!(list.objects, vec![oid]);
    let r = get(&node, &http, "/v1/info?challenge=abc123").await;
    assert_eq!(r.status(), StatusCode::OK);
    let info: NodeInfo = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert_eq!(info.node_id, node.id);
    assert_eq!(info.protocol, protocol::PROTOCOL_VERSION);
    assert_eq!(info.shards, 1);
    assert!(info.capacity_bytes > 0 && info.free_bytes <= info.capacity_bytes);
    let key = ClusterKey::new(SECRET);
    let (id, seen) = (node.id.to_string(), info.seen_at.clone());
    assert_eq!(
        seen,
        node.addr.to_string(),
        "the address the probe arrived on"
    );
    assert!(key.check_proof("abc123", &id, &seen, &info.proof));
    assert!(!key.check_proof("other", &id, &seen, &info.proof));
    assert!(!key.check_proof("abc123", &id, "10.9.9.9:1", &info.proof));

    // Bad path parts are 400 with a kind.
    let r = get(&node, &http, "/v1/shards/nothex/0/0").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_kind(&r).as_deref(), Some("bad-request"));
    node.stop().await;
}

#[tokio::test]
async fn empty_segment_and_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = TestNode::start(dir.path()).await;
    let http = reqwest::Client::new();
    let oid = ObjectId::random();
    let empty = TestShard::new(oid, 0, 0, Layout::new(2, 1, 1024, 0).expect("layout"));
    assert!(empty.blocks.is_empty());
    let r = put(&node, &http, &empty.path(), empty.file()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = get(&node, &http, &empty.path()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.expect("body").is_empty());

    // A PUT replaces an existing shard whole.
    let bigger = TestShard::new(oid, 0, 0, Layout::new(2, 1, 1024, 5000).expect("layout"));
    let r = put(&node, &http, &bigger.path(), bigger.file()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = get(&node, &http, &bigger.path()).await;
    assert_eq!(r.bytes().await.expect("body"), bigger.blocks_range(0, 3));
    let r = get(&node, &http, "/v1/info?challenge=x").await;
    let info: NodeInfo = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert_eq!(info.shards, 1, "overwrite counted once");
    node.stop().await;
}

#[tokio::test]
async fn corrupt_stored_blocks_are_never_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = TestNode::start(dir.path()).await;
    let http = reqwest::Client::new();
    let oid = ObjectId::random();
    let shard = TestShard::new(oid, 1, 0, layout());
    assert_eq!(
        put(&node, &http, &shard.path(), shard.file())
            .await
            .status(),
        StatusCode::CREATED
    );
    let file = node.shard_file(&oid, 1, 0);
    let hlen = shard.header_bytes.len();
    let block_off = |b: usize| hlen + shard.blocks[..b].iter().map(Vec::len).sum::<usize>();
    let flip = |pos: usize| {
        let mut bytes = std::fs::read(&file).expect("read");
        bytes[pos] ^= 0x01;
        std::fs::write(&file, bytes).expect("write");
    };

    // Bad first block: 409 before any byte is sent.
    flip(block_off(0) + 10);
    let r = get(&node, &http, &shard.path()).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(error_kind(&r).as_deref(), Some(protocol::ERR_CORRUPT_BLOCK));
    // Blocks after it are still served.
    let r = get(&node, &http, &protocol::shard_read_path(&oid, 1, 0, 1, 5)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body"), shard.blocks_range(1, 6));
    flip(block_off(0) + 10);

    // Bad block 3 (its crc bytes): no byte of it is ever delivered. With blocks this
    // small the node fails before its response head is flushed, so the client sees a
    // transport error on the request itself; big blocks are tested below.
    flip(block_off(4) - 1 - TAG_LEN);
    match node.signed(&http, Method::GET, &shard.path()).send().await {
        Err(e) => assert!(!e.is_status(), "{e}"),
        Ok(r) => {
            assert_eq!(r.status(), StatusCode::OK);
            let (got, failed) = drain(r).await;
            assert!(failed, "a corrupt later block must abort the body");
            assert!(
                got.len() <= block_off(3) - hlen,
                "bad block bytes were sent"
            );
        }
    }
    // The node still serves other requests afterwards.
    let r = get(&node, &http, &protocol::shard_read_path(&oid, 1, 0, 0, 3)).await;
    assert_eq!(r.bytes().await.expect("body"), shard.blocks_range(0, 3));
    flip(block_off(4) - 1);

    // A corrupt header makes every read and the header route 409.
    flip(20);
    let r = get(&node, &http, &format!("{}/header", shard.path())).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(error_kind(&r).as_deref(), Some(protocol::ERR_CORRUPT_BLOCK));
    let r = get(&node, &http, &protocol::shard_read_path(&oid, 1, 0, 2, 1)).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // A truncated file is corrupt, not a server error.
    flip(20);
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, &bytes[..bytes.len() - 3]).expect("truncate");
    let r = get(&node, &http, &protocol::shard_read_path(&oid, 1, 0, 5, 1)).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);

    let metrics = http
        .get(node.url("/metrics"))
        .bearer_auth(ClusterKey::new(SECRET).admin_token())
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cairn_node_checksum_failures_total "))
        .expect("checksum failure metric")
        .trim()
        .parse()
        .expect("number");
    assert!(failures >= 4.0, "{metrics}");
    node.stop().await;
}

#[tokio::test]
async fn corrupt_later_block_aborts_a_started_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = TestNode::start(dir.path()).await;
    let http = reqwest::Client::new();
    let oid = ObjectId::random();
    // 1 MiB blocks, 5 blocks per shard.
    let shard = TestShard::new(
        oid,
        0,
        1,
        Layout::new(2, 1, 1 << 20, 9 << 20).expect("layout"),
    );
    assert_eq!(shard.blocks.len(), 5);
    assert_eq!(
        put(&node, &http, &shard.path(), shard.file())
            .await
            .status(),
        StatusCode::CREATED
    );
    let file = node.shard_file(&oid, 0, 1);
    let mut bytes = std::fs::read(&file).expect("read");
    let bad_at = shard.header_bytes.len() + 3 * shard.blocks[0].len() + 12345;
    bytes[bad_at] ^= 0x04;
    std::fs::write(&file, bytes).expect("write");

    let r = get(&node, &http, &shard.path()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.content_length(),
        Some(shard.blocks_range(0, 5).len() as u64)
    );
    let (got, failed) = drain(r).await;
    assert!(failed, "a corrupt later block must abort the body");
    let good = shard.blocks_range(0, 3);
    assert!(got.len() <= good.len(), "bytes of the bad block were sent");
    assert_eq!(got, good[..got.len()]);
    node.stop().await;
}

#[tokio::test]
async fn bad_uploads_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = TestNode::start(dir.path()).await;
    let http = reqwest::Client::new();
    let oid = ObjectId::random();
    let shard = TestShard::new(oid, 0, 3, layout());
    let file = shard.file();
    let hlen = shard.header_bytes.len();
    let nothing_stored = |node: &TestNode| {
        assert!(
            !node.shard_file(&oid, 0, 3).exists(),
            "shard became visible"
        );
        assert!(
            node.tmp_entries().is_empty(),
            "temp leftovers: {:?}",
            node.tmp_entries()
        );
    };

    // A flipped byte in block 4.
    let mut bad = file.clone();
    bad[hlen + 4 * 1028 + 100] ^= 0x80;
    let r = put(&node, &http, &shard.path(), bad).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_kind(&r).as_deref(), Some(protocol::ERR_CORRUPT_BLOCK));
    nothing_stored(&node);

    // Short body with an honest content-length (caught before streaming).
    let r = put(&node, &http, &shard.path(), file[..file.len() - 1].to_vec()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_kind(&r).as_deref(), Some("bad-length"));
    nothing_stored(&node);

    // Short and long bodies without a length (chunked), so only the stream tells.
    for body in [
        file[..file.len() - 1].to_vec(),
        [file.clone(), vec![0]].concat(),
    ] {
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(777)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let r = node
            .signed(&http, Method::PUT, &shard.path())
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error_kind(&r).as_deref(), Some("bad-length"));
        nothing_stored(&node);
    }

    // Only half a header.
    let r = put(&node, &http, &shard.path(), file[..hlen / 2].to_vec()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    nothing_stored(&node);

    // A header naming another shard than the path.
    let r = put(
        &node,
        &http,
        &protocol::shard_path(&oid, 0, 2),
        file.clone(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_kind(&r).as_deref(), Some("bad-header"));
    assert!(!node.shard_file(&oid, 0, 2).exists());
    // Garbage instead of a header.
    let r = put(&node, &http, &shard.path(), vec![0u8; 100]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_kind(&r).as_deref(), Some("bad-header"));
    nothing_stored(&node);

    // The client vanishing mid-body leaves nothing behind either.
    let path = shard.path();
    let credential = common::raw_credential(node.addr, "PUT", &path).await;
    let mut sock = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n{credential}\r\n",
        file.len()
    );
    sock.write_all(head.as_bytes()).await.expect("head");
    sock.write_all(&file[..file.len() / 2]).await.expect("half");
    sock.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(sock);
    assert!(
        node.tmp_emptied().await,
        "temp file of an aborted upload survived"
    );
    nothing_stored(&node);

    // After all that, a good upload still works.
    let r = put(&node, &http, &shard.path(), file.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    node.stop().await;
}

#[tokio::test]
async fn requests_without_the_cluster_secret_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = TestNode::start(dir.path()).await;
    let http = reqwest::Client::new();
    let oid = ObjectId::random();
    let shard = TestShard::new(oid, 0, 0, layout());
    assert_eq!(
        put(&node, &http, &shard.path(), shard.file())
            .await
            .status(),
        StatusCode::CREATED
    );
    let probe = AuthProbe {
        node: &node,
        http: &http,
        key: ClusterKey::new(SECRET),
        me: node.id.to_string(),
    };
    let read = shard.path();
    probe.unsigned_requests_are_refused(&read, &oid).await;
    probe.misused_credentials_are_refused(&read).await;
    probe.forged_bodies_are_refused(&oid).await;
    probe.old_dates_are_refused(&read).await;
    // Nothing was deleted or overwritten by the refused requests.
    assert_eq!(
        std::fs::read(node.shard_file(&oid, 0, 0)).expect("file"),
        shard.file()
    );
    probe.health_is_open_and_metrics_need_the_token().await;
    node.stop().await;
}

/// Requests made with wrong, misused or missing credentials, on one node.
struct AuthProbe<'a> {
    node: &'a TestNode,
    http: &'a reqwest::Client,
    /// The cluster's real key.
    key: ClusterKey,
    /// The node's id.
    me: String,
}

fn expect_403(r: reqwest::Response) {
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_kind(&r).as_deref(), Some("auth"));
}

impl AuthProbe<'_> {
    /// Sends `m p` with the headers of credential `c` (made for whatever request).
    async fn send(
        &self,
        m: Method,
        p: &str,
        c: &cairn_common::auth::Credential,
    ) -> reqwest::Response {
        c.headers()
            .iter()
            .fold(self.http.request(m, self.node.url(p)), |r, (n, v)| {
                r.header(*n, *v)
            })
            .send()
            .await
            .expect("send")
    }

    /// No credential at all, on every route, or one made with another secret.
    async fn unsigned_requests_are_refused(&self, read: &str, oid: &ObjectId) {
        for (m, p) in [
            (Method::GET, read.to_string()),
            (Method::PUT, read.to_string()),
            (Method::GET, format!("{read}/header")),
            (Method::DELETE, protocol::object_path(oid)),
            (Method::GET, "/v1/objects".to_string()),
            (Method::GET, "/v1/info?challenge=c".to_string()),
        ] {
            expect_403(
                self.http
                    .request(m, self.node.url(&p))
                    .send()
                    .await
                    .expect("send"),
            );
        }
        let wrong = ClusterKey::new("not-the-secret");
        expect_403(
            self.node
                .signed_with(self.http, &wrong, Method::GET, read)
                .send()
                .await
                .expect("send"),
        );
    }

    /// A valid credential used on another path or method, replayed, or meant for another
    /// node or for whoever answers (only probes may be).
    async fn misused_credentials_are_refused(&self, read: &str) {
        let (key, me) = (&self.key, self.me.as_str());
        let c = key.sign("GET", "/v1/objects", me, BodyClaim::Empty);
        expect_403(self.send(Method::GET, read, &c).await);
        expect_403(self.send(Method::DELETE, "/v1/objects", &c).await);
        let c = key.sign("GET", "/v1/objects", me, BodyClaim::Empty);
        let first = self.send(Method::GET, "/v1/objects", &c).await;
        assert_eq!(first.status(), StatusCode::OK);
        expect_403(self.send(Method::GET, "/v1/objects", &c).await);
        let other = cairn_common::ids::NodeId::random().to_string();
        let c = key.sign("GET", "/v1/objects", &other, BodyClaim::Empty);
        expect_403(self.send(Method::GET, "/v1/objects", &c).await);
        let c = key.sign("GET", "/v1/objects", ANY_NODE, BodyClaim::Empty);
        expect_403(self.send(Method::GET, "/v1/objects", &c).await);
    }

    /// A body other than the one signed, or a shard claim off the shard route: nothing
    /// is stored.
    async fn forged_bodies_are_refused(&self, oid: &ObjectId) {
        let manifest = protocol::manifest_path(oid);
        for claim in [BodyClaim::of(b"{\"signed\":1}"), BodyClaim::Shard] {
            let c = self.key.sign("PUT", &manifest, &self.me, claim);
            let r = c
                .headers()
                .iter()
                .fold(self.http.put(self.node.url(&manifest)), |r, (n, v)| {
                    r.header(*n, *v)
                })
                .body("{\"forged\":1}")
                .send()
                .await
                .expect("send");
            expect_403(r);
        }
        let r = get(self.node, self.http, protocol::MANIFESTS_PATH).await;
        let list: protocol::ManifestList =
            serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
        assert!(list.manifests.is_empty(), "a refused manifest was stored");
    }

    /// A credential dated an hour ago.
    async fn old_dates_are_refused(&self, read: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let mut c = self.key.sign("GET", read, &self.me, BodyClaim::Empty);
        c.date = (now - 3600).to_string();
        expect_403(self.send(Method::GET, read, &c).await);
    }

    /// `/health` needs nothing; `/metrics` needs the admin token.
    async fn health_is_open_and_metrics_need_the_token(&self) {
        let (http, node) = (self.http, self.node);
        let r = http.get(node.url("/health")).send().await.expect("health");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.expect("text"), "ok");
        let metrics = |token: Option<String>| {
            let req = http.get(node.url("/metrics"));
            match token {
                Some(t) => req.bearer_auth(t),
                None => req,
            }
            .send()
        };
        let r = metrics(None).await.expect("metrics");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = metrics(Some("wrong".into())).await.expect("metrics");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = metrics(Some(self.key.admin_token()))
            .await
            .expect("metrics");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r
            .text()
            .await
            .expect("text")
            .contains("cairn_node_shard_writes_total"));
    }
}

#[tokio::test]
async fn identity_and_shards_survive_restart_and_delete_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let node = TestNode::start(dir.path()).await;
    let first_id = node.id;
    let oid = ObjectId::random();
    let shards: Vec<TestShard> = (0..3)
        .map(|i| TestShard::new(oid, 0, i, layout()))
        .collect();
    for s in &shards {
        assert_eq!(
            put(&node, &http, &s.path(), s.file()).await.status(),
            StatusCode::CREATED
        );
    }
    let other = TestShard::new(ObjectId::random(), 0, 0, layout());
    assert_eq!(
        put(&node, &http, &other.path(), other.file())
            .await
            .status(),
        StatusCode::CREATED
    );
    node.stop().await;
    // A leftover of a crashed write is cleaned at startup.
    std::fs::write(dir.path().join("tmp").join("crashed.partial"), b"junk").expect("junk");

    let node = TestNode::start(dir.path()).await;
    assert_eq!(node.id, first_id, "node id changed across restart");
    assert!(node.tmp_entries().is_empty());
    let r = get(&node, &http, "/v1/info?challenge=z").await;
    let info: NodeInfo = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert_eq!(info.node_id, first_id);
    assert_eq!(info.shards, 4);
    let r = get(&node, &http, &shards[1].path()).await;
    assert_eq!(r.bytes().await.expect("body"), shards[1].blocks_range(0, 6));

    for _ in 0..2 {
        let r = node
            .signed(&http, Method::DELETE, &protocol::object_path(&oid))
            .send()
            .await
            .expect("delete");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    for s in &shards {
        let r = get(&node, &http, &s.path()).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_kind(&r).as_deref(), Some(protocol::ERR_NO_SUCH_SHARD));
    }
    let r = get(&node, &http, "/v1/objects").await;
    let list: ObjectList = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert_eq!(list.objects, vec![other.header.object_id]);
    let r = get(&node, &http, "/v1/info?challenge=z").await;
    let info: NodeInfo = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert_eq!(info.shards, 1);
    node.stop().await;
}
