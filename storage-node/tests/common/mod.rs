//! Helpers shared by the node's integration tests: an in-process node, shard builders and
//! a signing client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cairn_common::auth::{ClusterKey, AUTH_HEADER, DATE_HEADER};
use cairn_common::ids::{NodeId, ObjectId};
use cairn_common::shard::{stored_block, Layout, ShardHeader};
use cairn_node::{serve, Node, NodeConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "test-cluster-secret";

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
        let (date, tag) = key.sign(method.as_str(), path_and_query);
        client
            .request(method, self.url(path_and_query))
            .header(DATE_HEADER, date)
            .header(AUTH_HEADER, tag)
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
        let mut node = Self { addr, child, log };
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("http://{addr}/health")).send().await {
                if r.status().is_success() {
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
        let (date, tag) = ClusterKey::new(SECRET).sign(method.as_str(), path_and_query);
        client
            .request(method, format!("http://{}{}", self.addr, path_and_query))
            .header(DATE_HEADER, date)
            .header(AUTH_HEADER, tag)
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
