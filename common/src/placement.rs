//! Placement: which nodes hold an object's shards, and the erasure geometry to use.
//!
//! Rendezvous (highest-random-weight) hashing ranks every live node for an object; the
//! first `k+m` get shards 0..k+m. Adding or removing a node only moves the shards that
//! node wins or held. When fewer than `K+M` nodes are live, the geometry narrows to
//! `(live-M)+M`: the same parity count, so a write never has less redundancy.

use sha2::{Digest, Sha256};

use crate::ids::{NodeId, ObjectId};

/// Why no geometry can be chosen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("{live} live storage nodes; at least {need} are needed for {m} parity shards")]
    NotEnoughNodes { live: usize, need: usize, m: u8 },
}

/// The erasure geometry for a new write given how many nodes are live.
///
/// Returns `(k, m)` with `m` unchanged and `k = min(K, live - m)`.
pub fn choose_geometry(live: usize, k_target: u8, m: u8) -> Result<(u8, u8), PlacementError> {
    let need = m as usize + 1;
    if live < need {
        return Err(PlacementError::NotEnoughNodes { live, need, m });
    }
    let k = (live - m as usize).min(k_target as usize) as u8;
    Ok((k, m))
}

fn score(object: &ObjectId, segment: u32, node: &NodeId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(object.0);
    h.update(segment.to_le_bytes());
    h.update(node.0);
    h.finalize().into()
}

/// Ranks `nodes` for one segment of an object, best first; the first `k+m` get shards.
pub fn rank(object: &ObjectId, segment: u32, nodes: &[NodeId]) -> Vec<NodeId> {
    let mut scored: Vec<([u8; 32], NodeId)> = nodes
        .iter()
        .map(|n| (score(object, segment, n), *n))
        .collect();
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    scored.into_iter().map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_keeps_parity_and_narrows_data() {
        assert_eq!(choose_geometry(4, 3, 1), Ok((3, 1)));
        assert_eq!(choose_geometry(6, 3, 1), Ok((3, 1)));
        assert_eq!(choose_geometry(3, 3, 1), Ok((2, 1)));
        assert_eq!(choose_geometry(2, 3, 1), Ok((1, 1)));
        assert!(choose_geometry(1, 3, 1).is_err());
        assert!(choose_geometry(2, 4, 2).is_err());
    }

    #[test]
    fn ranking_is_stable_and_spreads() {
        let nodes: Vec<NodeId> = (0..4).map(|_| NodeId::random()).collect();
        let mut first_counts = [0usize; 4];
        for _ in 0..400 {
            let o = ObjectId::random();
            let r = rank(&o, 0, &nodes);
            assert_eq!(r, rank(&o, 0, &nodes));
            assert_eq!(r.len(), 4);
            let i = nodes.iter().position(|n| *n == r[0]).expect("member");
            first_counts[i] += 1;
        }
        assert!(first_counts.iter().all(|&c| c > 50), "{first_counts:?}");
    }

    #[test]
    fn removing_a_node_keeps_the_others_order() {
        let nodes: Vec<NodeId> = (0..5).map(|_| NodeId::random()).collect();
        let o = ObjectId::random();
        let full = rank(&o, 3, &nodes);
        let without: Vec<NodeId> = nodes.iter().copied().filter(|n| *n != full[1]).collect();
        let expected: Vec<NodeId> = full.iter().copied().filter(|n| *n != full[1]).collect();
        assert_eq!(rank(&o, 3, &without), expected);
    }
}
