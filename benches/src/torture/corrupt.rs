//! Corrupting committed shards on disk, and telling whether a corrupted one is still in use.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cairn_benches::cluster::Cluster;
use cairn_common::shard::ShardHeader;
use rand::rngs::StdRng;
use rand::Rng;

/// A shard whose bytes the bench flipped on disk.
pub struct Corrupted {
    pub node: usize,
    pub path: PathBuf,
    /// The object directory's name (the object id in hex).
    pub object: String,
    pub segment: u32,
    pub index: u8,
    pub block: u64,
    pub blocks: u64,
}

impl Corrupted {
    pub fn describe(&self) -> String {
        format!(
            "node{} {}.. seg {} shard {} block {}/{}",
            self.node,
            self.object.get(..8).unwrap_or(&self.object),
            self.segment,
            self.index,
            self.block,
            self.blocks
        )
    }

    /// Whether the flipped shard is still on disk and its segment is still part of the
    /// object (a manifest on some node lists it): not yet repaired, overwritten or deleted.
    pub fn still_referenced(&self, cluster: &Cluster) -> bool {
        self.path.exists()
            && committed_segments(cluster, &self.object)
                .map(|s| s.contains(&self.segment))
                .unwrap_or(false)
    }
}

/// Where node data keeps an object's shards and manifest.
pub fn object_dir(data: &Path, object: &str) -> PathBuf {
    data.join("shards")
        .join(object.get(..2).unwrap_or(object))
        .join(object)
}

/// Segments listed by the newest manifest of `object` found on any node (`None`: no
/// manifest, the object is not committed or was deleted).
pub fn committed_segments(cluster: &Cluster, object: &str) -> Option<BTreeSet<u32>> {
    let mut best: Option<(u64, BTreeSet<u32>)> = None;
    for data in &cluster.node_data {
        let Ok(text) = std::fs::read_to_string(object_dir(data, object).join("manifest")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let written = v["written_ms"].as_u64().unwrap_or(0);
        let segs: BTreeSet<u32> = v["record"]["segments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["segment"].as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect();
        if best.as_ref().is_none_or(|(w, _)| written >= *w) {
            best = Some((written, segs));
        }
    }
    best.map(|(_, s)| s)
}

/// Flips 16 bytes in the middle of a middle block of one committed shard, on a random
/// node, in a segment none of `done` is in (so every segment keeps k sound shards). Prefers
/// shards of three blocks or more, so the block is neither the first nor the last.
pub fn corrupt_one(
    cluster: &Cluster,
    done: &[Corrupted],
    rng: &mut StdRng,
) -> Result<Option<Corrupted>> {
    let mut candidates = candidates(cluster, done);
    let best = candidates
        .iter()
        .map(|c| c.header.layout.stripes().min(3))
        .max()
        .unwrap_or(0);
    candidates.retain(|c| c.header.layout.stripes().min(3) == best);
    if candidates.is_empty() {
        return Ok(None);
    }
    let Candidate {
        node,
        path,
        object,
        header,
        header_len,
    } = candidates.swap_remove(rng.random_range(0..candidates.len()));
    let layout = header.layout;
    let block = layout.stripes() / 2;
    let block_len = layout.block_len(block) as u64;
    let at = header_len + layout.block_file_offset(block) + block_len / 2;
    let n = block_len.clamp(1, 16) as usize;
    match flip(&path, at, n) {
        Ok(()) => {}
        // Deleted since it was listed (an overwrite, repair or rebalance moved it): no
        // shard was corrupted this time.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("corrupting {}", path.display())),
    }
    Ok(Some(Corrupted {
        node,
        path,
        object,
        segment: header.segment,
        index: header.shard_index,
        block,
        blocks: layout.stripes(),
    }))
}

/// A complete shard file of a committed segment, on one node.
struct Candidate {
    node: usize,
    path: PathBuf,
    /// The object directory's name (the object id in hex).
    object: String,
    header: ShardHeader,
    header_len: u64,
}

/// Every complete shard file, on any node, of a committed segment none of `done` is in.
fn candidates(cluster: &Cluster, done: &[Corrupted]) -> Vec<Candidate> {
    let taken: BTreeSet<(String, u32)> =
        done.iter().map(|c| (c.object.clone(), c.segment)).collect();
    let mut out = Vec::new();
    for (node, data) in cluster.node_data.iter().enumerate() {
        for dir in object_dirs(data) {
            let object = dir.file_name().to_string_lossy().into_owned();
            let Some(segments) = committed_segments(cluster, &object) else {
                continue;
            };
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for file in files.flatten() {
                let Some(segment) = shard_segment(&file.file_name().to_string_lossy()) else {
                    continue;
                };
                if !segments.contains(&segment) || taken.contains(&(object.clone(), segment)) {
                    continue;
                }
                if let Some((header, header_len)) = read_header(&file.path()) {
                    out.push(Candidate {
                        node,
                        path: file.path(),
                        object: object.clone(),
                        header,
                        header_len,
                    });
                }
            }
        }
    }
    out
}

/// The object directories of a node's data dir (`shards/<prefix>/<object>`).
fn object_dirs(data: &Path) -> impl Iterator<Item = std::fs::DirEntry> {
    std::fs::read_dir(data.join("shards"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|prefix| std::fs::read_dir(prefix.path()))
        .flatten()
        .flatten()
}

/// The segment of a shard file named `<segment>.<index>`; `None` for other files.
fn shard_segment(name: &str) -> Option<u32> {
    name.split_once('.').and_then(|(s, _)| s.parse().ok())
}

/// The header of a complete shard file and its length.
pub fn read_header(path: &Path) -> Option<(ShardHeader, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let size = f.metadata().ok()?.len();
    let mut prefix = [0u8; 8];
    f.read_exact(&mut prefix).ok()?;
    let len = ShardHeader::peek_len(&prefix).ok()?;
    let mut buf = vec![0u8; len];
    buf[..8].copy_from_slice(&prefix);
    f.read_exact(&mut buf[8..]).ok()?;
    let header = ShardHeader::decode(&buf).ok()?;
    (header.file_len() == size).then_some((header, len as u64))
}

/// Inverts `n` bytes at `at` and flushes them to disk (the node reads with O_DIRECT).
pub fn flip(path: &Path, at: u64, n: usize) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut buf = vec![0u8; n];
    f.read_exact_at(&mut buf, at)?;
    for b in &mut buf {
        *b = !*b;
    }
    f.write_all_at(&buf, at)?;
    f.sync_data()
}
