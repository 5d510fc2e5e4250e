//! Is a checkpoint file (or a whole checkpoint) finished being written?
//!
//! Formats are checked by their own structure: safetensors by its header and data offsets,
//! torch zip archives by their end-of-central-directory record, JSON by parsing, sharded
//! models by their index, HF checkpoint dirs by `trainer_state.json`, DCP dirs by
//! `.metadata`. Anything else must have been quiet (unmodified) for a while.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::detect::{Kind, LocalFile};

/// Largest safetensors header the format allows.
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Outcome of a completeness check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Finished: safe to upload.
    Complete,
    /// Not (yet) finished, with the reason.
    Incomplete(String),
}

impl Verdict {
    fn incomplete(reason: impl Into<String>) -> Self {
        Verdict::Incomplete(reason.into())
    }
}

/// Checks a safetensors file: header length, JSON header, and size = 8 + N + max(end).
pub fn check_safetensors(path: &Path) -> std::io::Result<Verdict> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    if size < 8 {
        return Ok(Verdict::incomplete(
            "safetensors file shorter than its 8-byte header length",
        ));
    }
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let n = u64::from_le_bytes(len);
    if n > MAX_SAFETENSORS_HEADER {
        return Ok(Verdict::incomplete(format!(
            "safetensors header length {n} exceeds 100 MB"
        )));
    }
    if size < 8 + n {
        return Ok(Verdict::incomplete("safetensors header not fully written"));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)?;
    let json: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&header) {
        Ok(j) => j,
        Err(e) => {
            return Ok(Verdict::incomplete(format!(
                "safetensors header is not valid JSON: {e}"
            )))
        }
    };
    let mut max_end = 0u64;
    for (name, t) in &json {
        if name == "__metadata__" {
            continue;
        }
        let offs = t.get("data_offsets").and_then(|o| o.as_array());
        let (b, e) = match offs.map(|o| o.as_slice()) {
            Some([b, e]) => match (b.as_u64(), e.as_u64()) {
                (Some(b), Some(e)) if b <= e => (b, e),
                _ => {
                    return Ok(Verdict::incomplete(format!(
                        "tensor {name}: bad data_offsets"
                    )))
                }
            },
            _ => {
                return Ok(Verdict::incomplete(format!(
                    "tensor {name}: missing data_offsets"
                )))
            }
        };
        if let (Some(dtype), Some(shape)) = (
            t.get("dtype").and_then(|d| d.as_str()),
            t.get("shape").and_then(|s| s.as_array()),
        ) {
            if let Some(bits) = dtype_bits(dtype) {
                let elems = shape
                    .iter()
                    .try_fold(1u64, |acc, d| d.as_u64().and_then(|d| acc.checked_mul(d)));
                if let Some(elems) = elems {
                    if elems.checked_mul(bits).map(|b| b.div_ceil(8)) != Some(e - b) {
                        return Ok(Verdict::incomplete(format!(
                            "tensor {name}: data_offsets do not match dtype and shape"
                        )));
                    }
                }
            }
        }
        max_end = max_end.max(e);
    }
    let expected = 8 + n + max_end;
    Ok(match size.cmp(&expected) {
        std::cmp::Ordering::Equal => Verdict::Complete,
        std::cmp::Ordering::Less => {
            Verdict::incomplete(format!("safetensors file has {size} of {expected} bytes"))
        }
        std::cmp::Ordering::Greater => Verdict::incomplete(format!(
            "safetensors file has {size} bytes, more than the {expected} its header describes"
        )),
    })
}

fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "F16" | "BF16" | "I16" | "U16" => 16,
        "F32" | "I32" | "U32" => 32,
        "F64" | "I64" | "U64" => 64,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        _ => return None,
    })
}

fn le16(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u64
}
fn le32(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64
}
fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CDH_SIG: u32 = 0x0201_4b50;
const LFH_SIG: u32 = 0x0403_4b50;
/// The central directory is read whole; torch archives have a few entries per tensor.
const MAX_CENTRAL_DIRECTORY: u64 = 256 << 20;

/// True when the file starts like a zip archive (torch.save's format since 1.6).
pub fn is_zip(path: &Path) -> std::io::Result<bool> {
    let mut f = File::open(path)?;
    let mut magic = [0u8; 4];
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(magic == *b"PK\x03\x04" || magic == *b"PK\x05\x06"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Checks a zip archive: the end-of-central-directory record ends the file, and the
/// central directory it points to is intact and points at local headers.
pub fn check_zip(path: &Path) -> std::io::Result<Verdict> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    if size < 22 {
        return Ok(Verdict::incomplete(
            "zip archive shorter than an end-of-central-directory record",
        ));
    }
    let tail_len = size.min(22 + 65535);
    let tail_start = size - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    f.seek(SeekFrom::Start(tail_start))?;
    f.read_exact(&mut tail)?;
    // The EOCD is the last record whose comment runs exactly to the end of the file.
    let mut eocd = None;
    for p in (0..=tail.len() - 22).rev() {
        if le32(&tail, p) == EOCD_SIG as u64 && p + 22 + le16(&tail, p + 20) as usize == tail.len()
        {
            eocd = Some(p);
            break;
        }
    }
    let Some(p) = eocd else {
        return Ok(Verdict::incomplete(
            "zip archive has no end-of-central-directory record at its end",
        ));
    };
    let eocd_pos = tail_start + p as u64;
    let mut entries = le16(&tail, p + 10);
    let mut cd_size = le32(&tail, p + 12);
    let mut cd_offset = le32(&tail, p + 16);
    let mut cd_end_limit = eocd_pos;
    if entries == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        // ZIP64: a locator sits right before the EOCD and points at the ZIP64 EOCD record.
        if eocd_pos < 20 {
            return Ok(Verdict::incomplete("zip64 locator missing"));
        }
        let mut loc = [0u8; 20];
        f.seek(SeekFrom::Start(eocd_pos - 20))?;
        f.read_exact(&mut loc)?;
        if le32(&loc, 0) != ZIP64_LOCATOR_SIG as u64 {
            return Ok(Verdict::incomplete("zip64 locator missing"));
        }
        let rec_pos = le64(&loc, 8);
        if rec_pos + 56 > eocd_pos - 20 {
            return Ok(Verdict::incomplete(
                "zip64 end-of-central-directory record out of range",
            ));
        }
        let mut rec = [0u8; 56];
        f.seek(SeekFrom::Start(rec_pos))?;
        f.read_exact(&mut rec)?;
        if le32(&rec, 0) != ZIP64_EOCD_SIG as u64 {
            return Ok(Verdict::incomplete(
                "zip64 end-of-central-directory record missing",
            ));
        }
        entries = le64(&rec, 32);
        cd_size = le64(&rec, 40);
        cd_offset = le64(&rec, 48);
        cd_end_limit = rec_pos;
    }
    if cd_offset
        .checked_add(cd_size)
        .is_none_or(|end| end > cd_end_limit)
    {
        return Ok(Verdict::incomplete(
            "zip central directory lies outside the archive",
        ));
    }
    if cd_size > MAX_CENTRAL_DIRECTORY {
        return Ok(Verdict::incomplete(
            "zip central directory larger than 256 MiB",
        ));
    }
    let mut cd = vec![0u8; cd_size as usize];
    f.seek(SeekFrom::Start(cd_offset))?;
    f.read_exact(&mut cd)?;
    let mut at = 0usize;
    let mut seen = 0u64;
    while at < cd.len() {
        if at + 46 > cd.len() || le32(&cd, at) != CDH_SIG as u64 {
            return Ok(Verdict::incomplete("zip central directory is corrupt"));
        }
        let name_len = le16(&cd, at + 28) as usize;
        let extra_len = le16(&cd, at + 30) as usize;
        let comment_len = le16(&cd, at + 32) as usize;
        let end = at + 46 + name_len + extra_len + comment_len;
        if end > cd.len() {
            return Ok(Verdict::incomplete(
                "zip central directory entry is truncated",
            ));
        }
        let mut local = le32(&cd, at + 42);
        if local == 0xFFFF_FFFF {
            let extra = &cd[at + 46 + name_len..at + 46 + name_len + extra_len];
            let Some(off) = zip64_local_offset(extra, le32(&cd, at + 24), le32(&cd, at + 20))
            else {
                return Ok(Verdict::incomplete(
                    "zip64 entry without its local header offset",
                ));
            };
            local = off;
        }
        if local + 30 > cd_offset {
            return Ok(Verdict::incomplete(
                "zip entry points past the central directory",
            ));
        }
        let mut sig = [0u8; 4];
        f.seek(SeekFrom::Start(local))?;
        f.read_exact(&mut sig)?;
        if u32::from_le_bytes(sig) != LFH_SIG {
            return Ok(Verdict::incomplete(
                "zip entry does not point at a local file header",
            ));
        }
        seen += 1;
        at = end;
    }
    if seen != entries {
        return Ok(Verdict::incomplete(format!(
            "zip central directory lists {seen} entries, its end record says {entries}"
        )));
    }
    Ok(Verdict::Complete)
}

/// Finds the local header offset in a ZIP64 extended-information extra field.
fn zip64_local_offset(extra: &[u8], uncompressed: u64, compressed: u64) -> Option<u64> {
    let mut at = 0;
    while at + 4 <= extra.len() {
        let id = le16(extra, at);
        let len = le16(extra, at + 2) as usize;
        let body = extra.get(at + 4..at + 4 + len)?;
        if id == 0x0001 {
            let mut i = 0;
            if uncompressed == 0xFFFF_FFFF {
                i += 8;
            }
            if compressed == 0xFFFF_FFFF {
                i += 8;
            }
            return (i + 8 <= body.len()).then(|| le64(body, i));
        }
        at += 4 + len;
    }
    None
}

/// Checks that a JSON file parses to an object or array (a partial write does not).
pub fn check_json(path: &Path) -> std::io::Result<Verdict> {
    let bytes = std::fs::read(path)?;
    Ok(match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(_) | serde_json::Value::Array(_)) => Verdict::Complete,
        Ok(_) => Verdict::incomplete("JSON file is not an object or array"),
        Err(e) => Verdict::incomplete(format!("not valid JSON yet: {e}")),
    })
}

/// File names that a sharded-model index (`*.index.json`) says must exist beside it.
pub fn index_files(path: &Path) -> std::io::Result<Option<BTreeSet<String>>> {
    let bytes = std::fs::read(path)?;
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(None);
    };
    let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
        return Ok(None);
    };
    Ok(Some(
        map.values()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
    ))
}

/// Checks one file by its format, or by a quiet period when the format is unknown.
pub fn check_file(file: &LocalFile, quiet: Duration, now: SystemTime) -> std::io::Result<Verdict> {
    let name = file.rel.rsplit('/').next().unwrap_or(&file.rel);
    let v = if name.ends_with(".safetensors") {
        check_safetensors(&file.abs)?
    } else if name.ends_with(".json") {
        check_json(&file.abs)?
    } else if is_zip(&file.abs)? {
        check_zip(&file.abs)?
    } else {
        let age = now.duration_since(file.mtime).unwrap_or_default();
        if age >= quiet {
            Verdict::Complete
        } else {
            Verdict::incomplete(format!(
                "modified {:.1}s ago, waiting for {}s of quiet",
                age.as_secs_f64(),
                quiet.as_secs()
            ))
        }
    };
    Ok(match v {
        Verdict::Incomplete(r) => Verdict::Incomplete(format!("{}: {r}", file.rel)),
        c => c,
    })
}

/// Checks a whole checkpoint: its kind's commit marker, every index's shards, every file.
pub fn check_checkpoint(
    kind: Kind,
    files: &[LocalFile],
    quiet: Duration,
    now: SystemTime,
) -> std::io::Result<Verdict> {
    if files.is_empty() {
        return Ok(Verdict::incomplete("no files yet"));
    }
    let names: BTreeSet<&str> = files.iter().map(|f| f.rel.as_str()).collect();
    match kind {
        Kind::HfDir if !names.contains("trainer_state.json") => {
            return Ok(Verdict::incomplete("waiting for trainer_state.json"));
        }
        _ => {}
    }
    // Any directory holding DCP shards must hold its `.metadata` (the rename that commits it).
    let mut dcp_dirs = BTreeSet::new();
    for f in files {
        if f.rel.ends_with(".distcp") {
            dcp_dirs.insert(parent(&f.rel));
        }
    }
    if kind == Kind::DcpDir {
        dcp_dirs.insert("");
    }
    for d in &dcp_dirs {
        let meta = if d.is_empty() {
            ".metadata".to_owned()
        } else {
            format!("{d}/.metadata")
        };
        if !names.contains(meta.as_str()) {
            return Ok(Verdict::incomplete(format!("waiting for {meta}")));
        }
    }
    for f in files {
        if f.rel.ends_with(".index.json") {
            match index_files(&f.abs)? {
                None => {
                    return Ok(Verdict::incomplete(format!(
                        "{}: index not readable yet",
                        f.rel
                    )))
                }
                Some(shards) => {
                    let dir = parent(&f.rel);
                    for s in shards {
                        let rel = if dir.is_empty() {
                            s.clone()
                        } else {
                            format!("{dir}/{s}")
                        };
                        if !names.contains(rel.as_str()) {
                            return Ok(Verdict::incomplete(format!(
                                "{} names {rel}, which is missing",
                                f.rel
                            )));
                        }
                    }
                }
            }
        }
    }
    for f in files {
        // DCP shards are finished once `.metadata` exists (checked above).
        if f.rel.ends_with(".distcp") || f.rel.ends_with(".metadata") {
            continue;
        }
        if let v @ Verdict::Incomplete(_) = check_file(f, quiet, now)? {
            return Ok(v);
        }
    }
    Ok(Verdict::Complete)
}

fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Writes a safetensors file with one F32 tensor of `n` elements.
    pub fn safetensors_bytes(n: usize) -> Vec<u8> {
        let header = format!(
            r#"{{"__metadata__":{{"format":"pt"}},"w":{{"dtype":"F32","shape":[{n}],"data_offsets":[0,{}]}}}}"#,
            n * 4
        );
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend((0..n * 4).map(|i| i as u8));
        out
    }

    /// A stored (uncompressed) zip with the given entries, as torch.save would lay it out.
    pub fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut cd = Vec::new();
        for (name, data) in entries {
            let off = out.len() as u32;
            let crc = crc32c::crc32c(data); // not the zip CRC, irrelevant to the structure check
            out.extend_from_slice(&LFH_SIG.to_le_bytes());
            out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);
            cd.extend_from_slice(&CDH_SIG.to_le_bytes());
            cd.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            cd.extend_from_slice(&crc.to_le_bytes());
            cd.extend_from_slice(&(data.len() as u32).to_le_bytes());
            cd.extend_from_slice(&(data.len() as u32).to_le_bytes());
            cd.extend_from_slice(&(name.len() as u16).to_le_bytes());
            cd.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            cd.extend_from_slice(&off.to_le_bytes());
            cd.extend_from_slice(name.as_bytes());
        }
        let cd_off = out.len() as u32;
        out.extend_from_slice(&cd);
        out.extend_from_slice(&EOCD_SIG.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(cd.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_off.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    #[test]
    fn safetensors_complete_and_truncated() {
        let d = tempfile::tempdir().unwrap();
        let full = safetensors_bytes(1000);
        let p = write(d.path(), "m.safetensors", &full);
        assert_eq!(check_safetensors(&p).unwrap(), Verdict::Complete);
        for cut in [0, 4, 8, 20, full.len() - 4000, full.len() - 1] {
            let p = write(d.path(), "t.safetensors", &full[..cut]);
            assert!(
                matches!(check_safetensors(&p).unwrap(), Verdict::Incomplete(_)),
                "cut at {cut}"
            );
        }
        let mut longer = full.clone();
        longer.push(0);
        let p = write(d.path(), "l.safetensors", &longer);
        assert!(matches!(
            check_safetensors(&p).unwrap(),
            Verdict::Incomplete(_)
        ));
        let mut huge = (200_000_000u64).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        let p = write(d.path(), "h.safetensors", &huge);
        assert!(
            matches!(check_safetensors(&p).unwrap(), Verdict::Incomplete(r) if r.contains("100 MB"))
        );
    }

    #[test]
    fn safetensors_shape_mismatch_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        let header = r#"{"w":{"dtype":"F32","shape":[10],"data_offsets":[0,8]}}"#;
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&[0; 8]);
        let p = write(d.path(), "x.safetensors", &b);
        assert!(matches!(
            check_safetensors(&p).unwrap(),
            Verdict::Incomplete(_)
        ));
    }

    #[test]
    fn zip_complete_and_truncated() {
        let d = tempfile::tempdir().unwrap();
        let z = zip_bytes(&[
            ("archive/data.pkl", b"pickle bytes"),
            ("archive/data/0", &[7u8; 5000]),
        ]);
        let p = write(d.path(), "opt.pt", &z);
        assert!(is_zip(&p).unwrap());
        assert_eq!(check_zip(&p).unwrap(), Verdict::Complete);
        for cut in [10, 100, z.len() - 30, z.len() - 1] {
            let p = write(d.path(), "t.pt", &z[..cut]);
            assert!(
                matches!(check_zip(&p).unwrap(), Verdict::Incomplete(_)),
                "cut at {cut}"
            );
        }
        // An EOCD whose central directory offset is wrong is not accepted.
        let mut bad = z.clone();
        let n = bad.len();
        bad[n - 6] ^= 0x01;
        let p = write(d.path(), "b.pt", &bad);
        assert!(matches!(check_zip(&p).unwrap(), Verdict::Incomplete(_)));
    }

    #[test]
    fn index_requires_all_shards() {
        let d = tempfile::tempdir().unwrap();
        let st = safetensors_bytes(10);
        write(d.path(), "model-00001-of-00002.safetensors", &st);
        write(
            d.path(),
            "model.safetensors.index.json",
            br#"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#,
        );
        write(d.path(), "trainer_state.json", br#"{"global_step": 5}"#);
        let now = SystemTime::now();
        let files = crate::detect::list_files(d.path()).unwrap();
        let v = check_checkpoint(Kind::HfDir, &files, Duration::ZERO, now).unwrap();
        assert!(
            matches!(v, Verdict::Incomplete(ref r) if r.contains("00002")),
            "{v:?}"
        );
        write(d.path(), "model-00002-of-00002.safetensors", &st);
        let files = crate::detect::list_files(d.path()).unwrap();
        assert_eq!(
            check_checkpoint(Kind::HfDir, &files, Duration::ZERO, now).unwrap(),
            Verdict::Complete
        );
    }

    #[test]
    fn hf_dir_waits_for_trainer_state_and_json() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "model.safetensors", &safetensors_bytes(10));
        let now = SystemTime::now();
        let files = crate::detect::list_files(d.path()).unwrap();
        assert!(matches!(
            check_checkpoint(Kind::HfDir, &files, Duration::ZERO, now).unwrap(),
            Verdict::Incomplete(r) if r.contains("trainer_state.json")
        ));
        write(
            d.path(),
            "trainer_state.json",
            br#"{"global_step": 5, "log_hi"#,
        );
        let files = crate::detect::list_files(d.path()).unwrap();
        assert!(matches!(
            check_checkpoint(Kind::HfDir, &files, Duration::ZERO, now).unwrap(),
            Verdict::Incomplete(_)
        ));
        write(d.path(), "trainer_state.json", br#"{"global_step": 5}"#);
        let files = crate::detect::list_files(d.path()).unwrap();
        assert_eq!(
            check_checkpoint(Kind::HfDir, &files, Duration::ZERO, now).unwrap(),
            Verdict::Complete
        );
    }

    #[test]
    fn dcp_waits_for_metadata_and_quiet_period_applies() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "__0_0.distcp", b"shard");
        let files = crate::detect::list_files(d.path()).unwrap();
        let now = SystemTime::now();
        assert!(matches!(
            check_checkpoint(Kind::DcpDir, &files, Duration::ZERO, now).unwrap(),
            Verdict::Incomplete(_)
        ));
        write(d.path(), ".metadata", b"meta");
        let files = crate::detect::list_files(d.path()).unwrap();
        assert_eq!(
            check_checkpoint(Kind::DcpDir, &files, Duration::ZERO, now).unwrap(),
            Verdict::Complete
        );
        // An unknown file inside must be quiet for the quiet period.
        write(d.path(), "notes.txt", b"x");
        let files = crate::detect::list_files(d.path()).unwrap();
        let q = Duration::from_secs(60);
        let now = SystemTime::now();
        assert!(matches!(
            check_checkpoint(Kind::DcpDir, &files, q, now).unwrap(),
            Verdict::Incomplete(_)
        ));
        assert_eq!(
            check_checkpoint(Kind::DcpDir, &files, q, now + q + Duration::from_secs(1)).unwrap(),
            Verdict::Complete
        );
    }
}
