//! Helpers shared by the node's integration tests: an in-process node, shard builders and
//! a signing client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cairn_common::auth::{BodyClaim, ClusterKey, Credential, ANY_NODE};
use cairn_common::ids::{NodeId, ObjectId};
use cairn_common::shard::{stored_block, Layout, ShardHeader};
use cairn_node::{serve, Node, NodeConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "test-cluster-secret";

/// What a request's body is by its method and path: a shard file for a shard `PUT`,
/// else none (a body sent from memory is signed with [`BodyClaim::of`]).
pub fn claim_for(method: &str, path_and_query: &str) -> BodyClaim {
    if method == "PUT" && path_and_query.starts_with("/v1/shards/") {
        BodyClaim::Shard
    } else {
        BodyClaim::Empty
    }
}

/// The credential of a request to node `node` (its id, or `-`), under `key`.
pub fn credential_with(
    key: &ClusterKey,
    node: &str,
    method: &str,
    path_and_query: &str,
    body: BodyClaim,
) -> Credential {
    key.sign(method, path_and_query, node, body)
}

/// The credential headers as lines of a raw HTTP request head.
pub fn head_lines(c: &Credential) -> String {
    c.headers()
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect()
}

/// The id of the node at `addr`, asked as a probe does.
pub async fn node_id_at(addr: SocketAddr) -> NodeId {
    let c = credential_with(
        &ClusterKey::new(SECRET),
        ANY_NODE,
        "GET",
        "/v1/info?challenge=id",
        BodyClaim::Empty,
    );
    let mut req = reqwest::Client::new().get(format!("http://{addr}/v1/info?challenge=id"));
    for (n, v) in c.headers() {
        req = req.header(n, v);
    }
    let r = req.send().await.expect("info");
    assert!(r.status().is_success(), "info: {}", r.status());
    let info: cairn_common::protocol::NodeInfo =
        serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    info.node_id
}

/// Credential header lines of a raw request to the node at `addr` (a shard `PUT` claims
/// a shard body).
pub async fn raw_credential(addr: SocketAddr, method: &str, path_and_query: &str) -> String {
    let id = node_id_at(addr).await.to_string();
    head_lines(&credential_with(
        &ClusterKey::new(SECRET),
        &id,
        method,
        path_and_query,
        claim_for(method, path_and_query),
    ))
}

fn with_credential(req: reqwest::RequestBuilder, c: &Credential) -> reqwest::RequestBuilder {
    c.headers()
        .iter()
        .fold(req, |req, (n, v)| req.header(*n, *v))
}

/// A node running in this process.
pub struct TestNode {
    pub addr: SocketAddr,
    pub id: NodeId,
    pub data: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestNode {
    pub async fn start(data: &Path) -> Self {
        Self::start_with(NodeConfig::new(data, ClusterKey::new(SECRET))).await
    }

    /// A node with its config adjusted (the key must stay [`SECRET`]).
    pub async fn start_with(cfg: NodeConfig) -> Self {
        let data = cfg.data_dir.clone();
        let data = data.as_path();
        let node = Node::open(cfg).await.expect("open node");
        let id = node.id();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, node, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            id,
            data: data.to_path_buf(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("join").expect("serve");
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// A request signed with the test cluster secret.
    pub fn signed(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        self.signed_with(client, &ClusterKey::new(SECRET), method, path_and_query)
    }

    pub fn signed_with(
        &self,
        client: &reqwest::Client,
        key: &ClusterKey,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        let claim = claim_for(method.as_str(), path_and_query);
        let c = credential_with(
            key,
            &self.id.to_string(),
            method.as_str(),
            path_and_query,
            claim,
        );
        with_credential(client.request(method, self.url(path_and_query)), &c)
    }

    /// A request with `body` sent from memory, signed with its digest.
    pub fn signed_body(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        let c = credential_with(
            &ClusterKey::new(SECRET),
            &self.id.to_string(),
            method.as_str(),
            path_and_query,
            BodyClaim::of(&body),
        );
        with_credential(client.request(method, self.url(path_and_query)), &c).body(body)
    }

    /// Waits (up to 2.5 s) for the temp dir to empty, as it must once an aborted
    /// upload has been cleaned up; whether it did.
    pub async fn tmp_emptied(&self) -> bool {
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if self.tmp_entries().is_empty() {
                return true;
            }
        }
        false
    }

    /// Files left in the temp dir.
    pub fn tmp_entries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.data.join("tmp"))
            .expect("tmp dir")
            .map(|e| e.expect("entry").path())
            .collect()
    }

    /// On-disk path of a shard.
    pub fn shard_file(&self, object: &ObjectId, segment: u32, index: u8) -> PathBuf {
        let hex = object.to_string();
        self.data
            .join("shards")
            .join(&hex[0..2])
            .join(&hex)
            .join(format!("{segment}.{index}"))
    }
}

/// A shard file built in memory: its header and stored blocks (data + trailer each).
pub struct TestShard {
    pub header: ShardHeader,
    pub header_bytes: Vec<u8>,
    pub blocks: Vec<Vec<u8>>,
}

impl TestShard {
    pub fn new(object: ObjectId, segment: u32, index: u8, layout: Layout) -> Self {
        let header = ShardHeader {
            object_id: object,
            segment,
            shard_index: index,
            layout,
            bucket: "bucket".into(),
            key: "ckpt/model.safetensors".into(),
        };
        let key = ClusterKey::new(SECRET).shard_key();
        let shard = header.shard_ref();
        let blocks = (0..layout.stripes())
            .map(|s| {
                let b: Vec<u8> = (0..layout.block_len(s))
                    .map(|i| (i as u64 * 31 + s * 7 + index as u64) as u8)
                    .collect();
                stored_block(&layout, &key, &shard, s, &b)
            })
            .collect();
        Self {
            header_bytes: header.encode(&key).to_vec(),
            header,
            blocks,
        }
    }

    /// The whole file.
    pub fn file(&self) -> Vec<u8> {
        let mut out = self.header_bytes.clone();
        for b in &self.blocks {
            out.extend_from_slice(b);
        }
        out
    }

    /// Stored bytes of blocks `from..to`.
    pub fn blocks_range(&self, from: usize, to: usize) -> Vec<u8> {
        self.blocks[from..to].concat()
    }

    pub fn path(&self) -> String {
        cairn_common::protocol::shard_path(
            &self.header.object_id,
            self.header.segment,
            self.header.shard_index,
        )
    }
}

pub fn error_kind(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(cairn_common::protocol::ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `GET /v1/info` of a node.
pub async fn info(node: &TestNode, http: &reqwest::Client) -> cairn_common::protocol::NodeInfo {
    let r = node
        .signed(http, reqwest::Method::GET, "/v1/info?challenge=t")
        .send()
        .await
        .expect("info");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    serde_json::from_slice(&r.bytes().await.expect("body")).expect("info json")
}

/// The value of an unlabelled sample `name` on a node's `/metrics` (None if absent).
pub async fn metric(addr: SocketAddr, http: &reqwest::Client, name: &str) -> Option<f64> {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .bearer_auth(ClusterKey::new(SECRET).admin_token())
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("metric value"))
}

/// A `cairn-node` process (the real binary), for what an in-process node cannot show:
/// its own metrics registry, its environment, a file system of its own.
pub struct ProcNode {
    pub addr: SocketAddr,
    /// The node's id (known once it answers).
    pub id: Option<NodeId>,
    child: std::process::Child,
    pub log: PathBuf,
}

impl ProcNode {
    /// Runs `prefix... cairn-node --listen ADDR --data DATA args...` with `env`, and waits
    /// for its `/health`. `prefix` may wrap it (e.g. in a namespace); `data` is then
    /// interpreted inside it.
    pub async fn spawn(
        prefix: &[&str],
        data: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let bin = env!("CARGO_BIN_EXE_cairn-node");
        let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        argv.push(bin.into());
        argv.extend(["--listen".into(), addr.to_string(), "--data".into()]);
        argv.push(data.display().to_string());
        argv.extend(args.iter().map(|s| s.to_string()));
        let logfile = std::fs::File::create(&log).expect("log file");
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("CAIRN_CLUSTER_SECRET", SECRET)
            .env_remove("CAIRN_NODE_FAULTS")
            .env_remove("CAIRN_NODE_CAPACITY")
            .stdin(std::process::Stdio::null())
            .stdout(logfile.try_clone().expect("log"))
            .stderr(logfile);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn cairn-node");
        let mut node = Self {
            addr,
            id: None,
            child,
            log,
        };
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("http://{addr}/health")).send().await {
                if r.status().is_success() {
                    node.id = Some(node_id_at(addr).await);
                    return node;
                }
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("cairn-node exited {status}: {}", node.log_text());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let _ = node.child.kill();
        panic!("cairn-node not ready: {}", node.log_text());
    }

    /// The process id of the node.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A request signed with the test cluster secret.
    pub fn signed(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        let node = self.id.map(|id| id.to_string());
        let c = credential_with(
            &ClusterKey::new(SECRET),
            node.as_deref().unwrap_or(ANY_NODE),
            method.as_str(),
            path_and_query,
            claim_for(method.as_str(), path_and_query),
        );
        with_credential(
            client.request(method, format!("http://{}{}", self.addr, path_and_query)),
            &c,
        )
    }

    /// `GET /v1/info`.
    pub async fn info(&self, http: &reqwest::Client) -> cairn_common::protocol::NodeInfo {
        let r = self
            .signed(http, reqwest::Method::GET, "/v1/info?challenge=t")
            .send()
            .await
            .expect("info");
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        serde_json::from_slice(&r.bytes().await.expect("body")).expect("info json")
    }
}

impl Drop for ProcNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
