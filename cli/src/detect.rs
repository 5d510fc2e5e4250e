//! Which paths are checkpoints, and what files they hold.
//!
//! Under a watched directory, each top-level entry may be a checkpoint: `checkpoint-*`
//! directories (HF Trainer), directories holding DCP shards (`*.distcp`, `.metadata`), and
//! loose `*.safetensors`, `*.pt`, `*.pth`, `*.bin`, `*.ckpt` files. Hidden entries and
//! temporary files are ignored.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What kind of checkpoint a path is; decides the completeness rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A Hugging Face Trainer `checkpoint-N` directory (finished by `trainer_state.json`).
    HfDir,
    /// A PyTorch Distributed Checkpoint directory (finished by `.metadata`).
    DcpDir,
    /// Any other directory given explicitly to `push` (each file checked on its own).
    Dir,
    /// A single file.
    File,
}

/// A checkpoint found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Name: the directory or file name; also its key prefix in the bucket.
    pub name: String,
    /// Path on disk.
    pub path: PathBuf,
    /// Kind of checkpoint.
    pub kind: Kind,
    /// Training step, from the last run of digits in the name.
    pub step: Option<u64>,
}

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Path relative to the checkpoint, `/`-separated.
    pub rel: String,
    /// Absolute (or as-given) path on disk.
    pub abs: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: SystemTime,
}

impl LocalFile {
    /// Modification time in nanoseconds since the epoch (0 if before it).
    pub fn mtime_ns(&self) -> u64 {
        self.mtime
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

const LOOSE_EXTS: [&str; 5] = [".safetensors", ".pt", ".pth", ".bin", ".ckpt"];

/// True for names that are never part of a checkpoint: hidden files (except DCP's
/// `.metadata`), temporary and partial files.
pub fn ignored(name: &str) -> bool {
    (name.starts_with('.') && name != ".metadata")
        || name.ends_with(".tmp")
        || name.ends_with(".temp")
        || name.ends_with(".partial")
        || name.ends_with('~')
}

/// The training step in a name: its last run of ASCII digits (`checkpoint-500` → 500).
pub fn step_of(name: &str) -> Option<u64> {
    let stem = LOOSE_EXTS
        .iter()
        .find_map(|e| name.strip_suffix(e))
        .unwrap_or(name);
    let end = stem.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = stem[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map(|i| i + 1)
        .unwrap_or(0);
    stem[start..end].parse().ok()
}

fn is_dcp_dir(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        n == ".metadata" || n.ends_with(".distcp")
    })
}

/// Classifies an explicit path (as given to `push`).
pub fn classify(path: &Path) -> std::io::Result<Candidate> {
    let meta = std::fs::metadata(path)?;
    let name = path
        .canonicalize()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".to_owned());
    let kind = if meta.is_file() {
        Kind::File
    } else if name.starts_with("checkpoint-") {
        Kind::HfDir
    } else if is_dcp_dir(path) {
        Kind::DcpDir
    } else {
        Kind::Dir
    };
    Ok(Candidate {
        step: step_of(&name),
        name,
        path: path.to_path_buf(),
        kind,
    })
}

/// Finds the checkpoints directly under `root`, sorted by step then name.
pub fn scan(root: &Path) -> std::io::Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ignored(&name) {
            continue;
        }
        let path = entry.path();
        // A file deleted between read_dir and stat is simply skipped.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let kind = if meta.is_dir() {
            if name.starts_with("checkpoint-") {
                Kind::HfDir
            } else if is_dcp_dir(&path) {
                Kind::DcpDir
            } else {
                continue;
            }
        } else if meta.is_file() && LOOSE_EXTS.iter().any(|e| name.ends_with(e)) {
            Kind::File
        } else {
            continue;
        };
        out.push(Candidate {
            step: step_of(&name),
            name,
            path,
            kind,
        });
    }
    out.sort_by(|a, b| (a.step, &a.name).cmp(&(b.step, &b.name)));
    Ok(out)
}

/// Lists the files of a checkpoint (recursively for directories), sorted by path.
pub fn list_files(path: &Path) -> std::io::Result<Vec<LocalFile>> {
    let meta = std::fs::metadata(path)?;
    let mut out = Vec::new();
    if meta.is_file() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(LocalFile {
            rel: name,
            abs: path.to_path_buf(),
            size: meta.len(),
            mtime: meta.modified()?,
        });
        return Ok(out);
    }
    walk(path, "", &mut out)?;
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<LocalFile>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ignored(&name) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if meta.is_dir() {
            walk(&path, &r, out)?;
        } else if meta.is_file() {
            out.push(LocalFile {
                rel: r,
                abs: path,
                size: meta.len(),
                mtime: meta.modified()?,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        assert_eq!(step_of("checkpoint-500"), Some(500));
        assert_eq!(step_of("model_step_300.pt"), Some(300));
        assert_eq!(step_of("global_step12"), Some(12));
        assert_eq!(step_of("final.safetensors"), None);
        assert_eq!(step_of("ckpt-7.ckpt"), Some(7));
    }

    #[test]
    fn scans_checkpoints_and_ignores_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("checkpoint-20")).unwrap();
        std::fs::create_dir_all(r.join("checkpoint-3")).unwrap();
        std::fs::create_dir_all(r.join("step_7")).unwrap();
        std::fs::write(r.join("step_7/__0_0.distcp"), b"x").unwrap();
        std::fs::create_dir_all(r.join("logs")).unwrap();
        std::fs::create_dir_all(r.join(".cairn")).unwrap();
        std::fs::write(r.join("model_10.pt"), b"x").unwrap();
        std::fs::write(r.join("notes.txt"), b"x").unwrap();
        std::fs::write(r.join("model_11.pt.tmp"), b"x").unwrap();
        let found: Vec<_> = scan(r)
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.kind, c.step))
            .collect();
        assert_eq!(
            found,
            vec![
                ("checkpoint-3".into(), Kind::HfDir, Some(3)),
                ("step_7".into(), Kind::DcpDir, Some(7)),
                ("model_10.pt".into(), Kind::File, Some(10)),
                ("checkpoint-20".into(), Kind::HfDir, Some(20)),
            ]
        );
    }

    #[test]
    fn lists_nested_files_without_temporaries() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("fsdp")).unwrap();
        std::fs::write(r.join("fsdp/.metadata"), b"m").unwrap();
        std::fs::write(r.join("fsdp/__0_0.distcp"), b"d").unwrap();
        std::fs::write(r.join("a.json"), b"{}").unwrap();
        std::fs::write(r.join("b.json.tmp"), b"{").unwrap();
        std::fs::write(r.join(".hidden"), b"").unwrap();
        let rels: Vec<_> = list_files(r).unwrap().into_iter().map(|f| f.rel).collect();
        assert_eq!(rels, vec!["a.json", "fsdp/.metadata", "fsdp/__0_0.distcp"]);
    }
}
