//! Client side of the storage node protocol ([`cairn_common::protocol`]).

use std::time::Duration;

use bytes::Bytes;
use cairn_common::auth::{ClusterKey, AUTH_HEADER, DATE_HEADER};
use cairn_common::ids::ObjectId;
use cairn_common::protocol::{self, Inventory, ManifestList, NodeInfo, ERROR_HEADER};
use cairn_common::request_id;
use futures::Stream;

/// Talks to storage nodes, signing every request with the cluster key.
#[derive(Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    key: ClusterKey,
}

/// What a failed node call means for the caller.
#[derive(Debug, thiserror::Error)]
pub enum NodeCallError {
    /// The node could not be reached or the transfer broke.
    #[error("transport: {0}")]
    Transport(String),
    /// The node refused with a status and an error kind.
    #[error("status {status}: {kind}")]
    Refused { status: u16, kind: String },
}

impl NodeClient {
    /// A client using `key` for the cluster credential.
    pub fn new(key: ClusterKey) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { http, key }
    }

    fn request(
        &self,
        method: reqwest::Method,
        addr: &str,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        let (date, tag) = self.key.sign(method.as_str(), path_and_query);
        let req = self
            .http
            .request(method, format!("http://{addr}{path_and_query}"))
            .header(DATE_HEADER, date)
            .header(AUTH_HEADER, tag);
        // The S3 request this call is made for, so the node logs under the same id.
        match request_id::current() {
            Some(id) => req.header(request_id::HEADER, id.as_str()),
            None => req,
        }
    }

    async fn check(
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, NodeCallError> {
        let resp = resp.map_err(|e| NodeCallError::Transport(e.to_string()))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let kind = resp
            .headers()
            .get(ERROR_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown")
            .to_string();
        Err(NodeCallError::Refused {
            status: resp.status().as_u16(),
            kind,
        })
    }

    /// Sends a bodiless or small-bodied call and checks its status.
    async fn call(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(), NodeCallError> {
        let mut req = self.request(method, addr, path);
        if let Some(body) = body {
            req = req.body(body);
        }
        Self::check(req.send().await).await.map(|_| ())
    }

    /// Asks a node who it is, with a fresh challenge, and checks its proof of the secret.
    pub async fn info(&self, addr: &str) -> Result<NodeInfo, NodeCallError> {
        let challenge = hex::encode(rand::random::<[u8; 16]>());
        let path = format!("/v1/info?challenge={challenge}");
        let resp = Self::check(
            self.request(reqwest::Method::GET, addr, &path)
                .timeout(Duration::from_secs(3))
                .send()
                .await,
        )
        .await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| NodeCallError::Transport(e.to_string()))?;
        let info: NodeInfo = serde_json::from_slice(&body)
            .map_err(|e| NodeCallError::Transport(format!("bad node info: {e}")))?;
        if !self.key.check_proof(&challenge, &info.proof) {
            return Err(NodeCallError::Refused {
                status: 403,
                kind: "bad-proof".into(),
            });
        }
        Ok(info)
    }

    /// Streams a whole shard file to a node; returns once the node has it durably.
    pub async fn put_shard<S>(
        &self,
        addr: &str,
        object: &ObjectId,
        segment: u32,
        index: u8,
        len: u64,
        body: S,
    ) -> Result<(), NodeCallError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let path = protocol::shard_path(object, segment, index);
        let resp = self
            .request(reqwest::Method::PUT, addr, &path)
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await;
        Self::check(resp).await.map(|_| ())
    }

    /// Opens a stream of stored blocks `from..from+count` (data + crc each) of a shard.
    pub async fn read_shard(
        &self,
        addr: &str,
        object: &ObjectId,
        segment: u32,
        index: u8,
        from: u64,
        count: u64,
    ) -> Result<impl Stream<Item = Result<Bytes, reqwest::Error>> + use<>, NodeCallError> {
        let path = protocol::shard_read_path(object, segment, index, from, count);
        let resp =
            Self::check(self.request(reqwest::Method::GET, addr, &path).send().await).await?;
        Ok(resp.bytes_stream())
    }

    /// Deletes one shard on a node.
    pub async fn delete_shard(
        &self,
        addr: &str,
        object: &ObjectId,
        segment: u32,
        index: u8,
    ) -> Result<(), NodeCallError> {
        let path = protocol::shard_path(object, segment, index);
        self.call(reqwest::Method::DELETE, addr, &path, None).await
    }

    /// Stores an object's manifest on a node (durably).
    pub async fn put_manifest(
        &self,
        addr: &str,
        object: &ObjectId,
        manifest: Bytes,
    ) -> Result<(), NodeCallError> {
        let path = protocol::manifest_path(object);
        self.call(reqwest::Method::PUT, addr, &path, Some(manifest))
            .await
    }

    /// Stores a bucket marker on a node (durably).
    pub async fn put_bucket(
        &self,
        addr: &str,
        name: &str,
        marker: Bytes,
    ) -> Result<(), NodeCallError> {
        let path = protocol::bucket_path(name);
        self.call(reqwest::Method::PUT, addr, &path, Some(marker))
            .await
    }

    /// Removes a bucket marker from a node.
    pub async fn delete_bucket(&self, addr: &str, name: &str) -> Result<(), NodeCallError> {
        let path = protocol::bucket_path(name);
        self.call(reqwest::Method::DELETE, addr, &path, None).await
    }

    /// Removes an object's manifest from a node.
    pub async fn delete_manifest(
        &self,
        addr: &str,
        object: &ObjectId,
    ) -> Result<(), NodeCallError> {
        let path = protocol::manifest_path(object);
        self.call(reqwest::Method::DELETE, addr, &path, None).await
    }

    /// Every manifest and bucket marker stored on a node.
    pub async fn manifests(&self, addr: &str) -> Result<ManifestList, NodeCallError> {
        self.get_json(addr, protocol::MANIFESTS_PATH).await
    }

    /// Every shard stored on a node, with sizes and ages.
    pub async fn inventory(&self, addr: &str) -> Result<Inventory, NodeCallError> {
        self.get_json(addr, protocol::INVENTORY_PATH).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
    ) -> Result<T, NodeCallError> {
        let resp = Self::check(self.request(reqwest::Method::GET, addr, path).send().await).await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| NodeCallError::Transport(e.to_string()))?;
        serde_json::from_slice(&body)
            .map_err(|e| NodeCallError::Transport(format!("bad answer to {path}: {e}")))
    }

    /// Deletes every shard of an object version on a node.
    pub async fn delete_object(&self, addr: &str, object: &ObjectId) -> Result<(), NodeCallError> {
        let path = protocol::object_path(object);
        self.call(reqwest::Method::DELETE, addr, &path, None).await
    }
}
