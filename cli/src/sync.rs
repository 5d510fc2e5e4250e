//! One checkpoint from disk to a committed manifest: check it is finished, upload what is
//! not yet uploaded (resuming half-done files), re-check nothing changed, commit, and drop
//! the previous generation. Shared by `push` and `watch`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;

use crate::completeness::{check_checkpoint, Verdict};
use crate::detect::{list_files, Candidate, LocalFile};
use crate::error::{s3_error, Error, Result};
use crate::manifest::{self, Committed, FileEntry, Manifest};
use crate::s3client::S3Url;
use crate::state::{CkptState, FileState, MultipartState, StateStore};
use crate::upload::{SaveFn, Uploader};

/// What one sync pass did.
#[derive(Debug)]
pub enum Outcome {
    /// Committed (now, or found committed by an earlier interrupted run).
    Committed(Box<Manifest>, Committed),
    /// Already committed and unchanged.
    Unchanged,
    /// Not finished yet.
    Incomplete(String),
    /// Removed by retention; not uploaded again.
    Retired,
    /// Gone from disk.
    Vanished,
}

/// Everything a sync needs.
pub struct Ctx {
    /// S3 client.
    pub client: Client,
    /// Destination.
    pub url: S3Url,
    /// File uploader.
    pub uploader: Uploader,
    /// Local state.
    pub store: Arc<StateStore>,
    /// Quiet period for files of unknown format.
    pub quiet: Duration,
    /// How long a whole checkpoint must have been unmodified before it is committed
    /// (the watcher: a trainer may still be adding files after its marker file; `push`
    /// is told the checkpoint is done and uses zero).
    pub settle: Duration,
}

fn same_fp(fs: &FileState, f: &LocalFile) -> bool {
    fs.size == f.size && fs.mtime_ns == f.mtime_ns()
}

fn listing(c: &Candidate) -> Result<Option<Vec<LocalFile>>> {
    match list_files(&c.path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&c.path, e)),
    }
}

/// Next free generation of `name` in the bucket.
async fn next_remote_generation(ctx: &Ctx, name: &str) -> Result<u64> {
    let prefix = format!("{}{name}/", manifest::manifests_prefix(&ctx.url));
    let keys = manifest::list_keys(&ctx.client, &ctx.url.bucket, &prefix).await?;
    let max = keys
        .iter()
        .filter_map(|k| manifest::parse_manifest_key(&ctx.url, k))
        .filter(|(n, _)| n == name)
        .map(|(_, g)| g)
        .max()
        .unwrap_or(0);
    Ok(max + 1)
}

/// Brings checkpoint `c` to a committed state, or says why it cannot yet.
pub async fn sync_checkpoint(ctx: &Ctx, c: &Candidate) -> Result<Outcome> {
    let Some(files) = listing(c)? else {
        return Ok(Outcome::Vanished);
    };
    let st = ctx.store.get(&c.name);
    if st.retired {
        return Ok(Outcome::Retired);
    }
    if st.committed && uploaded_as_listed(&st, &files) {
        return Ok(Outcome::Unchanged);
    }
    if let Some(reason) = unfinished(ctx, c, &files)? {
        return Ok(Outcome::Incomplete(reason));
    }
    if st.generation == 0 {
        if let Some(m) = adopt_remote(ctx, c, &files).await? {
            return Ok(Outcome::Committed(Box::new(m), Committed::Already));
        }
    }
    let upload = GenerationUpload {
        ctx,
        c,
        generation: start_generation(ctx, c, &st).await?,
    };
    let mut entries = Vec::with_capacity(files.len());
    for f in &files {
        entries.push(upload.file(f).await?);
    }
    upload.commit(&files, entries).await
}

/// True when `files` are exactly the files `st` records, with the recorded sizes and
/// modification times.
fn same_listing(st: &CkptState, files: &[LocalFile]) -> bool {
    files.len() == st.files.len()
        && files
            .iter()
            .all(|f| st.files.get(&f.rel).is_some_and(|fs| same_fp(fs, f)))
}

/// True when `files` are the recorded files and every one of them is uploaded.
fn uploaded_as_listed(st: &CkptState, files: &[LocalFile]) -> bool {
    same_listing(st, files) && st.files.values().all(|fs| fs.done.is_some())
}

/// Why the checkpoint cannot be committed yet: a file not finished, or the whole of it
/// modified within the settle time.
fn unfinished(ctx: &Ctx, c: &Candidate, files: &[LocalFile]) -> Result<Option<String>> {
    let verdict = check_checkpoint(c.kind, files, ctx.quiet, SystemTime::now())
        .map_err(|e| Error::io(&c.path, e))?;
    if let Verdict::Incomplete(reason) = verdict {
        return Ok(Some(reason));
    }
    let newest = files
        .iter()
        .map(|f| f.mtime)
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let age = SystemTime::now().duration_since(newest).unwrap_or_default();
    if age < ctx.settle {
        return Ok(Some(format!(
            "modified {:.1}s ago, waiting for {}s of quiet",
            age.as_secs_f64(),
            ctx.settle.as_secs()
        )));
    }
    Ok(None)
}

/// The generation to upload: the unfinished one the state records, else the next one
/// free in the bucket and above the state's. Recorded as started, not committed.
async fn start_generation(ctx: &Ctx, c: &Candidate, st: &CkptState) -> Result<u64> {
    let generation = if st.generation == 0 || st.committed {
        next_remote_generation(ctx, &c.name)
            .await?
            .max(st.generation + 1)
    } else {
        st.generation
    };
    ctx.store.update(&c.name, |s| {
        s.generation = generation;
        s.committed = false;
    })?;
    Ok(generation)
}

/// The upload of one generation of a checkpoint.
struct GenerationUpload<'a> {
    ctx: &'a Ctx,
    c: &'a Candidate,
    generation: u64,
}

impl GenerationUpload<'_> {
    /// Uploads one file unless it is already uploaded unchanged; resumes its half-done
    /// multipart upload when the file is unchanged, else starts over.
    async fn file(&self, f: &LocalFile) -> Result<FileEntry> {
        let fs = self.ctx.store.get(&self.c.name).files.get(&f.rel).cloned();
        if let Some(entry) = fs
            .as_ref()
            .filter(|fs| same_fp(fs, f))
            .and_then(|fs| fs.done.clone())
        {
            return Ok(entry);
        }
        let (key, resume) = self.destination(f, fs).await;
        self.record_started(f, &key, &resume)?;
        let up = self
            .ctx
            .uploader
            .upload(f, &key, resume, self.save_progress(f))
            .await?;
        unchanged_since_listed(f)?;
        let entry = FileEntry {
            path: f.rel.clone(),
            key,
            size: f.size,
            sha256: up.sha256,
            crc32c: up.crc32c,
            parts: up.parts,
        };
        self.ctx.store.update(&self.c.name, |s| {
            if let Some(fs) = s.files.get_mut(&f.rel) {
                fs.done = Some(entry.clone());
                fs.multipart = None;
            }
        })?;
        Ok(entry)
    }

    /// Object key and upload to resume for `f`: its recorded ones when the file is
    /// unchanged and a multipart upload is half done; else this generation's key, after
    /// aborting a recorded upload of an earlier version of the file.
    async fn destination(
        &self,
        f: &LocalFile,
        fs: Option<FileState>,
    ) -> (String, Option<MultipartState>) {
        match fs {
            Some(fs) if same_fp(&fs, f) && fs.multipart.is_some() => (fs.key, fs.multipart),
            fs => {
                if let Some(fs) = &fs {
                    if let Some(mp) = &fs.multipart {
                        self.ctx.uploader.abort(&fs.key, &mp.upload_id).await;
                    }
                }
                let key = manifest::data_key(&self.ctx.url, &self.c.name, self.generation, &f.rel);
                (key, None)
            }
        }
    }

    /// Records `f` as being uploaded to `key`, not yet done.
    fn record_started(
        &self,
        f: &LocalFile,
        key: &str,
        resume: &Option<MultipartState>,
    ) -> Result<()> {
        let (size, mtime_ns) = (f.size, f.mtime_ns());
        self.ctx.store.update(&self.c.name, |s| {
            s.files.insert(
                f.rel.clone(),
                FileState {
                    size,
                    mtime_ns,
                    key: key.to_owned(),
                    done: None,
                    multipart: resume.clone(),
                },
            );
        })
    }

    /// Saves a multipart upload's state of `f` as its parts finish.
    fn save_progress(&self, f: &LocalFile) -> SaveFn {
        let (store, name, rel) = (self.ctx.store.clone(), self.c.name.clone(), f.rel.clone());
        Arc::new(move |mp| {
            store.update(&name, |s| {
                if let Some(fs) = s.files.get_mut(&rel) {
                    fs.multipart = Some(mp.clone());
                }
            })
        })
    }

    /// Commits the manifest if the checkpoint's files are still the ones uploaded, then
    /// drops the previous generations.
    async fn commit(&self, files: &[LocalFile], entries: Vec<FileEntry>) -> Result<Outcome> {
        let (ctx, c) = (self.ctx, self.c);
        // Forget files missing from disk, then make sure the listing is what we uploaded.
        ctx.store.update(&c.name, |s| {
            s.files.retain(|rel, _| files.iter().any(|f| &f.rel == rel))
        })?;
        let Some(again) = listing(c)? else {
            return Ok(Outcome::Vanished);
        };
        if !same_listing(&ctx.store.get(&c.name), &again) {
            return Err(Error::Changed(c.path.clone()));
        }
        let m = Manifest::new(&c.name, c.step, self.generation, c.kind, entries);
        let how = manifest::commit(&ctx.client, &ctx.url, &m).await?;
        ctx.store.update(&c.name, |s| s.committed = true)?;
        if self.generation > 1 {
            drop_old_generations(ctx, &m).await?;
        }
        Ok(Outcome::Committed(Box::new(m), how))
    }
}

/// Fails with [`Error::Changed`] when `f`'s size or modification time differ from its
/// listing's: the file changed while it was uploaded.
fn unchanged_since_listed(f: &LocalFile) -> Result<()> {
    let now = std::fs::metadata(&f.abs).map_err(|e| Error::io(&f.abs, e))?;
    let mtime_ns = LocalFile {
        mtime: now.modified().map_err(|e| Error::io(&f.abs, e))?,
        ..f.clone()
    }
    .mtime_ns();
    if now.len() != f.size || mtime_ns != f.mtime_ns() {
        return Err(Error::Changed(f.abs.clone()));
    }
    Ok(())
}

/// When the bucket already holds a committed checkpoint of this name with exactly these
/// files (same paths, sizes and SHA-256), records it as committed instead of uploading
/// again: a lost state file or a repeated `push` costs a read, not an upload.
async fn adopt_remote(ctx: &Ctx, c: &Candidate, files: &[LocalFile]) -> Result<Option<Manifest>> {
    let prefix = format!("{}{}/", manifest::manifests_prefix(&ctx.url), c.name);
    let keys = manifest::list_keys(&ctx.client, &ctx.url.bucket, &prefix).await?;
    let Some(key) = keys
        .iter()
        .filter(|k| manifest::parse_manifest_key(&ctx.url, k).is_some_and(|(n, _)| n == c.name))
        .max()
    else {
        return Ok(None);
    };
    let m = manifest::get(&ctx.client, &ctx.url.bucket, key).await?;
    let same_shape = m.files.len() == files.len()
        && m.files
            .iter()
            .zip(files)
            .all(|(e, f)| e.path == f.rel && e.size == f.size);
    if !same_shape {
        return Ok(None);
    }
    let paths: Vec<_> = files.iter().map(|f| f.abs.clone()).collect();
    let digests = tokio::task::spawn_blocking(move || {
        paths
            .iter()
            .map(|p| sha256_file(p))
            .collect::<Result<Vec<_>>>()
    })
    .await
    .map_err(|e| Error::io(&c.path, std::io::Error::other(e)))??;
    if m.files.iter().zip(&digests).any(|(e, d)| &e.sha256 != d) {
        return Ok(None);
    }
    ctx.store.update(&c.name, |s| {
        s.generation = m.generation;
        s.committed = true;
        s.files = files
            .iter()
            .zip(&m.files)
            .map(|(f, e)| {
                let fs = FileState {
                    size: f.size,
                    mtime_ns: f.mtime_ns(),
                    key: e.key.clone(),
                    done: Some(e.clone()),
                    multipart: None,
                };
                (f.rel.clone(), fs)
            })
            .collect();
    })?;
    Ok(Some(m))
}

fn sha256_file(path: &std::path::Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Deletes manifests of earlier generations of `m`'s checkpoint, then data it no longer uses.
async fn drop_old_generations(ctx: &Ctx, m: &Manifest) -> Result<()> {
    let prefix = format!("{}{}/", manifest::manifests_prefix(&ctx.url), m.name);
    for key in manifest::list_keys(&ctx.client, &ctx.url.bucket, &prefix).await? {
        if manifest::parse_manifest_key(&ctx.url, &key).is_some_and(|(_, g)| g < m.generation) {
            delete(&ctx.client, &ctx.url.bucket, &key).await?;
        }
    }
    let used: std::collections::BTreeSet<&str> = m.files.iter().map(|f| f.key.as_str()).collect();
    let data = manifest::data_prefix(&ctx.url, &m.name);
    for key in manifest::list_keys(&ctx.client, &ctx.url.bucket, &data).await? {
        if !used.contains(key.as_str()) {
            delete(&ctx.client, &ctx.url.bucket, &key).await?;
        }
    }
    Ok(())
}

/// Deletes one object (a missing object is fine).
pub async fn delete(client: &Client, bucket: &str, key: &str) -> Result<()> {
    client
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| s3_error("DeleteObject", bucket, key, e))
}
