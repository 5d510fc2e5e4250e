//! Placement: which nodes hold an object's shards, and the erasure geometry to use.
//!
//! Weighted rendezvous (highest-random-weight) hashing ranks the candidate nodes for each
//! segment of an object; the first `k+m` get shards 0..k+m. A node's weight is its
//! capacity, so a 1 TB SSD next to 64 GB cards wins proportionally more segments and
//! the nodes fill evenly in percent. Adding or removing a node only moves the shards that
//! node wins or held. When fewer than `K+M` nodes can take shards, the geometry narrows to
//! `(n-M)+M`: the same parity count, so a write never has less redundancy.

use sha2::{Digest, Sha256};

use crate::ids::{NodeId, ObjectId};

/// Why no geometry can be chosen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("{live} live storage nodes; at least {need} are needed for {m} parity shards")]
    NotEnoughNodes { live: usize, need: usize, m: u8 },
}

/// The erasure geometry for a new write given how many nodes can take a shard.
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

/// A node placement may choose, with its weight (its capacity in bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The node.
    pub id: NodeId,
    /// Relative share of shards it should get; 0 counts as 1.
    pub weight: u64,
}

/// A uniform draw in (0, 1) from the hash of `(object, segment, node)`.
fn draw(object: &ObjectId, segment: u32, node: &NodeId) -> f64 {
    let mut h = Sha256::new();
    h.update(object.0);
    h.update(segment.to_le_bytes());
    h.update(node.0);
    let digest: [u8; 32] = h.finalize().into();
    let mut top = [0u8; 8];
    top.copy_from_slice(&digest[..8]);
    // 53 random bits, shifted off zero so the logarithm below is finite.
    ((u64::from_le_bytes(top) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A node's score for one segment: `-weight / ln(u)`. The highest score wins, and a node
/// wins with probability proportional to its weight (weighted rendezvous hashing).
fn score(object: &ObjectId, segment: u32, c: &Candidate) -> f64 {
    -(c.weight.max(1) as f64) / draw(object, segment, &c.id).ln()
}

/// Ranks `nodes` for one segment of an object, best first; the first `k+m` get shards.
/// Deterministic for the same object, segment and candidates.
pub fn rank(object: &ObjectId, segment: u32, nodes: &[Candidate]) -> Vec<NodeId> {
    let mut scored: Vec<(f64, NodeId)> = nodes
        .iter()
        .map(|c| (score(object, segment, c), c.id))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
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

    fn equal(nodes: &[NodeId]) -> Vec<Candidate> {
        nodes
            .iter()
            .map(|&id| Candidate {
                id,
                weight: 64 << 30,
            })
            .collect()
    }

    #[test]
    fn ranking_is_stable_and_spreads() {
        let ids: Vec<NodeId> = (0..4).map(|_| NodeId::random()).collect();
        let nodes = equal(&ids);
        let mut first_counts = [0usize; 4];
        for _ in 0..400 {
            let o = ObjectId::random();
            let r = rank(&o, 0, &nodes);
            assert_eq!(r, rank(&o, 0, &nodes));
            assert_eq!(r.len(), 4);
            let i = ids.iter().position(|n| *n == r[0]).expect("member");
            first_counts[i] += 1;
        }
        assert!(first_counts.iter().all(|&c| c > 50), "{first_counts:?}");
    }

    #[test]
    fn removing_a_node_keeps_the_others_order() {
        let nodes = equal(&(0..5).map(|_| NodeId::random()).collect::<Vec<_>>());
        let o = ObjectId::random();
        let full = rank(&o, 3, &nodes);
        let without: Vec<Candidate> = nodes.iter().copied().filter(|c| c.id != full[1]).collect();
        let expected: Vec<NodeId> = full.iter().copied().filter(|n| *n != full[1]).collect();
        assert_eq!(rank(&o, 3, &without), expected);
    }

    #[test]
    fn shards_follow_capacity() {
        // One 1 TB SSD among 64 GB cards, one shard per segment (1+0 would be the
        // purest test; the first place of the ranking is what k+m=1 uses).
        let ids: Vec<NodeId> = (0..4).map(|_| NodeId::random()).collect();
        let weights = [1000u64 << 30, 64 << 30, 64 << 30, 64 << 30];
        let nodes: Vec<Candidate> = ids
            .iter()
            .zip(weights)
            .map(|(&id, weight)| Candidate { id, weight })
            .collect();
        let mut wins = [0usize; 4];
        let rounds = 20_000;
        let o = ObjectId::random();
        for segment in 0..rounds {
            let first = rank(&o, segment, &nodes)[0];
            wins[ids.iter().position(|n| *n == first).expect("member")] += 1;
        }
        let total: u64 = weights.iter().sum();
        for (w, won) in weights.iter().zip(wins) {
            let expected = *w as f64 / total as f64;
            let got = won as f64 / rounds as f64;
            assert!(
                (got - expected).abs() < 0.02,
                "{wins:?}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn a_zero_weight_counts_as_one() {
        let nodes = [
            Candidate {
                id: NodeId::random(),
                weight: 0,
            },
            Candidate {
                id: NodeId::random(),
                weight: 1,
            },
        ];
        let o = ObjectId::random();
        let mut seen = [false; 2];
        for segment in 0..200 {
            let first = rank(&o, segment, &nodes)[0];
            seen[nodes.iter().position(|c| c.id == first).expect("member")] = true;
        }
        assert_eq!(seen, [true, true]);
    }
}
