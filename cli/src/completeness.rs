//! Is a checkpoint file (or a whole checkpoint) finished being written?
//!
//! Formats are checked by their own structure: safetensors by its header and data offsets,
//! torch zip archives by their end-of-central-directory record, JSON by parsing, sharded
//! models by their index, HF checkpoint dirs by `trainer_state.json`, DCP dirs by
//! `.metadata`. Anything else must have been quiet (unmodified) for a while.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use zip::result::ZipError;
use zip::ZipArchive;

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

const EOCD_SIG: u64 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u64 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u64 = 0x0606_4b50;
/// Fixed sizes of the end-of-central-directory record, the ZIP64 locator and ZIP64 record,
/// a central directory header and a local file header.
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_LEN: usize = 56;
const CDH_LEN: usize = 46;
const LFH_LEN: u64 = 30;
/// Largest central directory accepted: the zip crate keeps an entry in memory per header,
/// and torch archives have a few entries per tensor.
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
///
/// The zip crate reads the central directory (headers, ZIP64 records and extra fields, local
/// header signatures). What it cannot say is read here from the end records' fixed fields:
/// whether the archive ends the file, and whether the directory fills the size it is given.
pub fn check_zip(path: &Path) -> std::io::Result<Verdict> {
    let file = File::open(path)?;
    match check_zip_structure(&file) {
        Ok(()) => Ok(Verdict::Complete),
        Err(ZipStop::Incomplete(reason)) => Ok(Verdict::Incomplete(reason)),
        Err(ZipStop::Io(e)) => Err(e),
    }
}

/// Why a zip check stopped before finding the archive complete.
#[derive(Debug)]
enum ZipStop {
    /// The archive is not (yet) complete, with the reason.
    Incomplete(String),
    /// The file could not be read.
    Io(std::io::Error),
}

impl From<std::io::Error> for ZipStop {
    fn from(e: std::io::Error) -> Self {
        ZipStop::Io(e)
    }
}

fn unfinished<T>(reason: impl Into<String>) -> Result<T, ZipStop> {
    Err(ZipStop::Incomplete(reason.into()))
}

/// The zip checks in order: end record, directory bounds, the crate's reading of the
/// directory and local headers, and the directory's size.
fn check_zip_structure(file: &File) -> Result<(), ZipStop> {
    let size = file.metadata()?.len();
    let (eocd_pos, eocd) = find_end_record(file, size)?;
    let dir = locate_central_directory(file, eocd_pos, &eocd)?;
    let budget = Cell::new(parse_budget(size, &dir));
    let mut archive = read_central_directory(file, &budget)?;
    budget.set(u64::MAX);
    let last_header = check_local_headers(&mut archive, &dir)?;
    check_directory_size(file, &dir, last_header)
}

/// Finds the end-of-central-directory record where a finished archive has it: its comment
/// runs exactly to the end of the file. Read by hand because the zip crate accepts bytes
/// after the comment, and without a record at the end searches the whole file for an earlier
/// one; a file still being written has no record at its end, which its tail alone shows.
fn find_end_record(file: &File, size: u64) -> Result<(u64, [u8; EOCD_LEN]), ZipStop> {
    if size < EOCD_LEN as u64 {
        return unfinished("zip archive shorter than an end-of-central-directory record");
    }
    let tail_len = size.min(EOCD_LEN as u64 + 65535);
    let tail_start = size - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact_at(&mut tail, tail_start)?;
    // The record is the last one whose comment runs exactly to the end of the file.
    let found = (0..=tail.len() - EOCD_LEN).rev().find(|&p| {
        le32(&tail, p) == EOCD_SIG && p + EOCD_LEN + le16(&tail, p + 20) as usize == tail.len()
    });
    let Some(p) = found else {
        return unfinished("zip archive has no end-of-central-directory record at its end");
    };
    let mut eocd = [0u8; EOCD_LEN];
    eocd.copy_from_slice(&tail[p..p + EOCD_LEN]);
    Ok((tail_start + p as u64, eocd))
}

/// Where the end records place the central directory.
struct CentralDirectory {
    /// Offset of its first header.
    offset: u64,
    /// Its size in bytes, as the end records give it.
    size: u64,
    /// Where the end records start; the directory must end before.
    end_records: u64,
}

/// Reads the central directory's offset and size from the end record, or from the ZIP64
/// record when the end record's fields overflow, and checks they lie inside the archive.
/// The zip crate exposes neither the size nor where the end records start, and the bounds
/// and size checks need both.
fn locate_central_directory(
    file: &File,
    eocd_pos: u64,
    eocd: &[u8; EOCD_LEN],
) -> Result<CentralDirectory, ZipStop> {
    let entries = le16(eocd, 10);
    let (size, offset) = (le32(eocd, 12), le32(eocd, 16));
    let dir = if entries == 0xFFFF || size == 0xFFFF_FFFF || offset == 0xFFFF_FFFF {
        locate_zip64_directory(file, eocd_pos)?
    } else {
        CentralDirectory {
            offset,
            size,
            end_records: eocd_pos,
        }
    };
    if dir
        .offset
        .checked_add(dir.size)
        .is_none_or(|end| end > dir.end_records)
    {
        return unfinished("zip central directory lies outside the archive");
    }
    if dir.size > MAX_CENTRAL_DIRECTORY {
        return unfinished("zip central directory larger than 256 MiB");
    }
    Ok(dir)
}

/// The ZIP64 locator sits right before the end record and points at the ZIP64 record,
/// which holds the directory's 64-bit offset and size.
fn locate_zip64_directory(file: &File, eocd_pos: u64) -> Result<CentralDirectory, ZipStop> {
    let Some(locator_pos) = eocd_pos.checked_sub(ZIP64_LOCATOR_LEN as u64) else {
        return unfinished("zip64 locator missing");
    };
    let mut locator = [0u8; ZIP64_LOCATOR_LEN];
    file.read_exact_at(&mut locator, locator_pos)?;
    if le32(&locator, 0) != ZIP64_LOCATOR_SIG {
        return unfinished("zip64 locator missing");
    }
    let record_pos = le64(&locator, 8);
    if record_pos
        .checked_add(ZIP64_EOCD_LEN as u64)
        .is_none_or(|end| end > locator_pos)
    {
        return unfinished("zip64 end-of-central-directory record out of range");
    }
    let mut record = [0u8; ZIP64_EOCD_LEN];
    file.read_exact_at(&mut record, record_pos)?;
    if le32(&record, 0) != ZIP64_EOCD_SIG {
        return unfinished("zip64 end-of-central-directory record missing");
    }
    Ok(CentralDirectory {
        offset: le64(&record, 48),
        size: le64(&record, 40),
        end_records: record_pos,
    })
}

/// Bytes the zip crate may read while parsing the directory: the end records and the
/// directory twice over (it searches back to the end record before reading forward), its
/// 1 KiB search window, and room to spare.
fn parse_budget(size: u64, dir: &CentralDirectory) -> u64 {
    2 * (size - dir.offset) + (64 << 10)
}

/// The archive file as the zip crate reads it, with a cap on the bytes it may read.
///
/// On a directory it cannot read, the crate searches the rest of the file backwards for an
/// earlier end record, 1 KiB at a time. The cap ends that search within the bytes the end
/// records and the directory span, so a damaged multi-gigabyte archive costs no more to
/// check than an intact one.
struct CappedReader<'a> {
    file: &'a File,
    left: &'a Cell<u64>,
}

/// The error a [`CappedReader`] returns once its cap is used up.
#[derive(Debug)]
struct ReadCapReached;

impl std::fmt::Display for ReadCapReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("search for another end record stopped at the read cap")
    }
}

impl std::error::Error for ReadCapReached {}

impl Read for CappedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left.get();
        if left == 0 {
            return Err(std::io::Error::other(ReadCapReached));
        }
        let allowed = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..allowed])?;
        self.left.set(left - n as u64);
        Ok(n)
    }
}

impl Seek for CappedReader<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

/// The central directory as the zip crate reads it. The archive must start at offset 0:
/// a directory that is not where the end record says is damage, not prepended data.
fn read_central_directory<'a>(
    file: &'a File,
    budget: &'a Cell<u64>,
) -> Result<ZipArchive<CappedReader<'a>>, ZipStop> {
    let config = zip::read::Config {
        archive_offset: zip::read::ArchiveOffset::Known(0),
    };
    let reader = CappedReader { file, left: budget };
    ZipArchive::with_config(config, reader)
        .map_err(|e| zip_stop("zip central directory is corrupt", e))
}

/// A zip crate error as a reason the archive is incomplete, unless it is a failed read.
fn zip_stop(what: &str, e: ZipError) -> ZipStop {
    match e {
        ZipError::Io(e)
            if !matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) && !e
                .get_ref()
                .is_some_and(|inner| inner.is::<ReadCapReached>()) =>
        {
            ZipStop::Io(e)
        }
        e => ZipStop::Incomplete(format!("{what}: {e}")),
    }
}

/// Every entry must point at a local file header (the crate reads it and checks its
/// signature) that starts before the central directory. Returns where the directory's last
/// header starts.
fn check_local_headers(
    archive: &mut ZipArchive<CappedReader<'_>>,
    dir: &CentralDirectory,
) -> Result<Option<u64>, ZipStop> {
    let mut last_header = None;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| zip_stop("zip entry does not point at a local file header", e))?;
        if entry.header_start().saturating_add(LFH_LEN) > dir.offset {
            return unfinished("zip entry points past the central directory");
        }
        last_header = last_header.max(Some(entry.central_header_start()));
    }
    Ok(last_header)
}

/// The headers the crate read must fill the directory's size exactly. The crate reads as
/// many headers as the end record lists and never uses the size, so a count that disagrees
/// with the directory shows only here: in where the last header ends.
fn check_directory_size(
    file: &File,
    dir: &CentralDirectory,
    last_header: Option<u64>,
) -> Result<(), ZipStop> {
    let end = match last_header {
        None => dir.offset,
        Some(at) => {
            let mut header = [0u8; CDH_LEN];
            file.read_exact_at(&mut header, at)?;
            let variable = le16(&header, 28) + le16(&header, 30) + le16(&header, 32);
            at + CDH_LEN as u64 + variable
        }
    };
    if end != dir.offset + dir.size {
        return unfinished(format!(
            "zip central directory has {} bytes of headers, its end record says {}",
            end - dir.offset,
            dir.size
        ));
    }
    Ok(())
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

    const LFH_SIG: u32 = 0x0403_4b50;
    const CDH_SIG: u32 = 0x0201_4b50;

    /// A stored (uncompressed) zip with the given entries, as torch.save would lay it out.
    pub fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
        zip_archive(entries, false, b"")
    }

    /// A stored zip; with `zip64`, ended the way large archives are (ZIP64 record and
    /// locator, the end record's fields at their maximum, local header offsets in ZIP64
    /// extra fields). `comment` ends the archive.
    fn zip_archive(entries: &[(&str, &[u8])], zip64: bool, comment: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut cd = Vec::new();
        for (name, data) in entries {
            let off = out.len() as u64;
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
            push_central_header(&mut cd, name, data.len() as u32, crc, off, zip64);
        }
        let cd_off = out.len() as u64;
        out.extend_from_slice(&cd);
        push_end_records(&mut out, entries.len() as u64, cd_off, zip64, comment);
        out
    }

    fn push_central_header(
        cd: &mut Vec<u8>,
        name: &str,
        len: u32,
        crc: u32,
        off: u64,
        zip64: bool,
    ) {
        let extra: Vec<u8> = if zip64 {
            [
                &1u16.to_le_bytes()[..],
                &8u16.to_le_bytes(),
                &off.to_le_bytes(),
            ]
            .concat()
        } else {
            Vec::new()
        };
        cd.extend_from_slice(&CDH_SIG.to_le_bytes());
        cd.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        cd.extend_from_slice(&crc.to_le_bytes());
        cd.extend_from_slice(&len.to_le_bytes());
        cd.extend_from_slice(&len.to_le_bytes());
        cd.extend_from_slice(&(name.len() as u16).to_le_bytes());
        cd.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        cd.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let local = if zip64 { u32::MAX } else { off as u32 };
        cd.extend_from_slice(&local.to_le_bytes());
        cd.extend_from_slice(name.as_bytes());
        cd.extend_from_slice(&extra);
    }

    /// Ends an archive whose `n`-entry central directory starts at `cd_off` and runs to the
    /// end of `out`.
    fn push_end_records(out: &mut Vec<u8>, n: u64, cd_off: u64, zip64: bool, comment: &[u8]) {
        let cd_len = out.len() as u64 - cd_off;
        if zip64 {
            let record = out.len() as u64;
            out.extend_from_slice(&(ZIP64_EOCD_SIG as u32).to_le_bytes());
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            for v in [n, n, cd_len, cd_off] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&(ZIP64_LOCATOR_SIG as u32).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&record.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        let (n16, size32, off32) = if zip64 {
            (u16::MAX, u32::MAX, u32::MAX)
        } else {
            (n as u16, cd_len as u32, cd_off as u32)
        };
        out.extend_from_slice(&(EOCD_SIG as u32).to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&n16.to_le_bytes());
        out.extend_from_slice(&n16.to_le_bytes());
        out.extend_from_slice(&size32.to_le_bytes());
        out.extend_from_slice(&off32.to_le_bytes());
        out.extend_from_slice(&(comment.len() as u16).to_le_bytes());
        out.extend_from_slice(comment);
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

    fn zip_verdict(dir: &Path, bytes: &[u8]) -> Verdict {
        let p = write(dir, "x.pt", bytes);
        check_zip(&p).unwrap()
    }

    fn assert_incomplete(v: Verdict, why: &str) {
        assert!(matches!(v, Verdict::Incomplete(_)), "{why}: {v:?}");
    }

    const TORCH_ENTRIES: &[(&str, &[u8])] = &[
        ("archive/data.pkl", b"pickle bytes"),
        ("archive/data/0", &[7u8; 200]),
        ("archive/version", b"3\n"),
    ];

    #[test]
    fn zip_complete_and_every_truncation_incomplete() {
        let d = tempfile::tempdir().unwrap();
        for zip64 in [false, true] {
            let z = zip_archive(TORCH_ENTRIES, zip64, b"");
            let p = write(d.path(), "opt.pt", &z);
            assert!(is_zip(&p).unwrap());
            assert_eq!(check_zip(&p).unwrap(), Verdict::Complete, "zip64 {zip64}");
            for cut in 0..z.len() {
                assert_incomplete(
                    zip_verdict(d.path(), &z[..cut]),
                    &format!("zip64 {zip64}, cut at {cut}"),
                );
            }
        }
        // Cut short, the reason names the missing end record.
        let z = zip_bytes(TORCH_ENTRIES);
        let v = zip_verdict(d.path(), &z[..z.len() - 10]);
        assert!(
            matches!(&v, Verdict::Incomplete(r) if r.contains("end-of-central-directory")),
            "{v:?}"
        );
    }

    #[test]
    fn zip_with_longest_comment_is_complete() {
        let d = tempfile::tempdir().unwrap();
        let comment = vec![b'c'; 65535];
        for zip64 in [false, true] {
            let z = zip_archive(TORCH_ENTRIES, zip64, &comment);
            assert_eq!(
                zip_verdict(d.path(), &z),
                Verdict::Complete,
                "zip64 {zip64}"
            );
        }
        let empty = zip_archive(&[], false, b"");
        assert_eq!(zip_verdict(d.path(), &empty), Verdict::Complete);
    }

    #[test]
    fn zip_end_record_must_end_the_file() {
        let d = tempfile::tempdir().unwrap();
        let mut z = zip_bytes(TORCH_ENTRIES);
        z.push(0);
        assert_incomplete(zip_verdict(d.path(), &z), "a byte after the end record");
    }

    #[test]
    fn zip_missing_or_misplaced_central_directory() {
        let d = tempfile::tempdir().unwrap();
        let z = zip_bytes(TORCH_ENTRIES);
        let n = z.len();
        let cd_off = u32::from_le_bytes(z[n - 6..n - 2].try_into().unwrap()) as usize;
        // The end record alone, its directory never written.
        let mut gone = z[..cd_off].to_vec();
        gone.extend_from_slice(&z[n - EOCD_LEN..]);
        assert_incomplete(zip_verdict(d.path(), &gone), "no central directory");
        // The directory overwritten with zeros.
        let mut zeroed = z.clone();
        zeroed[cd_off..n - EOCD_LEN].fill(0);
        assert_incomplete(zip_verdict(d.path(), &zeroed), "zeroed central directory");
        // The end record's directory offset off by one either way, or past the end record.
        for off in [cd_off - 1, cd_off + 1, n, n + 100] {
            let mut bad = z.clone();
            bad[n - 6..n - 2].copy_from_slice(&(off as u32).to_le_bytes());
            assert_incomplete(zip_verdict(d.path(), &bad), &format!("offset {off}"));
        }
        // Bytes before the archive: its recorded offsets point short of their entries.
        let prefixed = [&[0u8; 100][..], &z].concat();
        assert_incomplete(zip_verdict(d.path(), &prefixed), "bytes before the archive");
        // A ZIP64 end without its locator.
        let z64 = zip_archive(TORCH_ENTRIES, true, b"");
        let m = z64.len();
        let mut no_locator = z64.clone();
        no_locator[m - EOCD_LEN - ZIP64_LOCATOR_LEN] ^= 0xFF;
        assert_incomplete(zip_verdict(d.path(), &no_locator), "zip64 locator");
    }

    #[test]
    fn zip_directory_must_match_its_end_record() {
        let d = tempfile::tempdir().unwrap();
        let z = zip_bytes(TORCH_ENTRIES);
        let n = z.len();
        // One entry fewer than the directory holds, or one more.
        for count in [2u16, 4] {
            let mut bad = z.clone();
            bad[n - 14..n - 10]
                .copy_from_slice(&[count.to_le_bytes(), count.to_le_bytes()].concat());
            assert_incomplete(zip_verdict(d.path(), &bad), &format!("{count} entries"));
        }
        // A directory size one byte short or long.
        let size = u32::from_le_bytes(z[n - 10..n - 6].try_into().unwrap());
        for s in [size - 1, size + 1] {
            let mut bad = z.clone();
            bad[n - 10..n - 6].copy_from_slice(&s.to_le_bytes());
            assert_incomplete(zip_verdict(d.path(), &bad), &format!("size {s}"));
        }
    }

    #[test]
    fn zip_entries_must_point_at_local_headers() {
        let d = tempfile::tempdir().unwrap();
        let z = zip_bytes(TORCH_ENTRIES);
        let n = z.len();
        let cd_off = u32::from_le_bytes(z[n - 6..n - 2].try_into().unwrap()) as usize;
        // The second entry's local header offset moved by one, or into the directory.
        let second = cd_off + CDH_LEN + TORCH_ENTRIES[0].0.len();
        let local = u32::from_le_bytes(z[second + 42..second + 46].try_into().unwrap());
        for to in [local + 1, cd_off as u32] {
            let mut bad = z.clone();
            bad[second + 42..second + 46].copy_from_slice(&to.to_le_bytes());
            assert_incomplete(
                zip_verdict(d.path(), &bad),
                &format!("local header at {to}"),
            );
        }
        // A local header's signature damaged.
        let mut bad = z.clone();
        bad[local as usize] ^= 0xFF;
        assert_incomplete(zip_verdict(d.path(), &bad), "local header signature");
        // A later central header's signature damaged.
        let mut bad = z.clone();
        bad[second] ^= 0xFF;
        assert_incomplete(zip_verdict(d.path(), &bad), "central header signature");
    }

    #[test]
    fn zip_local_header_inside_the_directory_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        // A name holding a local header signature: the second entry pointed at that spot in
        // the directory finds a signature, but not before the directory.
        let entries: &[(&str, &[u8])] = &[("PK\x03\x04", b"x"), ("b", b"y")];
        let z = zip_bytes(entries);
        let n = z.len();
        let cd_off = u32::from_le_bytes(z[n - 6..n - 2].try_into().unwrap()) as usize;
        let inside = cd_off + CDH_LEN;
        assert_eq!(&z[inside..inside + 4], b"PK\x03\x04");
        let second = cd_off + CDH_LEN + entries[0].0.len();
        let mut bad = z.clone();
        bad[second + 42..second + 46].copy_from_slice(&(inside as u32).to_le_bytes());
        let v = zip_verdict(d.path(), &bad);
        assert!(
            matches!(&v, Verdict::Incomplete(r) if r.contains("past the central directory")),
            "{v:?}"
        );
    }

    #[test]
    fn zip_damaged_directory_is_read_within_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let first = "archive/data/0";
        let z = zip_bytes(&[(first, &vec![7u8; 1 << 20]), ("archive/version", b"3\n")]);
        let n = z.len();
        let cd_off = u32::from_le_bytes(z[n - 6..n - 2].try_into().unwrap()) as usize;
        let mut bad = z.clone();
        bad[cd_off + CDH_LEN + first.len()] ^= 0xFF; // the second central header's signature
        for (bytes, damaged) in [(&z, false), (&bad, true)] {
            let file = File::open(write(d.path(), "x.pt", bytes)).unwrap();
            let size = bytes.len() as u64;
            let (pos, eocd) = find_end_record(&file, size).unwrap();
            let dir = locate_central_directory(&file, pos, &eocd).unwrap();
            let budget = Cell::new(parse_budget(size, &dir));
            let parsed = read_central_directory(&file, &budget);
            assert_eq!(
                matches!(parsed, Err(ZipStop::Incomplete(_))),
                damaged,
                "damaged {damaged}"
            );
            // The crate's search for an earlier end record stops at the cap, short of the
            // megabyte before the directory.
            assert_eq!(budget.get() == 0, damaged, "damaged {damaged}");
        }
    }

    #[test]
    fn zip_directory_over_256_mib_is_refused() {
        let d = tempfile::tempdir().unwrap();
        // A sparse file: a directory of 257 MiB of zeros at offset 0, then the end record.
        let size = 257u64 << 20;
        let mut eocd = [0u8; EOCD_LEN];
        eocd[..4].copy_from_slice(&(EOCD_SIG as u32).to_le_bytes());
        eocd[12..16].copy_from_slice(&(size as u32).to_le_bytes());
        let p = d.path().join("big.pt");
        let f = File::create(&p).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(&eocd, size).unwrap();
        let v = check_zip(&p).unwrap();
        assert!(
            matches!(&v, Verdict::Incomplete(r) if r.contains("256 MiB")),
            "{v:?}"
        );
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
