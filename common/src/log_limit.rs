//! Rate-limited logging: one error repeating (a dead node, a failing disk) is logged at most
//! once per interval, with a count of the repeats held back, so logs can't flood an SD card.
//!
//! ```
//! # let (node, e) = ("n1", "connection refused");
//! cairn_common::log_limited!(warn, key = node; %node, error = %e, "storage node down");
//! ```
//!
//! A log site plus its `key` (the fields that make two events "the same error") is logged
//! when first seen, then held back until the interval has passed; the next line that gets
//! through carries `suppressed = N`, the repeats held back since the previous one. When the
//! error stops, a background thread logs the count left over (message plus
//! `"(repeats suppressed)"`), so no count is lost. Every line carries `suppressed`.
//!
//! The interval is 10 s, or `CAIRN_LOG_REPEAT_INTERVAL` (e.g. `2s`; `0` turns limiting off).

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

/// Default time between two lines of the same error.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Errors tracked at once; beyond that, new errors are logged unlimited.
const MAX_KEYS: usize = 4096;

/// One `log_limited!` call site (made by the macro).
#[derive(Debug)]
pub struct Site {
    /// `module:line` of the call.
    pub location: &'static str,
    /// The log message.
    pub message: &'static str,
    /// The log level.
    pub level: tracing::Level,
}

/// An error seen within the current interval.
struct Window {
    site: &'static Site,
    key: String,
    started: Instant,
    suppressed: u64,
}

/// Counts repeats of each (site, key) and says which to log.
pub struct Limiter {
    interval: Duration,
    windows: Mutex<HashMap<u64, Window>>,
}

/// What the background flush found: a held-back count nobody has reported yet.
#[derive(Debug, PartialEq, Eq)]
pub struct Leftover {
    /// Where it was logged from.
    pub location: &'static str,
    /// Its message.
    pub message: &'static str,
    /// Its level.
    pub level: tracing::Level,
    /// Its key, as text.
    pub key: String,
    /// Repeats held back and not reported.
    pub suppressed: u64,
}

impl Limiter {
    /// A limiter letting each error through once per `interval` (zero: always).
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Time between two lines of the same error.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Decides on one event at `site` with `key`, at time `now`: `Some(n)` to log it,
    /// `n` being the repeats held back since the last line; `None` to hold it back.
    pub fn admit<K: Hash + fmt::Debug + ?Sized>(
        &self,
        site: &'static Site,
        key: &K,
        now: Instant,
    ) -> Option<u64> {
        if self.interval.is_zero() {
            return Some(0);
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (site as *const Site as usize).hash(&mut h);
        key.hash(&mut h);
        let id = h.finish();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let full = windows.len() >= MAX_KEYS;
        match windows.get_mut(&id) {
            Some(w) if now.saturating_duration_since(w.started) >= self.interval => {
                w.started = now;
                Some(std::mem::take(&mut w.suppressed))
            }
            Some(w) => {
                w.suppressed += 1;
                None
            }
            None if full => Some(0),
            None => {
                windows.insert(
                    id,
                    Window {
                        site,
                        key: format!("{key:?}"),
                        started: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }

    /// Forgets errors whose interval ended before `now` and returns those that still had
    /// repeats to report.
    pub fn flush(&self, now: Instant) -> Vec<Leftover> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        windows.retain(|_, w| {
            if now.saturating_duration_since(w.started) < self.interval {
                return true;
            }
            if w.suppressed > 0 {
                out.push(Leftover {
                    location: w.site.location,
                    message: w.site.message,
                    level: w.site.level,
                    key: std::mem::take(&mut w.key),
                    suppressed: w.suppressed,
                });
            }
            false
        });
        out
    }

    /// Errors currently tracked.
    pub fn tracked(&self) -> usize {
        self.windows.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The process-wide limiter behind [`log_limited!`](crate::log_limited).
pub fn global() -> &'static Limiter {
    static GLOBAL: OnceLock<Limiter> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let interval = match std::env::var("CAIRN_LOG_REPEAT_INTERVAL") {
            Ok(v) => crate::daemon::parse_duration(&v).unwrap_or_else(|e| {
                eprintln!("CAIRN_LOG_REPEAT_INTERVAL: {e}; using 10s");
                DEFAULT_INTERVAL
            }),
            Err(_) => DEFAULT_INTERVAL,
        };
        Limiter::new(interval)
    })
}

/// Asks the process-wide limiter about one event (what [`log_limited!`](crate::log_limited)
/// calls); starts the thread reporting leftover counts on first use.
pub fn admit_global<K: Hash + fmt::Debug + ?Sized>(site: &'static Site, key: &K) -> Option<u64> {
    let limiter = global();
    let verdict = limiter.admit(site, key, Instant::now());
    if verdict.is_none() {
        start_flusher(limiter);
    }
    verdict
}

fn start_flusher(limiter: &'static Limiter) {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let every = limiter.interval().max(Duration::from_millis(100));
        let spawned = std::thread::Builder::new()
            .name("log-limit".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                for l in limiter.flush(Instant::now()) {
                    log_leftover(&l);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the thread reporting suppressed log lines");
        }
    });
}

fn log_leftover(l: &Leftover) {
    let msg = format_args!("{} (repeats suppressed)", l.message);
    let (site, key, n) = (l.location, l.key.as_str(), l.suppressed);
    match l.level {
        tracing::Level::ERROR => tracing::error!(site, key, suppressed = n, "{msg}"),
        tracing::Level::WARN => tracing::warn!(site, key, suppressed = n, "{msg}"),
        tracing::Level::INFO => tracing::info!(site, key, suppressed = n, "{msg}"),
        tracing::Level::DEBUG => tracing::debug!(site, key, suppressed = n, "{msg}"),
        _ => tracing::trace!(site, key, suppressed = n, "{msg}"),
    }
}

/// Logs like `tracing::<level>!` but at most once per interval per call site and `key`,
/// adding `suppressed = <repeats held back>`: `log_limited!(warn, key = node; fields, "msg")`.
/// The message must be a string literal without format arguments; `key` anything
/// `Hash + Debug` (use `()` for "any event at this site").
#[macro_export]
macro_rules! log_limited {
    ($level:ident, key = $key:expr; $($field:tt)*) => {
        $crate::__log_limited_impl!($level, $key, [] $($field)*)
    };
}

/// Splits the fields from the trailing message literal (implementation of `log_limited!`).
#[doc(hidden)]
#[macro_export]
macro_rules! __log_limited_impl {
    ($level:ident, $key:expr, [$($field:tt)*] $msg:literal) => {{
        static SITE: $crate::log_limit::Site = $crate::log_limit::Site {
            location: concat!(module_path!(), ":", line!()),
            message: $msg,
            level: $crate::__level!($level),
        };
        if let Some(n) = $crate::log_limit::admit_global(&SITE, &$key) {
            $crate::__tracing::$level!($($field)* suppressed = n, $msg);
        }
    }};
    ($level:ident, $key:expr, [$($field:tt)*] $next:tt $($rest:tt)*) => {
        $crate::__log_limited_impl!($level, $key, [$($field)* $next] $($rest)*)
    };
}

/// `warn` → `tracing::Level::WARN` (implementation of `log_limited!`).
#[doc(hidden)]
#[macro_export]
macro_rules! __level {
    (error) => {
        $crate::__tracing::Level::ERROR
    };
    (warn) => {
        $crate::__tracing::Level::WARN
    };
    (info) => {
        $crate::__tracing::Level::INFO
    };
    (debug) => {
        $crate::__tracing::Level::DEBUG
    };
    (trace) => {
        $crate::__tracing::Level::TRACE
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    static A: Site = Site {
        location: "test:1",
        message: "a failed",
        level: tracing::Level::WARN,
    };
    static B: Site = Site {
        location: "test:2",
        message: "b failed",
        level: tracing::Level::ERROR,
    };

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn repeats_within_the_interval_are_held_back_and_counted() {
        let l = Limiter::new(10 * SEC);
        let t = Instant::now();
        assert_eq!(l.admit(&A, "n1", t), Some(0));
        for i in 1..=5 {
            assert_eq!(l.admit(&A, "n1", t + i * SEC), None);
        }
        // The first line after the interval reports the five held back, then counting restarts.
        assert_eq!(l.admit(&A, "n1", t + 10 * SEC), Some(5));
        assert_eq!(l.admit(&A, "n1", t + 11 * SEC), None);
        assert_eq!(l.admit(&A, "n1", t + 20 * SEC), Some(1));
        assert_eq!(l.admit(&A, "n1", t + 31 * SEC), Some(0));
    }

    #[test]
    fn sites_and_keys_are_limited_separately() {
        let l = Limiter::new(10 * SEC);
        let t = Instant::now();
        assert_eq!(l.admit(&A, "n1", t), Some(0));
        assert_eq!(l.admit(&A, "n2", t), Some(0));
        assert_eq!(l.admit(&B, "n1", t), Some(0));
        assert_eq!(l.admit(&A, &("n1", 3), t), Some(0));
        assert_eq!(l.admit(&A, "n1", t), None);
        assert_eq!(l.admit(&A, "n2", t), None);
        assert_eq!(l.admit(&B, "n1", t), None);
        assert_eq!(l.tracked(), 4);
    }

    #[test]
    fn flush_reports_leftover_counts_once_and_forgets_ended_windows() {
        let l = Limiter::new(10 * SEC);
        let t = Instant::now();
        l.admit(&A, "n1", t);
        l.admit(&A, "n1", t + SEC);
        l.admit(&A, "n1", t + 2 * SEC);
        l.admit(&B, "n2", t + 5 * SEC);
        assert!(l.flush(t + 9 * SEC).is_empty());
        assert_eq!(
            l.flush(t + 10 * SEC),
            vec![Leftover {
                location: "test:1",
                message: "a failed",
                level: tracing::Level::WARN,
                key: "\"n1\"".into(),
                suppressed: 2,
            }]
        );
        assert_eq!(l.tracked(), 1);
        // B had nothing held back: forgotten without a report.
        assert!(l.flush(t + 15 * SEC).is_empty());
        assert_eq!(l.tracked(), 0);
        // After a flush the error counts as new again.
        assert_eq!(l.admit(&A, "n1", t + 16 * SEC), Some(0));
    }

    #[test]
    fn zero_interval_lets_everything_through() {
        let l = Limiter::new(Duration::ZERO);
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.admit(&A, "n1", t), Some(0));
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn keys_beyond_the_cap_are_logged_not_tracked() {
        let l = Limiter::new(10 * SEC);
        let t = Instant::now();
        for i in 0..MAX_KEYS {
            assert_eq!(l.admit(&A, &i, t), Some(0));
        }
        assert_eq!(l.admit(&A, &MAX_KEYS, t), Some(0));
        assert_eq!(l.admit(&A, &MAX_KEYS, t), Some(0));
        assert_eq!(l.tracked(), MAX_KEYS);
    }

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_macro_logs_once_per_interval_per_key_with_the_count_field() {
        let out = Captured::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..5 {
                let node = if i < 4 { "n1" } else { "n2" };
                log_limited!(warn, key = node; %node, attempt = i, "macro test failed");
            }
            log_limited!(error, key = (); "macro test without fields");
        });
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        if global().interval().is_zero() {
            assert_eq!(lines.len(), 6, "{text}");
            return;
        }
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains(r#""node":"n1""#) && lines[0].contains(r#""attempt":0"#));
        assert!(lines[1].contains(r#""node":"n2""#) && lines[1].contains(r#""attempt":4"#));
        assert!(lines[2].contains("macro test without fields") && lines[2].contains("ERROR"));
        assert!(
            lines.iter().all(|l| l.contains(r#""suppressed":0"#)),
            "{text}"
        );
    }
}
