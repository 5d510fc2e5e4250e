//! Authentication of the internal node API with the cluster secret.
//!
//! Every request carries `x-cairn-date` (unix seconds) and `x-cairn-auth`, the hex
//! HMAC-SHA256 under the cluster secret of `"CAIRN-HMAC-1\n" + method + "\n" +
//! path_and_query + "\n" + date`. Nodes refuse requests with a missing or wrong tag or a
//! date more than [`MAX_SKEW_SECS`] away. Shard bytes carry their own crc32c blocks; the
//! tag protects who may read and write them.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Header carrying the request time in unix seconds.
pub const DATE_HEADER: &str = "x-cairn-date";
/// Header carrying the hex HMAC tag.
pub const AUTH_HEADER: &str = "x-cairn-auth";
/// Largest accepted clock difference between gateway and node.
pub const MAX_SKEW_SECS: u64 = 300;

/// Why a request's credential was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing cluster credential")]
    Missing,
    #[error("cluster credential does not match")]
    BadTag,
    #[error("request date is too far from the node's clock")]
    Skewed,
}

/// The shared cluster secret.
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl ClusterKey {
    /// Wraps the secret's bytes.
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self(secret.as_ref().to_vec())
    }

    fn tag(&self, method: &str, path_and_query: &str, date: u64) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"CAIRN-HMAC-1\n");
        mac.update(method.as_bytes());
        mac.update(b"\n");
        mac.update(path_and_query.as_bytes());
        mac.update(b"\n");
        mac.update(date.to_string().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The `(date, tag)` header values for a request made now.
    pub fn sign(&self, method: &str, path_and_query: &str) -> (String, String) {
        let date = now_secs();
        (
            date.to_string(),
            hex::encode(self.tag(method, path_and_query, date)),
        )
    }

    /// Checks a request's header values against the node's clock.
    pub fn verify(
        &self,
        method: &str,
        path_and_query: &str,
        date: Option<&str>,
        tag: Option<&str>,
    ) -> Result<(), AuthError> {
        let (date, tag) = match (date, tag) {
            (Some(d), Some(t)) => (d, t),
            _ => return Err(AuthError::Missing),
        };
        let date: u64 = date.parse().map_err(|_| AuthError::Missing)?;
        if now_secs().abs_diff(date) > MAX_SKEW_SECS {
            return Err(AuthError::Skewed);
        }
        let mut given = [0u8; 32];
        hex::decode_to_slice(tag, &mut given).map_err(|_| AuthError::BadTag)?;
        let want = self.tag(method, path_and_query, date);
        if bool::from(want.ct_eq(&given)) {
            Ok(())
        } else {
            Err(AuthError::BadTag)
        }
    }

    /// Bearer token for the admin and metrics routes of the gateway and the nodes, unless
    /// the operator sets one: derived from the secret, so every member knows it without
    /// more configuration, and the secret cannot be recovered from it.
    pub fn admin_token(&self) -> String {
        hex::encode(&self.tag("ADMIN-TOKEN", "", 0)[..16])
    }

    /// The key of shard header and block tags.
    pub fn shard_key(&self) -> crate::shard::ShardKey {
        crate::shard::ShardKey::derive(&self.0)
    }

    /// Proof that the holder knows the secret, bound to a challenge (used to admit nodes).
    pub fn prove(&self, challenge: &str) -> String {
        hex::encode(self.tag("PROVE", challenge, 0))
    }

    /// Checks a [`ClusterKey::prove`] answer in constant time.
    pub fn check_proof(&self, challenge: &str, proof: &str) -> bool {
        let mut given = [0u8; 32];
        if hex::decode_to_slice(proof, &mut given).is_err() {
            return false;
        }
        bool::from(self.tag("PROVE", challenge, 0).ct_eq(&given))
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

    #[test]
    fn signed_requests_verify_and_tampering_fails() {
        let key = ClusterKey::new("s3cret");
        let (date, tag) = key.sign("PUT", "/v1/shards/x/0/1");
        assert_eq!(
            key.verify("PUT", "/v1/shards/x/0/1", Some(&date), Some(&tag)),
            Ok(())
        );
        assert_eq!(
            key.verify("GET", "/v1/shards/x/0/1", Some(&date), Some(&tag)),
            Err(AuthError::BadTag)
        );
        assert_eq!(
            ClusterKey::new("other").verify("PUT", "/v1/shards/x/0/1", Some(&date), Some(&tag)),
            Err(AuthError::BadTag)
        );
        assert_eq!(
            key.verify("PUT", "/", None, Some(&tag)),
            Err(AuthError::Missing)
        );
        let old = (now_secs() - 3600).to_string();
        assert_eq!(
            key.verify("PUT", "/", Some(&old), Some(&tag)),
            Err(AuthError::Skewed)
        );
    }

    #[test]
    fn proofs_bind_to_secret_and_challenge() {
        let key = ClusterKey::new("a");
        let p = key.prove("c1");
        assert!(key.check_proof("c1", &p));
        assert!(!key.check_proof("c2", &p));
        assert!(!ClusterKey::new("b").check_proof("c1", &p));
    }
}
