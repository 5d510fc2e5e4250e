//! Plumbing every Cairn process shares: log setup, shutdown signals, duration flags.
//! Request ids and rate-limited logging live in [`crate::request_id`] and [`crate::log_limit`].

use std::io::IsTerminal;
use std::time::Duration;

/// How a process logs, as read from the environment by [`LogConfig::from_env`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `tracing_subscriber::EnvFilter` directives, e.g. `info` or `warn,cairn_node=debug`.
    pub filter: String,
    /// One JSON object per line (else human-readable text).
    pub json: bool,
    /// Settings that were ignored, to report once logging works.
    pub complaints: Vec<String>,
}

impl LogConfig {
    /// Reads the level from `CAIRN_LOG`, else `RUST_LOG`, else `info`; the format from
    /// `CAIRN_LOG_FORMAT` (`json` or `text`), else JSON unless `terminal`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>, terminal: bool) -> Self {
        let mut complaints = Vec::new();
        let filter = ["CAIRN_LOG", "RUST_LOG"]
            .iter()
            .find_map(|name| {
                let v = var(name)?;
                let v = v.trim();
                if v.is_empty() {
                    return None;
                }
                match tracing_subscriber::EnvFilter::try_new(v) {
                    Ok(_) => Some(v.to_string()),
                    Err(e) => {
                        complaints.push(format!("{name}={v:?} ignored: {e}"));
                        None
                    }
                }
            })
            .unwrap_or_else(|| "info".to_string());
        let json = match var("CAIRN_LOG_FORMAT").as_deref().map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("json") => true,
            Some(v) if v.eq_ignore_ascii_case("text") || v.eq_ignore_ascii_case("pretty") => false,
            Some(v) if !v.is_empty() => {
                complaints.push(format!("CAIRN_LOG_FORMAT={v:?} ignored: use json or text"));
                !terminal
            }
            _ => !terminal,
        };
        Self {
            filter,
            json,
            complaints,
        }
    }
}

/// Logs to stderr as [`LogConfig::from_env`] says: JSON lines when stderr is not a terminal
/// (a service, a pipe, a file) or with `CAIRN_LOG_FORMAT=json`, coloured text on a terminal;
/// level from `CAIRN_LOG` or `RUST_LOG` (`info` by default). JSON lines carry the fields of
/// the current span (e.g. `span.request_id`). A subscriber already installed (an embedding
/// process, a test) is kept.
pub fn init_tracing() {
    let terminal = std::io::stderr().is_terminal();
    let cfg = LogConfig::from_env(|name| std::env::var(name).ok(), terminal);
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(terminal && !cfg.json);
    let installed = if cfg.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if installed.is_ok() {
        for c in &cfg.complaints {
            tracing::warn!("{c}");
        }
    }
}

/// Keeps freed heap memory for reuse instead of handing it back to the OS at once.
///
/// glibc's defaults return freed memory eagerly (trimming thread-arena heaps and unmapping
/// large blocks), so the multi-MiB stripe, socket and block buffers a streaming PUT frees
/// and allocates again every few milliseconds would come back as fresh pages, and page
/// faults and page zeroing would take a good share of the gateway's CPU. The retained
/// memory stays bounded by the peak the bounded pipelines need.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// Blocks below this come from the heap, not from their own mmap.
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        /// Free memory a heap keeps at its top before trimming.
        const TRIM_THRESHOLD: libc::c_int = 64 << 20;
        // SAFETY: mallopt only sets allocator parameters (under the allocator's lock);
        // a refusal leaves the defaults, which are correct, only slower.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}

/// Hands heap memory that is free again back to the OS (glibc only).
///
/// A flood of connections leaves many small freed blocks spread over every thread's
/// arena; glibc returns only what sits at the top of a heap, so without this the RSS of
/// the flood's peak stays. `malloc_trim` releases the free pages anywhere in every arena.
/// Other allocators (macOS's, musl's) return freed pages on their own: a no-op there.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raises this process's open-files soft limit (`RLIMIT_NOFILE`) to its hard limit, so a
/// server can hold as many connections as the system lets it, and returns the soft
/// limit in force afterwards (None if it cannot be read). Children inherit it.
///
/// On macOS the soft limit may not exceed `kern.maxfilesperproc` (setrlimit refuses it
/// when the hard limit is unlimited), so it is clamped to that, or to `OPEN_MAX` if the
/// sysctl cannot be read.
pub fn raise_fd_limit() -> Option<u64> {
    let Some(lim) = nofile_limits() else {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-files limit");
        return None;
    };
    let current: u64 = lim.rlim_cur;
    let target = fd_limit_target(lim.rlim_max);
    if target <= current {
        return Some(current);
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit only reads `raised`.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            soft = current,
            wanted = target,
            "cannot raise the open-files limit; keeping the soft limit"
        );
        return Some(current);
    }
    tracing::debug!(from = current, to = target, "open-files limit raised");
    Some(target)
}

/// Whether `e` says the process or the system is out of file descriptors (EMFILE, ENFILE).
pub fn is_out_of_fds(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// This process's open-files soft limit (None if it cannot be read).
pub fn fd_soft_limit() -> Option<u64> {
    nofile_limits().map(|lim| lim.rlim_cur)
}

fn nofile_limits() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limits into `lim`, which outlives the call.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

/// The soft limit to ask for, given the hard limit `hard`.
#[cfg(target_os = "macos")]
fn fd_limit_target(hard: u64) -> u64 {
    /// `OPEN_MAX` from <sys/syslimits.h>: what setrlimit always accepts.
    const OPEN_MAX: u64 = 10240;
    let mut per_proc: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>();
    // SAFETY: the name is NUL-terminated and `per_proc`/`len` describe a c_int buffer
    // that outlives the call; no new value is set (null, 0).
    let ok = unsafe {
        libc::sysctlbyname(
            c"kern.maxfilesperproc".as_ptr(),
            (&mut per_proc as *mut libc::c_int).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    } == 0;
    let cap = match u64::try_from(per_proc) {
        Ok(n) if ok && n > 0 => n,
        _ => OPEN_MAX,
    };
    hard.min(cap)
}

/// The soft limit to ask for, given the hard limit `hard`.
#[cfg(not(target_os = "macos"))]
fn fd_limit_target(hard: u64) -> u64 {
    hard
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Parses a byte count such as `1048576`, `40MiB`, `64GiB` or `64G` (binary units:
/// K, M, G and T with or without `B` / `iB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "bad size unit in {s:?} (use B, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    num.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses `500ms`, `30s`, `1.5m`, `24h`, `7d`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected e.g. 30s"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s, m, h or d")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn log_format_follows_the_terminal_unless_told() {
        assert!(LogConfig::from_env(env(&[]), false).json);
        assert!(!LogConfig::from_env(env(&[]), true).json);
        assert!(LogConfig::from_env(env(&[("CAIRN_LOG_FORMAT", "JSON")]), true).json);
        assert!(!LogConfig::from_env(env(&[("CAIRN_LOG_FORMAT", "text")]), false).json);
        let odd = LogConfig::from_env(env(&[("CAIRN_LOG_FORMAT", "xml")]), false);
        assert!(odd.json);
        assert_eq!(odd.complaints.len(), 1);
    }

    #[test]
    fn log_level_prefers_cairn_log_then_rust_log() {
        assert_eq!(LogConfig::from_env(env(&[]), false).filter, "info");
        let both = env(&[("CAIRN_LOG", "debug"), ("RUST_LOG", "warn")]);
        assert_eq!(LogConfig::from_env(both, false).filter, "debug");
        let rust = env(&[("CAIRN_LOG", " "), ("RUST_LOG", "warn,cairn_node=debug")]);
        assert_eq!(
            LogConfig::from_env(rust, false).filter,
            "warn,cairn_node=debug"
        );
        let bad = LogConfig::from_env(env(&[("CAIRN_LOG", "info,[[[")]), false);
        assert_eq!(bad.filter, "info");
        assert_eq!(bad.complaints.len(), 1, "{:?}", bad.complaints);
    }
}
