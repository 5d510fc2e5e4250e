//! The watcher's local state: what is uploaded, what is committed, which multipart uploads
//! are half done. Saved atomically (temp file, fsync, rename) after every change, so a
//! restarted watcher neither re-uploads finished files nor commits twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::FileEntry;

/// One finished part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartDone {
    /// ETag returned by UploadPart.
    pub etag: String,
    /// Base64 CRC32C of the part.
    pub crc32c: String,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultipartState {
    /// Upload id from CreateMultipartUpload.
    pub upload_id: String,
    /// Part size used (resume only with the same).
    pub part_size: u64,
    /// Finished parts by number.
    pub parts: BTreeMap<u32, PartDone>,
}

/// One file of a checkpoint as last seen and uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// Size when uploaded.
    pub size: u64,
    /// Modification time (ns) when uploaded.
    pub mtime_ns: u64,
    /// Object key it goes to.
    pub key: String,
    /// Set once uploaded and verified.
    pub done: Option<FileEntry>,
    /// Set while a multipart upload is in progress.
    pub multipart: Option<MultipartState>,
}

/// One checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CkptState {
    /// Generation being uploaded or last committed (0: not started).
    pub generation: u64,
    /// The current generation's manifest is committed.
    pub committed: bool,
    /// Deleted by retention: never upload again.
    pub retired: bool,
    /// Files by relative path.
    pub files: BTreeMap<String, FileState>,
}

/// Everything the watcher remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchState {
    /// Format version (1).
    pub version: u32,
    /// Destination URL this state belongs to.
    pub dest: String,
    /// Checkpoints by name.
    pub checkpoints: BTreeMap<String, CkptState>,
}

/// Shared, persisted state. `push` uses one without a file.
#[derive(Debug)]
pub struct StateStore {
    path: Option<PathBuf>,
    inner: Mutex<WatchState>,
}

impl StateStore {
    /// State kept only in memory.
    pub fn memory() -> Self {
        StateStore {
            path: None,
            inner: Mutex::new(WatchState::default()),
        }
    }

    /// Loads `path` (or starts empty); fails if it belongs to another destination.
    pub fn load(path: &Path, dest: &str) -> Result<Self> {
        let state = match std::fs::read(path) {
            Ok(bytes) => {
                let s: WatchState = serde_json::from_slice(&bytes).map_err(|e| Error::State {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
                if s.dest != dest {
                    return Err(Error::State {
                        path: path.to_owned(),
                        reason: format!("belongs to {}, not {dest}", s.dest),
                    });
                }
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => WatchState {
                version: 1,
                dest: dest.to_owned(),
                checkpoints: BTreeMap::new(),
            },
            Err(e) => return Err(Error::io(path, e)),
        };
        Ok(StateStore {
            path: Some(path.to_owned()),
            inner: Mutex::new(state),
        })
    }

    /// A copy of one checkpoint's state.
    pub fn get(&self, name: &str) -> CkptState {
        self.lock()
            .checkpoints
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Names of all checkpoints in the state.
    pub fn names(&self) -> Vec<String> {
        self.lock().checkpoints.keys().cloned().collect()
    }

    /// Changes one checkpoint's state and saves.
    pub fn update<R>(&self, name: &str, f: impl FnOnce(&mut CkptState) -> R) -> Result<R> {
        let mut g = self.lock();
        let r = f(g.checkpoints.entry(name.to_owned()).or_default());
        self.save(&g)?;
        Ok(r)
    }

    /// Forgets a checkpoint and saves.
    pub fn remove(&self, name: &str) -> Result<()> {
        let mut g = self.lock();
        if g.checkpoints.remove(name).is_some() {
            self.save(&g)?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, s: &WatchState) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(s).map_err(|e| Error::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| Error::io(path, e))
    }
}

/// Holds an exclusive lock on `path` (created if needed) for as long as the returned file
/// lives, so two watchers never share one state file.
pub fn lock_exclusive(path: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    // SAFETY: flock(2) on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::State {
            path: path.to_owned(),
            reason: "another cairn watch is using this state file".into(),
        });
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_checks_destination() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s/state.json");
        let s = StateStore::load(&p, "s3://b/p/").unwrap();
        s.update("checkpoint-1", |c| {
            c.generation = 1;
            c.committed = true;
        })
        .unwrap();
        let again = StateStore::load(&p, "s3://b/p/").unwrap();
        assert!(again.get("checkpoint-1").committed);
        assert!(StateStore::load(&p, "s3://b/other/").is_err());
    }
}
