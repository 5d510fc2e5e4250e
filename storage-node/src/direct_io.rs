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
/// `O_DIRECT` transfer pins the pages it uses, and pinning (and faulting in) one huge
/// page instead of 512 small ones spares the node that work 511 times over.
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

/// Free [`HUGE_PAGE`] buffers shared by all of a node's reads and writes, so a new upload or
/// read stream reuses memory already faulted in instead of mapping, zero-filling and
/// unmapping its own (a cost paid per shard, and a multipart upload has many). At most
/// `keep` idle buffers are held; more are unmapped when given back.
#[derive(Clone)]
pub struct BufferPool {
    free: std::sync::Arc<std::sync::Mutex<Vec<AlignedBuf>>>,
    keep: usize,
}

impl BufferPool {
    /// A pool holding at most `keep` idle buffers.
    pub fn new(keep: usize) -> Self {
        Self {
            free: Default::default(),
            keep,
        }
    }

    /// An empty buffer with a window of at least `len` bytes: a pooled one when `len`
    /// fits in a huge page, else a new one (rounded up to whole huge pages).
    pub fn take(&self, len: usize) -> io::Result<AlignedBuf> {
        if len <= HUGE_PAGE {
            if let Some(mut buf) = self.free.lock().ok().and_then(|mut f| f.pop()) {
                buf.fill = 0;
                return Ok(buf);
            }
        }
        AlignedBuf::new(len.max(1).next_multiple_of(HUGE_PAGE))
    }

    /// Takes `buf` back for reuse (a buffer of another size is simply dropped).
    pub fn give(&self, buf: AlignedBuf) {
        if buf.capacity() != HUGE_PAGE {
            return;
        }
        if let Ok(mut free) = self.free.lock() {
            if free.len() < self.keep {
                free.push(buf);
            }
        }
    }

    /// Idle buffers held.
    pub fn idle(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("idle", &self.idle())
            .field("keep", &self.keep)
            .finish()
    }
}

/// `path` opened again with `O_DIRECT` (Linux) or `F_NOCACHE` (macOS), for writing or for
/// reading, where the OS and the file system allow it; `None` means use the ordinary (page
/// cache) handle.
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
    // macOS has no O_DIRECT; F_NOCACHE on the open file is its equivalent (transfers
    // bypass the unified buffer cache) and, unlike O_DIRECT, accepts any alignment, so the
    // aligned reads and padded writes made for O_DIRECT work unchanged.
    #[cfg(target_os = "macos")]
    {
        use std::os::fd::AsRawFd;
        let f = match std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .open(path)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "cannot open a second handle; using the page cache");
                return None;
            }
        };
        // SAFETY: fcntl on a descriptor owned by `f` for the duration of the call.
        if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_NOCACHE, 1) } == -1 {
            let e = io::Error::last_os_error();
            tracing::debug!(error = %e, "F_NOCACHE not available; using the page cache");
            return None;
        }
        Some(f)
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = (path, write);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_huge_page_buffers_up_to_its_limit() {
        let pool = BufferPool::new(2);
        let mut a = pool.take(100).expect("buffer");
        assert_eq!(a.capacity(), HUGE_PAGE);
        assert_eq!(a.window().as_ptr() as usize % HUGE_PAGE, 0, "not aligned");
        a.push(b"left over");
        let a_ptr = a.window().as_ptr();
        pool.give(a);
        assert_eq!(pool.idle(), 1);
        // The same memory comes back, emptied.
        let a = pool.take(HUGE_PAGE).expect("buffer");
        assert_eq!(a.window().as_ptr(), a_ptr);
        assert_eq!(a.fill, 0);
        assert_eq!(pool.idle(), 0);
        // Bigger than a huge page: a new buffer, never pooled.
        let big = pool.take(HUGE_PAGE + 1).expect("buffer");
        assert_eq!(big.capacity(), 2 * HUGE_PAGE);
        pool.give(big);
        assert_eq!(pool.idle(), 0);
        // At most `keep` idle buffers.
        let b = pool.take(1).expect("buffer");
        let c = pool.take(1).expect("buffer");
        for buf in [a, b, c] {
            pool.give(buf);
        }
        assert_eq!(pool.idle(), 2);
    }
}
