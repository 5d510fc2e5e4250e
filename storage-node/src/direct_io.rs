//! Direct I/O: aligned buffers of their own memory, and files opened with `O_DIRECT`.
//!
//! Shard data moves between the disk and these buffers without a copy through the page
//! cache, in both directions. A node streams shards once (written on PUT, read on GET
//! or scrub), so the page cache would only cost a copy and evict what is worth keeping.

use std::fs::File;
use std::io;
use std::path::Path;

/// Alignment of `O_DIRECT` buffers, file offsets and lengths (the page size, a multiple of
/// every common logical block size).
pub const DIRECT_ALIGN: usize = 4096;
/// Size and alignment of a transparent huge page (x86-64, arm64 with 4 KiB pages).
pub const HUGE_PAGE: usize = 2 * 1024 * 1024;

/// A window of its own anonymous memory, `len` bytes, filled front to back.
///
/// The window is aligned to [`HUGE_PAGE`] and marked for transparent huge pages: an
/// `O_DIRECT` transfer pins the pages it uses, and pinning one huge page instead of
/// 512 small ones (and faulting it in once) took a tenth of a node's CPU time off.
/// Anonymous memory comes zero-filled from the kernel, is never a recycled heap chunk
/// that would need clearing, and goes back to the OS when the buffer is dropped.
pub struct AlignedBuf {
    /// The whole mapping (window plus alignment slack), unmapped on drop.
    base: std::ptr::NonNull<u8>,
    map_len: usize,
    /// Start of the window in the mapping.
    start: usize,
    /// Length of the window.
    len: usize,
    /// Bytes of the window filled.
    pub fill: usize,
}

// SAFETY: the buffer owns its mapping exclusively; nothing else holds the pointer.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A buffer with a `len`-byte window.
    pub fn new(len: usize) -> io::Result<Self> {
        let map_len = len + HUGE_PAGE;
        // SAFETY: a fresh private anonymous mapping; the result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = std::ptr::NonNull::new(p.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        let start = base.as_ptr().align_offset(HUGE_PAGE).min(HUGE_PAGE);
        #[cfg(target_os = "linux")]
        {
            // SAFETY: advice on a range inside our own mapping; it never changes contents.
            // Refusal (no THP support) is harmless: small pages still work.
            let _ =
                unsafe { libc::madvise(base.as_ptr().add(start).cast(), len, libc::MADV_HUGEPAGE) };
        }
        Ok(Self {
            base,
            map_len,
            start,
            len,
            fill: 0,
        })
    }

    /// The whole window.
    pub fn window(&self) -> &[u8] {
        // SAFETY: `start + len <= map_len`; the mapping is readable, initialized
        // (zero-filled by the kernel) and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(self.start), self.len) }
    }

    /// The whole window, writable.
    pub fn window_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `window`, and `&mut self` makes this the only live reference.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(self.start), self.len) }
    }

    /// Length of the window.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// Bytes still free in the window.
    pub fn room(&self) -> usize {
        self.len - self.fill
    }

    /// Appends `data`, at most [`AlignedBuf::room`] bytes.
    pub fn push(&mut self, data: &[u8]) {
        let at = self.fill;
        self.window_mut()[at..at + data.len()].copy_from_slice(data);
        self.fill += data.len();
    }

    /// Whether the window is full.
    pub fn is_full(&self) -> bool {
        self.fill == self.len
    }

    /// The filled part of the window.
    pub fn filled(&self) -> &[u8] {
        &self.window()[..self.fill]
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no references outlive `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}

/// `path` opened again with `O_DIRECT`, for writing or for reading, where the OS and the
/// file system allow it; `None` means use the ordinary (page cache) handle.
pub fn open_direct(path: &Path, write: bool) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::debug!(error = %e, "O_DIRECT not available; using the page cache");
                None
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (path, write);
        None
    }
}
