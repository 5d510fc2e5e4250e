//! Authentication of the internal node API with the cluster secret.
//!
//! Every request carries five headers: `x-cairn-date` (unix seconds), `x-cairn-nonce` (32
//! random hex digits), `x-cairn-node` (the id of the node it is meant for, or `-` for a
//! probe that asks who is there), `x-cairn-body` (what the body is: empty, the hex SHA-256
//! of a body sent from memory, or `shard` for a shard file, whose header and blocks carry
//! their own tags, see [`crate::shard`]) and `x-cairn-auth`, the hex HMAC-SHA256 under the
//! cluster secret of
//!
//! ```text
//! "CAIRN-HMAC-2\n" method "\n" path_and_query "\n" date "\n" nonce "\n" node "\n" body
//! ```
//!
//! A node refuses a request whose tag is missing or wrong, whose date is more than
//! [`MAX_SKEW_SECS`] away, whose nonce it has already seen ([`ReplayGuard`]), that is
//! meant for another node, or whose body is not what `x-cairn-body` says. A captured
//! request can thus be neither replayed, nor sent to another node, nor given another body.
//!
//! A node proves it holds the secret by answering a challenge with a tag over the
//! challenge, its id and the local address the probe's connection arrived on
//! ([`ClusterKey::prove`]); the gateway checks that address against the one it connected
//! to, so a device that relays the challenge to a real node gets a proof for that node's
//! address, not its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Header carrying the request time in unix seconds.
pub const DATE_HEADER: &str = "x-cairn-date";
/// Header carrying the request's random nonce.
pub const NONCE_HEADER: &str = "x-cairn-nonce";
/// Header naming the node the request is meant for.
pub const NODE_HEADER: &str = "x-cairn-node";
/// Header saying what the body is ([`BodyClaim`]).
pub const BODY_HEADER: &str = "x-cairn-body";
/// Header carrying the hex HMAC tag.
pub const AUTH_HEADER: &str = "x-cairn-auth";
/// Largest accepted clock difference between gateway and node.
pub const MAX_SKEW_SECS: u64 = 300;
/// `NODE_HEADER` of a probe sent before the node's id is known (only `GET /v1/info`).
pub const ANY_NODE: &str = "-";
/// `BODY_HEADER` of a shard file.
pub const BODY_SHARD: &str = "shard";

/// Why a request's credential was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing cluster credential")]
    Missing,
    #[error("cluster credential does not match")]
    BadTag,
    #[error("request date is too far from the node's clock")]
    Skewed,
    #[error("request was already received (replay)")]
    Replayed,
    #[error("request is meant for another node")]
    WrongNode,
    #[error("request body does not match its signed description")]
    BadBody,
    #[error("too many recent requests to check for replays")]
    Busy,
}

/// What a request's body is, as signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyClaim {
    /// No body.
    Empty,
    /// A body sent from memory, with its SHA-256.
    Digest([u8; 32]),
    /// A shard file: its header and blocks are tagged, the node checks every one.
    Shard,
}

impl BodyClaim {
    /// The claim for `body` sent from memory.
    pub fn of(body: &[u8]) -> Self {
        Self::Digest(Sha256::digest(body).into())
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        match self {
            Self::Empty => String::new(),
            Self::Digest(d) => hex::encode(d),
            Self::Shard => BODY_SHARD.to_string(),
        }
    }

    /// Parses a header value (absent is empty).
    pub fn parse(value: Option<&str>) -> Result<Self, AuthError> {
        match value.unwrap_or("") {
            "" => Ok(Self::Empty),
            BODY_SHARD => Ok(Self::Shard),
            hexed => {
                let mut d = [0u8; 32];
                hex::decode_to_slice(hexed, &mut d).map_err(|_| AuthError::Missing)?;
                Ok(Self::Digest(d))
            }
        }
    }

    /// Whether `body` is what a [`BodyClaim::Digest`] promised.
    pub fn matches(&self, body: &[u8]) -> bool {
        match self {
            Self::Empty => body.is_empty(),
            Self::Digest(d) => bool::from(Sha256::digest(body).as_slice().ct_eq(d)),
            Self::Shard => false,
        }
    }
}

/// The credential headers of one request.
#[derive(Clone, Debug)]
pub struct Credential {
    /// `x-cairn-date`.
    pub date: String,
    /// `x-cairn-nonce`.
    pub nonce: String,
    /// `x-cairn-node`.
    pub node: String,
    /// `x-cairn-body`.
    pub body: String,
    /// `x-cairn-auth`.
    pub tag: String,
}

impl Credential {
    /// `(name, value)` of every header to send.
    pub fn headers(&self) -> [(&'static str, &str); 5] {
        [
            (DATE_HEADER, &self.date),
            (NONCE_HEADER, &self.nonce),
            (NODE_HEADER, &self.node),
            (BODY_HEADER, &self.body),
            (AUTH_HEADER, &self.tag),
        ]
    }
}

/// What a node learns from a valid credential; it still has to check the nonce
/// ([`ReplayGuard`]), the node and the body against itself and the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Request time, unix seconds.
    pub date: u64,
    /// The request's nonce.
    pub nonce: u128,
    /// The node it is meant for (or [`ANY_NODE`]).
    pub node: String,
    /// What the body is.
    pub body: BodyClaim,
}

/// The shared cluster secret.
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl ClusterKey {
    /// Wraps the secret's bytes.
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self(secret.as_ref().to_vec())
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(b"\n");
            }
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    fn tag(
        &self,
        method: &str,
        path_and_query: &str,
        date: &str,
        nonce: &str,
        node: &str,
        body: &str,
    ) -> [u8; 32] {
        self.mac(&[
            b"CAIRN-HMAC-2",
            method.as_bytes(),
            path_and_query.as_bytes(),
            date.as_bytes(),
            nonce.as_bytes(),
            node.as_bytes(),
            body.as_bytes(),
        ])
    }

    /// The credential for a request made now to `node` (its id, or [`ANY_NODE`]).
    pub fn sign(
        &self,
        method: &str,
        path_and_query: &str,
        node: &str,
        body: BodyClaim,
    ) -> Credential {
        let date = now_secs().to_string();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let body = body.to_header();
        let tag = hex::encode(self.tag(method, path_and_query, &date, &nonce, node, &body));
        Credential {
            date,
            nonce,
            node: node.to_string(),
            body,
            tag,
        }
    }

    /// Checks a request's credential headers (`header(name)` gives a header's value)
    /// against the node's clock.
    pub fn verify<'h>(
        &self,
        method: &str,
        path_and_query: &str,
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> Result<Verified, AuthError> {
        let (Some(date), Some(nonce), Some(node), Some(tag)) = (
            header(DATE_HEADER),
            header(NONCE_HEADER),
            header(NODE_HEADER),
            header(AUTH_HEADER),
        ) else {
            return Err(AuthError::Missing);
        };
        let body = header(BODY_HEADER).unwrap_or("");
        let when: u64 = date.parse().map_err(|_| AuthError::Missing)?;
        let mut nonce_bytes = [0u8; 16];
        hex::decode_to_slice(nonce, &mut nonce_bytes).map_err(|_| AuthError::Missing)?;
        let mut given = [0u8; 32];
        hex::decode_to_slice(tag, &mut given).map_err(|_| AuthError::BadTag)?;
        let want = self.tag(method, path_and_query, date, nonce, node, body);
        if !bool::from(want.ct_eq(&given)) {
            return Err(AuthError::BadTag);
        }
        if now_secs().abs_diff(when) > MAX_SKEW_SECS {
            return Err(AuthError::Skewed);
        }
        Ok(Verified {
            date: when,
            nonce: u128::from_be_bytes(nonce_bytes),
            node: node.to_string(),
            body: BodyClaim::parse(Some(body))?,
        })
    }

    /// Bearer token for the admin and metrics routes of the gateway and the nodes, unless
    /// the operator sets one: derived from the secret, so every member knows it without
    /// more configuration, and the secret cannot be recovered from it.
    pub fn admin_token(&self) -> String {
        hex::encode(&self.mac(&[b"CAIRN-HMAC-1", b"ADMIN-TOKEN", b"", b"0"])[..16])
    }

    /// The key of shard header and block tags.
    pub fn shard_key(&self) -> crate::shard::ShardKey {
        crate::shard::ShardKey::derive(&self.0)
    }

    /// A node's proof that it holds the secret: bound to the challenge, the node's id and
    /// the local address (`ip:port`) the probe's connection arrived on.
    pub fn prove(&self, challenge: &str, node: &str, seen_at: &str) -> String {
        hex::encode(self.mac(&[
            b"CAIRN-PROVE-2",
            challenge.as_bytes(),
            node.as_bytes(),
            seen_at.as_bytes(),
        ]))
    }

    /// Checks a [`ClusterKey::prove`] answer in constant time.
    pub fn check_proof(&self, challenge: &str, node: &str, seen_at: &str, proof: &str) -> bool {
        let mut given = [0u8; 32];
        if hex::decode_to_slice(proof, &mut given).is_err() {
            return false;
        }
        let want = self.mac(&[
            b"CAIRN-PROVE-2",
            challenge.as_bytes(),
            node.as_bytes(),
            seen_at.as_bytes(),
        ]);
        bool::from(want.ct_eq(&given))
    }
}

/// The nonces a node has accepted within the last [`MAX_SKEW_SECS`] either side, so that
/// a request is accepted once. Bounded: when full of unexpired nonces it refuses new
/// requests ([`AuthError::Busy`]) rather than forget one that could be replayed.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<u128, u64>>,
    cap: usize,
}

impl ReplayGuard {
    /// Nonces kept at most (about 40 bytes each).
    pub const DEFAULT_CAP: usize = 500_000;

    /// A guard keeping at most `cap` nonces.
    pub fn new(cap: usize) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            cap,
        }
    }

    /// Accepts `v`'s nonce if it has not been seen; remembers it until its date is out
    /// of the accepted window.
    pub fn admit(&self, v: &Verified) -> Result<(), AuthError> {
        self.admit_at(v, now_secs())
    }

    fn admit_at(&self, v: &Verified, now: u64) -> Result<(), AuthError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= self.cap {
            seen.retain(|_, &mut expires| expires >= now);
            if seen.len() >= self.cap {
                return Err(AuthError::Busy);
            }
        }
        let expires = v.date.saturating_add(MAX_SKEW_SECS);
        match seen.entry(v.nonce) {
            std::collections::hash_map::Entry::Occupied(_) => Err(AuthError::Replayed),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(expires);
                Ok(())
            }
        }
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'c>(c: &'c Credential) -> impl Fn(&str) -> Option<&'c str> {
        move |name| match name {
            DATE_HEADER => Some(c.date.as_str()),
            NONCE_HEADER => Some(c.nonce.as_str()),
            NODE_HEADER => Some(c.node.as_str()),
            BODY_HEADER => Some(c.body.as_str()),
            AUTH_HEADER => Some(c.tag.as_str()),
            _ => None,
        }
    }

    #[test]
    fn signed_requests_verify_and_every_signed_part_is_bound() {
        let key = ClusterKey::new("s3cret");
        let body = BodyClaim::of(b"{\"manifest\":1}");
        let c = key.sign("PUT", "/v1/objects/x/manifest", "node-a", body);
        let v = key
            .verify("PUT", "/v1/objects/x/manifest", headers(&c))
            .expect("valid");
        assert_eq!(v.node, "node-a");
        assert_eq!(v.body, body);
        assert!(v.body.matches(b"{\"manifest\":1}"));
        assert!(!v.body.matches(b"{\"manifest\":2}"));
        assert!(matches!(
            key.verify("GET", "/v1/objects/x/manifest", headers(&c)),
            Err(AuthError::BadTag)
        ));
        assert!(matches!(
            ClusterKey::new("other").verify("PUT", "/v1/objects/x/manifest", headers(&c)),
            Err(AuthError::BadTag)
        ));
        // Each credential header is covered: changing any one breaks the tag.
        for field in [NONCE_HEADER, NODE_HEADER, BODY_HEADER, DATE_HEADER] {
            let mut forged = c.clone();
            let replacement = match field {
                NONCE_HEADER => "00000000000000000000000000000001".to_string(),
                NODE_HEADER => "node-b".to_string(),
                BODY_HEADER => BODY_SHARD.to_string(),
                _ => (now_secs() + 1).to_string(),
            };
            match field {
                NONCE_HEADER => forged.nonce = replacement,
                NODE_HEADER => forged.node = replacement,
                BODY_HEADER => forged.body = replacement,
                _ => forged.date = replacement,
            }
            assert!(
                matches!(
                    key.verify("PUT", "/v1/objects/x/manifest", headers(&forged)),
                    Err(AuthError::BadTag)
                ),
                "{field} not bound"
            );
        }
        assert!(matches!(
            key.verify("PUT", "/", |_| None),
            Err(AuthError::Missing)
        ));
    }

    #[test]
    fn old_requests_are_skewed() {
        let key = ClusterKey::new("s3cret");
        let date = (now_secs() - 3600).to_string();
        let nonce = "0".repeat(32);
        let tag = hex::encode(key.tag("GET", "/", &date, &nonce, ANY_NODE, ""));
        let c = Credential {
            date,
            nonce,
            node: ANY_NODE.into(),
            body: String::new(),
            tag,
        };
        assert!(matches!(
            key.verify("GET", "/", headers(&c)),
            Err(AuthError::Skewed)
        ));
    }

    #[test]
    fn a_nonce_is_accepted_once_and_the_guard_stays_bounded() {
        let key = ClusterKey::new("s3cret");
        let guard = ReplayGuard::new(3);
        let c = key.sign("DELETE", "/v1/objects/x", "n", BodyClaim::Empty);
        let v = key
            .verify("DELETE", "/v1/objects/x", headers(&c))
            .expect("v");
        guard.admit(&v).expect("first time");
        assert_eq!(guard.admit(&v), Err(AuthError::Replayed));
        let fresh = |n: u128, date: u64| Verified {
            date,
            nonce: n,
            node: "n".into(),
            body: BodyClaim::Empty,
        };
        let now = now_secs();
        guard.admit_at(&fresh(1, now), now).expect("2");
        guard.admit_at(&fresh(2, now), now).expect("3");
        // Full of nonces still in the window: refuse rather than forget one.
        assert_eq!(guard.admit_at(&fresh(3, now), now), Err(AuthError::Busy));
        // Once they are out of the window they make room.
        let later = now + 2 * MAX_SKEW_SECS;
        guard.admit_at(&fresh(3, later), later).expect("room again");
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn proofs_bind_secret_challenge_node_and_address() {
        let key = ClusterKey::new("a");
        let p = key.prove("c1", "node", "10.0.0.2:7000");
        assert!(key.check_proof("c1", "node", "10.0.0.2:7000", &p));
        assert!(!key.check_proof("c2", "node", "10.0.0.2:7000", &p));
        assert!(!key.check_proof("c1", "other", "10.0.0.2:7000", &p));
        assert!(!key.check_proof("c1", "node", "10.0.0.9:7000", &p));
        assert!(!ClusterKey::new("b").check_proof("c1", "node", "10.0.0.2:7000", &p));
    }

    #[test]
    fn body_claims_round_trip() {
        for c in [BodyClaim::Empty, BodyClaim::Shard, BodyClaim::of(b"x")] {
            assert_eq!(BodyClaim::parse(Some(&c.to_header())), Ok(c));
        }
        assert_eq!(BodyClaim::parse(None), Ok(BodyClaim::Empty));
        assert!(BodyClaim::parse(Some("zz")).is_err());
    }
}
