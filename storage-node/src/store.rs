//! Shard files on disk.
//!
//! ```text
//! DATA/node_id                                   this node's id (hex), written once
//! DATA/tmp/                                      writes in progress (emptied at startup)
//! DATA/shards/<oid[0..2]>/<oid>/<segment>.<index>  one shard file each
//! DATA/shards/<oid[0..2]>/<oid>/manifest          the committed object's manifest (JSON)
//! DATA/buckets/<name>                            a bucket marker (JSON), for catalog rebuilds
//! ```
//!
//! A shard appears under `shards/` only by an atomic rename of a complete, fsynced temp
//! file, followed by an fsync of its directory. All functions here are blocking; the
//! async layers call them through `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cairn_common::ids::{NodeId, ObjectId};
use cairn_common::protocol::{Inventory, InventoryEntry, StoredManifest};

use crate::direct_io::BufferPool;
use crate::faults::Faults;
use crate::metrics;
use crate::space::{statvfs, DiskSpace};

const NODE_ID_FILE: &str = "node_id";
const TMP_DIR: &str = "tmp";
const SHARDS_DIR: &str = "shards";
const MANIFEST_FILE: &str = "manifest";
const BUCKETS_DIR: &str = "buckets";
/// Idle 2 MiB I/O buffers kept for reuse (32 MiB at most): eight uploads' worth, or
/// three read streams'.
const IDLE_BUFFERS: usize = 16;

/// Identity of one shard: which object version, segment and index.
pub use cairn_common::protocol::ShardRef as ShardAddr;

/// How a store is opened beyond its directory.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// Most bytes of shard files and manifests to hold (`None`: the whole filesystem).
    pub capacity: Option<u64>,
    /// Injected faults (tests and the torture bench).
    pub faults: Faults,
}

/// The shard store rooted at a data directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    node_id: NodeId,
    shards: AtomicU64,
    /// Bytes of shard files and manifests stored (counted at startup, then kept up to
    /// date by every write and delete).
    stored: AtomicU64,
    /// Bytes promised to shard writes in flight ([`Reservation`]s).
    reserved: AtomicU64,
    capacity: Option<u64>,
    faults: Faults,
    buffers: BufferPool,
}

/// Room held under the capacity for one shard write in flight; given back when dropped
/// (the committed file is counted as stored by then).
#[derive(Debug)]
pub struct Reservation {
    store: Arc<Store>,
    len: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.store.reserved.fetch_sub(self.len, Ordering::Relaxed);
    }
}

impl Store {
    /// Opens (creating if needed) a data directory: makes its subdirectories, removes
    /// leftovers of interrupted writes, loads or creates the node id and counts shards.
    pub fn open(root: &Path) -> io::Result<Self> {
        Self::open_with(root, StoreOptions::default())
    }

    /// [`Store::open`] with a capacity and faults.
    pub fn open_with(root: &Path, opts: StoreOptions) -> io::Result<Self> {
        fs::create_dir_all(root.join(TMP_DIR))?;
        fs::create_dir_all(root.join(SHARDS_DIR))?;
        sync_dir(root)?;
        let removed = clean_tmp(&root.join(TMP_DIR))?;
        if removed > 0 {
            tracing::info!(removed, "removed leftovers of interrupted writes");
        }
        let node_id = load_or_create_node_id(root)?;
        let store = Self {
            root: root.to_path_buf(),
            node_id,
            shards: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            capacity: opts.capacity,
            faults: opts.faults,
            buffers: BufferPool::new(IDLE_BUFFERS),
        };
        let (shards, bytes) = store.count_shards()?;
        store.shards.store(shards, Ordering::Relaxed);
        store.stored.store(bytes, Ordering::Relaxed);
        Ok(store)
    }

    /// Faults this store's node injects.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Bytes of shard files and manifests stored.
    pub fn stored_bytes(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Holds `len` bytes under the capacity for a shard write, or `Err(free)` (the bytes
    /// left) when they do not fit. Without a capacity every write fits here (the file
    /// system has the last word).
    pub fn reserve(self: &Arc<Self>, len: u64) -> Result<Reservation, u64> {
        if let Some(limit) = self.capacity {
            let before = self.reserved.fetch_add(len, Ordering::Relaxed);
            let used = self.stored_bytes().saturating_add(before);
            if used.saturating_add(len) > limit {
                self.reserved.fetch_sub(len, Ordering::Relaxed);
                return Err(limit.saturating_sub(used));
            }
        } else {
            self.reserved.fetch_add(len, Ordering::Relaxed);
        }
        Ok(Reservation {
            store: self.clone(),
            len,
        })
    }

    /// What the node offers: `capacity` = min(filesystem size, `--capacity`), `free` =
    /// min(filesystem free, `--capacity` − stored − reserved for writes in flight).
    pub fn space(&self) -> io::Result<DiskSpace> {
        let disk = self.disk_space()?;
        Ok(match self.capacity {
            None => disk,
            Some(limit) => {
                let used = self
                    .stored_bytes()
                    .saturating_add(self.reserved.load(Ordering::Relaxed));
                DiskSpace {
                    capacity: disk.capacity.min(limit),
                    free: disk.free.min(limit.saturating_sub(used)),
                }
            }
        })
    }

    /// [`Store::space`] as reported to the gateway and metrics: the free figure is the
    /// `report-free` fault's when one is set.
    pub fn reported_space(&self) -> io::Result<DiskSpace> {
        let mut space = self.space()?;
        if let Some(free) = self.faults.report_free {
            space.free = free;
        }
        Ok(space)
    }

    fn add_stored(&self, added: u64, removed: u64) {
        // Saturating: concurrent deletes of one object may both count the same files.
        let _ = self
            .stored
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(added).saturating_sub(removed))
            });
    }

    /// The aligned buffers shard reads and writes go through.
    pub fn buffers(&self) -> &BufferPool {
        &self.buffers
    }

    /// This node's persistent id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Shard files stored (kept up to date by writes and deletes).
    pub fn shard_count(&self) -> u64 {
        self.shards.load(Ordering::Relaxed)
    }

    fn shards_dir(&self) -> PathBuf {
        self.root.join(SHARDS_DIR)
    }

    /// Directory holding every shard of an object version.
    pub fn object_dir(&self, object: &ObjectId) -> PathBuf {
        let hex = object.to_string();
        self.shards_dir().join(&hex[0..2]).join(hex)
    }

    /// Final path of a shard file.
    pub fn shard_path(&self, addr: &ShardAddr) -> PathBuf {
        self.object_dir(&addr.object)
            .join(format!("{}.{}", addr.segment, addr.index))
    }

    /// Creates a fresh, empty temp file for a write of `addr`.
    pub fn create_temp(&self, addr: &ShardAddr) -> io::Result<(PathBuf, File)> {
        let name = format!(
            "{}.{}.{}.{}",
            addr.object,
            addr.segment,
            addr.index,
            hex::encode(rand::random::<[u8; 8]>())
        );
        let path = self.root.join(TMP_DIR).join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((path, file))
    }

    /// Moves a complete, fsynced temp file into place as shard `addr` and makes the
    /// rename durable (fsync of the object dir, and of its parents when created).
    pub fn commit(&self, temp: &Path, addr: &ShardAddr) -> io::Result<()> {
        let dest = self.shard_path(addr);
        let dir = self.object_dir(&addr.object);
        // A concurrent DELETE of the same object may remove the dir between our mkdir
        // and rename; try once more in that case.
        let len = fs::metadata(temp)?.len();
        for attempt in 0..2 {
            self.ensure_object_dir(&dir)?;
            let old = file_len(&dest);
            match fs::rename(temp, &dest) {
                Ok(()) => {
                    self.add_stored(len, old.unwrap_or(0));
                    if old.is_none() {
                        self.shards.fetch_add(1, Ordering::Relaxed);
                    }
                    sync_dir(&dir)?;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt == 0 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("object directory vanished during commit"))
    }

    /// Creates `shards/<xx>/<oid>` if missing, fsyncing each parent whose entries changed.
    fn ensure_object_dir(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let prefix = dir
            .parent()
            .ok_or_else(|| io::Error::other("object dir has no parent"))?;
        if !prefix.is_dir() {
            create_dir_if_missing(prefix)?;
            sync_dir(&self.shards_dir())?;
        }
        create_dir_if_missing(dir)?;
        sync_dir(prefix)
    }

    /// Removes one shard file (no-op if absent).
    pub fn delete_shard(&self, addr: &ShardAddr) -> io::Result<()> {
        let path = self.shard_path(addr);
        let len = file_len(&path).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => {
                self.add_stored(0, len);
                let _ = self
                    .shards
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(1))
                    });
                if let Some(dir) = path.parent() {
                    sync_dir(dir)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes every shard of an object version. Returns how many shard files were removed
    /// (0 if the object was not here).
    pub fn delete_object(&self, object: &ObjectId) -> io::Result<u64> {
        let dir = self.object_dir(object);
        let (mut removed, mut bytes) = (0u64, 0u64);
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries.filter_map(|e| e.ok()) {
                    let name = e.file_name();
                    let shard = parse_shard_name(&name).is_some();
                    if shard || name == MANIFEST_FILE {
                        bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                    }
                    removed += u64::from(shard);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(prefix) = dir.parent() {
            sync_dir(prefix)?;
        }
        self.add_stored(0, bytes);
        // Saturating: a concurrent delete of the same object may have counted the same files.
        let _ = self
            .shards
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(removed))
            });
        Ok(removed)
    }

    /// Object ids with at least one shard here.
    pub fn list_objects(&self) -> io::Result<Vec<ObjectId>> {
        let mut out = Vec::new();
        for prefix in read_dir_or_empty(&self.shards_dir())? {
            for entry in read_dir_or_empty(&prefix.path())? {
                if let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<ObjectId>().ok())
                {
                    out.push(id);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every shard stored here, by walking the directories (order: object, segment, index).
    pub fn list_shards(&self) -> io::Result<Vec<ShardAddr>> {
        let mut out = Vec::new();
        for object in self.list_objects()? {
            for entry in read_dir_or_empty(&self.object_dir(&object))? {
                if let Some((segment, index)) = parse_shard_name(&entry.file_name()) {
                    out.push(ShardAddr {
                        object,
                        segment,
                        index,
                    });
                }
            }
        }
        out.sort_by_key(|a| (a.object, a.segment, a.index));
        Ok(out)
    }

    /// Counts shard files, and the bytes of shard files and manifests, by walking the
    /// store (done once, at startup).
    fn count_shards(&self) -> io::Result<(u64, u64)> {
        let (mut n, mut bytes) = (0, 0);
        for prefix in read_dir_or_empty(&self.shards_dir())? {
            for object in read_dir_or_empty(&prefix.path())? {
                for e in read_dir_or_empty(&object.path())? {
                    let name = e.file_name();
                    let shard = parse_shard_name(&name).is_some();
                    if shard || name == MANIFEST_FILE {
                        bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                    }
                    n += u64::from(shard);
                }
            }
        }
        Ok((n, bytes))
    }

    /// Every shard with its file size and seconds since it was written, and every
    /// manifest with its age.
    pub fn inventory(&self) -> io::Result<Inventory> {
        let now = std::time::SystemTime::now();
        let age = |meta: &fs::Metadata| {
            meta.modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        // One walk: every object directory is read once, its entries stat'ed once.
        let mut out = Inventory::default();
        for object in self.list_objects()? {
            for entry in read_dir_or_empty(&self.object_dir(&object))? {
                let name = entry.file_name();
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // deleted meanwhile
                    Err(e) => return Err(e),
                };
                if let Some((segment, index)) = parse_shard_name(&name) {
                    out.shards.push(InventoryEntry {
                        shard: ShardAddr {
                            object,
                            segment,
                            index,
                        },
                        len: meta.len(),
                        age_secs: age(&meta),
                    });
                } else if name == MANIFEST_FILE {
                    out.manifests.push((object, age(&meta)));
                }
            }
        }
        Ok(out)
    }

    /// Stores an object's manifest durably (temp file, fsync, rename, directory fsync),
    /// replacing any previous one.
    pub fn put_manifest(&self, object: &ObjectId, manifest: &[u8]) -> io::Result<()> {
        let dir = self.object_dir(object);
        self.ensure_object_dir(&dir)?;
        let old = file_len(&dir.join(MANIFEST_FILE)).unwrap_or(0);
        self.write_durably(&format!("{object}.manifest"), &dir, MANIFEST_FILE, manifest)?;
        self.add_stored(manifest.len() as u64, old);
        Ok(())
    }

    /// Writes a small file through `tmp/` (write, fsync, rename, directory fsync).
    fn write_durably(
        &self,
        tmp_name: &str,
        dir: &Path,
        name: &str,
        bytes: &[u8],
    ) -> io::Result<()> {
        let tmp = self.root.join(TMP_DIR).join(format!(
            "{tmp_name}.{}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    }

    /// Stores a bucket marker durably (replacing any previous one).
    pub fn put_bucket(&self, name: &str, marker: &[u8]) -> io::Result<()> {
        let dir = self.root.join(BUCKETS_DIR);
        if !dir.is_dir() {
            create_dir_if_missing(&dir)?;
            sync_dir(&self.root)?;
        }
        self.write_durably(&format!("bucket.{name}"), &dir, name, marker)
    }

    /// Removes a bucket marker (no-op if absent).
    pub fn delete_bucket(&self, name: &str) -> io::Result<()> {
        let dir = self.root.join(BUCKETS_DIR);
        match fs::remove_file(dir.join(name)) {
            Ok(()) => sync_dir(&dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every bucket marker: name and contents.
    pub fn list_buckets(&self) -> io::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for entry in read_dir_or_empty(&self.root.join(BUCKETS_DIR))? {
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                continue;
            };
            match fs::read(entry.path()) {
                Ok(bytes) => out.push((name, String::from_utf8_lossy(&bytes).into_owned())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes an object's manifest durably (no-op if absent).
    pub fn delete_manifest(&self, object: &ObjectId) -> io::Result<()> {
        let dir = self.object_dir(object);
        let path = dir.join(MANIFEST_FILE);
        let len = file_len(&path).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => {
                self.add_stored(0, len);
                sync_dir(&dir)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every stored manifest.
    pub fn list_manifests(&self) -> io::Result<Vec<StoredManifest>> {
        let mut out = Vec::new();
        for object in self.list_objects()? {
            match fs::read(self.object_dir(&object).join(MANIFEST_FILE)) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(manifest) => out.push(StoredManifest { object, manifest }),
                    Err(_) => tracing::warn!(%object, "manifest is not UTF-8; skipped"),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Capacity and free bytes of the filesystem holding the data dir.
    pub fn disk_space(&self) -> io::Result<DiskSpace> {
        statvfs(&self.root)
    }

    /// Publishes the filesystem's and the node's space gauges (blocking: `statvfs`).
    pub fn publish_space(&self) {
        if let Ok(disk) = self.disk_space() {
            metrics::disk(disk);
        }
        if let Ok(space) = self.reported_space() {
            metrics::space(space);
        }
    }
}

/// Length of the file at `path`, `None` if there is none.
fn file_len(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.len())
}

/// `(segment, index)` of a shard file name `<segment>.<index>`; None for other files.
fn parse_shard_name(name: &std::ffi::OsStr) -> Option<(u32, u8)> {
    let (seg, idx) = name.to_str()?.split_once('.')?;
    Some((seg.parse().ok()?, idx.parse().ok()?))
}

fn read_dir_or_empty(dir: &Path) -> io::Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.collect(),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

fn create_dir_if_missing(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes a directory's entries (creations, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn clean_tmp(tmp: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(tmp)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
        removed += 1;
    }
    if removed > 0 {
        sync_dir(tmp)?;
    }
    Ok(removed)
}

fn load_or_create_node_id(root: &Path) -> io::Result<NodeId> {
    let path = root.join(NODE_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: {e}; refusing to replace a node identity",
                    path.display()
                ),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = NodeId::random();
            let tmp = root.join(TMP_DIR).join(NODE_ID_FILE);
            let mut f = File::create(&tmp)?;
            f.write_all(format!("{id}\n").as_bytes())?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)?;
            sync_dir(root)?;
            tracing::info!(node_id = %id, "created new node id");
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// Reserves `len` bytes for a file so a full disk is detected before the body streams in
/// (and the file is laid out contiguously). Filesystems without `fallocate` are fine.
pub fn preallocate(file: &File, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "shard too large"))?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: plain syscall on an open file descriptor we own for the call's duration.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
                _ => Err(e),
            };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, len);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_persists_and_tmp_is_cleaned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Store::open(dir.path()).expect("open");
        let addr = ShardAddr {
            object: ObjectId::random(),
            segment: 0,
            index: 1,
        };
        let (tmp, _f) = a.create_temp(&addr).expect("temp");
        assert!(tmp.exists());
        let id = a.node_id();
        drop(a);
        let b = Store::open(dir.path()).expect("reopen");
        assert_eq!(b.node_id(), id);
        assert!(!tmp.exists(), "leftover temp file survived restart");
    }

    #[test]
    fn commit_counts_and_delete_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let addr = ShardAddr {
            object: ObjectId::random(),
            segment: 3,
            index: 2,
        };
        for _ in 0..2 {
            let (tmp, mut f) = s.create_temp(&addr).expect("temp");
            f.write_all(b"x").expect("write");
            s.commit(&tmp, &addr).expect("commit");
        }
        assert_eq!(s.shard_count(), 1, "overwrite must not count twice");
        assert_eq!(s.list_objects().expect("list"), vec![addr.object]);
        assert_eq!(s.delete_object(&addr.object).expect("delete"), 1);
        assert_eq!(s.delete_object(&addr.object).expect("delete again"), 0);
        assert_eq!(s.shard_count(), 0);
        assert!(s.list_objects().expect("list").is_empty());
        let space = s.disk_space().expect("statvfs");
        assert!(space.capacity >= space.free && space.capacity > 0);
    }

    #[test]
    fn capacity_counts_stored_and_reserved_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions {
            capacity: Some(1000),
            faults: Faults::default(),
        };
        let s = Arc::new(Store::open_with(dir.path(), opts.clone()).expect("open"));
        assert_eq!(s.space().expect("space").capacity, 1000);
        let addr = ShardAddr {
            object: ObjectId::random(),
            segment: 0,
            index: 0,
        };
        let held = s.reserve(600).expect("600 of 1000 fit");
        assert_eq!(s.reserve(500).err(), Some(400), "in-flight bytes count");
        assert_eq!(s.space().expect("space").free, 400);
        let (tmp, mut f) = s.create_temp(&addr).expect("temp");
        f.write_all(&[7u8; 600]).expect("write");
        s.commit(&tmp, &addr).expect("commit");
        drop(held);
        assert_eq!(s.stored_bytes(), 600);
        assert_eq!(s.space().expect("space").free, 400);
        s.put_manifest(&addr.object, &[b'm'; 100])
            .expect("manifest");
        assert_eq!(s.reserve(301).err(), Some(300));
        drop(s);
        let s = Arc::new(Store::open_with(dir.path(), opts).expect("reopen"));
        assert_eq!(s.stored_bytes(), 700, "counted again at startup");
        s.delete_object(&addr.object).expect("delete");
        assert_eq!(s.stored_bytes(), 0);
        assert!(s.reserve(1000).is_ok());
    }

    #[test]
    fn corrupt_node_id_is_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(NODE_ID_FILE), "garbage").expect("write");
        assert!(Store::open(dir.path()).is_err());
        assert_eq!(
            fs::read_to_string(dir.path().join(NODE_ID_FILE)).expect("read"),
            "garbage"
        );
    }
}
