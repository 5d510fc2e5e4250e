//! The storage node's internal HTTP API, shared by the node (server) and gateway (client).
//!
//! All `/v1/` routes need the cluster credential of [`crate::auth`]. A call made for an S3
//! request carries the request's id in [`crate::request_id::HEADER`] (optional).
//!
//! | method | path | meaning |
//! |---|---|---|
//! | `PUT` | `/v1/shards/{object}/{segment}/{index}` | store a shard; body = the whole shard file (header + blocks). Answers 201 only once the file is fsynced and renamed into place. Or, as a raw upload, see below. |
//! | `GET` | `/v1/shards/{object}/{segment}/{index}?from=B&count=N` | stream stored blocks `B..B+N` (data + crc each), each verified before it is sent |
//! | `GET` | `/v1/shards/{object}/{segment}/{index}/header` | the shard's encoded header |
//! | `DELETE` | `/v1/shards/{object}/{segment}/{index}` | remove one shard (a replaced multipart part); 204 even if absent |
//! | `DELETE` | `/v1/objects/{object}` | remove every shard of an object version |
//! | `GET` | `/v1/objects` | JSON list of the object ids with shards here ([`ObjectList`]) |
//! | `PUT` | `/v1/objects/{object}/manifest` | store the committed object's manifest (opaque JSON from the gateway), durably |
//! | `DELETE` | `/v1/objects/{object}/manifest` | remove the manifest (the object was deleted; its shards go later); 204 even if absent |
//! | `GET` | `/v1/manifests` | every stored manifest and bucket marker ([`ManifestList`]), to rebuild a lost catalog |
//! | `PUT` | `/v1/buckets/{name}` | store a bucket marker (opaque JSON from the gateway), durably |
//! | `DELETE` | `/v1/buckets/{name}` | remove a bucket marker; 204 even if absent |
//! | `GET` | `/v1/inventory` | every shard stored here with its size and age ([`Inventory`]) |
//! | `GET` | `/v1/info?challenge=C` | [`NodeInfo`], including proof of the cluster secret |
//! | `GET` | `/health` | unauthenticated liveness: `ok` |
//! | `GET` | `/metrics` | Prometheus text; needs `Authorization: Bearer <admin token>` |
//!
//! **Raw shard upload.** A shard `PUT` without a body but with `Upgrade:` [`SHARD_UPGRADE`]
//! and [`SHARD_LENGTH_HEADER`] is answered `101 Switching Protocols` (after the credential
//! check, like any call). The sender then writes exactly that many bytes of shard file on
//! the connection, and the node answers with one [`UploadOutcome`] line (`201 stored` once
//! the file is durable, else the status and `x-cairn-error` kind a plain `PUT` would have
//! got) and closes it. The node reads the socket straight into its aligned disk buffers,
//! which saves copying every byte once more; the gateway uses it for shards of at least
//! [`RAW_UPLOAD_MIN`] bytes, where that saving outweighs a connection of its own.
//!
//! A block that fails its crc32c is never sent: before the first byte the node answers
//! 409 with `x-cairn-error: corrupt-block`; later the response body is aborted, which a
//! client sees as a transport error. Either way the gateway rebuilds from other shards.

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, ObjectId};

/// Version of this internal protocol, announced by nodes (2: raw shard uploads; 3:
/// credentials bound to nonce, node and body, proofs bound to the node and its address,
/// tagged shards).
pub const PROTOCOL_VERSION: u32 = 3;
/// `Upgrade` token of a raw shard upload.
pub const SHARD_UPGRADE: &str = "cairn-shard";
/// Request header giving a raw shard upload's length in bytes.
pub const SHARD_LENGTH_HEADER: &str = "x-cairn-shard-length";
/// Shard files from this size on are sent as raw uploads by the gateway.
pub const RAW_UPLOAD_MIN: u64 = 1 << 20;
/// Longest outcome line a node sends after a raw upload.
pub const MAX_OUTCOME_LINE: usize = 256;
/// Response header naming a node-side error kind.
pub const ERROR_HEADER: &str = "x-cairn-error";
/// `ERROR_HEADER` value for a block that failed its checksum.
pub const ERR_CORRUPT_BLOCK: &str = "corrupt-block";
/// `ERROR_HEADER` value for a shard refused for lack of room (status 507).
pub const ERR_DISK_FULL: &str = "disk-full";
/// `ERROR_HEADER` value for a shard the node does not have.
pub const ERR_NO_SUCH_SHARD: &str = "no-such-shard";

/// DNS-SD service type nodes announce over mDNS.
pub const MDNS_SERVICE_TYPE: &str = "_cairn-node._tcp.local.";
/// TXT key carrying the node id.
pub const TXT_NODE_ID: &str = "id";
/// TXT key carrying the protocol version.
pub const TXT_PROTOCOL: &str = "proto";
/// TXT key carrying the capacity in bytes.
pub const TXT_CAPACITY: &str = "cap";

/// Where mDNS runs: not at all, on loopback only (tests, one-box clusters), or on every
/// interface (a real LAN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MdnsScope {
    /// No mDNS.
    Off,
    /// 127.0.0.0/8 only.
    Loopback,
    /// Every interface.
    All,
}

impl std::str::FromStr for MdnsScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(MdnsScope::Off),
            "loopback" => Ok(MdnsScope::Loopback),
            "all" => Ok(MdnsScope::All),
            _ => Err(format!("expected off, loopback or all, not {s:?}")),
        }
    }
}

/// Path of a shard.
pub fn shard_path(object: &ObjectId, segment: u32, index: u8) -> String {
    format!("/v1/shards/{object}/{segment}/{index}")
}

/// Path and query to read blocks `from..from+count` of a shard.
pub fn shard_read_path(
    object: &ObjectId,
    segment: u32,
    index: u8,
    from: u64,
    count: u64,
) -> String {
    format!("/v1/shards/{object}/{segment}/{index}?from={from}&count={count}")
}

/// How a raw shard upload ended, as the node's one-line answer: `"{status} {kind}\n"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadOutcome {
    /// HTTP status a plain `PUT` would have got (201 when stored).
    pub status: u16,
    /// `x-cairn-error` kind, or `stored`.
    pub kind: String,
}

impl UploadOutcome {
    /// Kind of a stored shard.
    pub const STORED: &'static str = "stored";

    /// The line sent on the wire.
    pub fn to_line(&self) -> String {
        format!("{} {}\n", self.status, self.kind)
    }

    /// Parses a line sent by [`UploadOutcome::to_line`].
    pub fn parse(line: &[u8]) -> Option<Self> {
        let line = std::str::from_utf8(line).ok()?.strip_suffix('\n')?;
        let (status, kind) = line.split_once(' ')?;
        let kind_ok = !kind.is_empty()
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        Some(Self {
            status: status.parse().ok().filter(|s| (100..600).contains(s))?,
            kind: kind_ok.then(|| kind.to_string())?,
        })
    }

    /// Whether the shard was stored.
    pub fn is_stored(&self) -> bool {
        self.status == 201 && self.kind == Self::STORED
    }
}

/// Path of an object version's shards on a node.
pub fn object_path(object: &ObjectId) -> String {
    format!("/v1/objects/{object}")
}

/// Path of an object version's manifest on a node.
pub fn manifest_path(object: &ObjectId) -> String {
    format!("/v1/objects/{object}/manifest")
}

/// Path of a bucket marker on a node.
pub fn bucket_path(name: &str) -> String {
    format!("/v1/buckets/{name}")
}

/// Whether `name` can be a bucket marker's file name (S3 bucket names always can).
pub fn valid_marker_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// Path listing every manifest on a node.
pub const MANIFESTS_PATH: &str = "/v1/manifests";
/// Path listing every shard on a node.
pub const INVENTORY_PATH: &str = "/v1/inventory";
/// Largest manifest a node accepts (a 10 000-part upload's record fits easily).
pub const MAX_MANIFEST_LEN: usize = 16 * 1024 * 1024;

/// One shard: object version, segment and index.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardRef {
    /// Object version.
    pub object: ObjectId,
    /// Segment within it.
    pub segment: u32,
    /// Shard index within the segment's stripes.
    pub index: u8,
}

/// One entry of [`Inventory`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InventoryEntry {
    /// Which shard.
    #[serde(flatten)]
    pub shard: ShardRef,
    /// Bytes of the shard file.
    pub len: u64,
    /// Seconds since the file was last written.
    pub age_secs: u64,
}

/// What `GET /v1/inventory` returns.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct Inventory {
    /// Every shard file on the node.
    pub shards: Vec<InventoryEntry>,
    /// Every object version with a manifest here, with the manifest's age in seconds.
    #[serde(default)]
    pub manifests: Vec<(ObjectId, u64)>,
}

/// One manifest as stored on a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredManifest {
    /// Object version it describes.
    pub object: ObjectId,
    /// The manifest as the gateway wrote it (JSON text).
    pub manifest: String,
}

/// What `GET /v1/manifests` returns.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct ManifestList {
    /// Every manifest on the node.
    pub manifests: Vec<StoredManifest>,
    /// Every bucket marker: name and the marker as the gateway wrote it (JSON text).
    #[serde(default)]
    pub buckets: Vec<(String, String)>,
}

/// What `GET /v1/info` returns.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// Persistent node id.
    pub node_id: NodeId,
    /// [`PROTOCOL_VERSION`] of the node.
    pub protocol: u32,
    /// Bytes of the filesystem holding the data dir.
    pub capacity_bytes: u64,
    /// Bytes free there.
    pub free_bytes: u64,
    /// Shard files stored.
    pub shards: u64,
    /// The local address (`ip:port`) the probe's connection arrived on.
    #[serde(default)]
    pub seen_at: String,
    /// `ClusterKey::prove(challenge, node_id, seen_at)`, so the gateway knows the node
    /// holds the secret and answers at the address it connected to.
    pub proof: String,
    /// Shards the node's scrub found corrupt (at most [`MAX_REPORTED_BAD`]), for repair.
    #[serde(default)]
    pub bad_shards: Vec<ShardRef>,
}

/// Most bad shards one [`NodeInfo`] reports; the rest wait for the next heartbeat.
pub const MAX_REPORTED_BAD: usize = 1000;

/// What `GET /v1/objects` returns.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct ObjectList {
    /// Object ids with at least one shard on the node.
    pub objects: Vec<ObjectId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_outcome_round_trips_and_refuses_garbage() {
        for (status, kind) in [(201, UploadOutcome::STORED), (400, ERR_CORRUPT_BLOCK)] {
            let o = UploadOutcome {
                status,
                kind: kind.into(),
            };
            assert_eq!(
                UploadOutcome::parse(o.to_line().as_bytes()),
                Some(o.clone())
            );
            assert_eq!(o.is_stored(), status == 201);
        }
        assert!(!UploadOutcome::parse(b"201 corrupt-block\n")
            .expect("parses")
            .is_stored());
        for bad in [
            &b""[..],
            b"201 stored",
            b"201\n",
            b"201 \n",
            b"2x1 stored\n",
            b"999 stored\n",
            b"201 Stored\n",
            b"201 stored extra\n",
            b"\xff\xfe\n",
        ] {
            assert_eq!(UploadOutcome::parse(bad), None, "{bad:?}");
        }
    }
}
