//! Capacity and free space: of the data filesystem (`statvfs`) or what the node offers.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Capacity and free space, in bytes: of the data filesystem ([`crate::store::Store::disk_space`])
/// or what the node offers ([`crate::store::Store::space`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    /// Total bytes of the filesystem.
    pub capacity: u64,
    /// Bytes available to this (unprivileged) process.
    pub free: u64,
}

/// Capacity and free bytes of the filesystem holding `path`.
pub fn statvfs(path: &Path) -> io::Result<DiskSpace> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string and `st` a properly sized out-parameter
    // that statvfs fully initializes when it returns 0.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        st
    };
    let frsize = st.f_frsize as u64;
    Ok(DiskSpace {
        capacity: (st.f_blocks as u64).saturating_mul(frsize),
        free: (st.f_bavail as u64).saturating_mul(frsize),
    })
}
