//! Server cost of a running process: CPU time (user + system) and peak memory.
//!
//! On Linux both come from `/proc` (`stat` utime + stime, `status` VmHWM). On macOS they
//! come from `proc_pid_rusage(RUSAGE_INFO_V4)`, which reads a live process as `/proc` does:
//! `ri_user_time + ri_system_time` (mach absolute-time units, converted to seconds with
//! `mach_timebase_info`; on Apple Silicon a unit is not a nanosecond) and
//! `ri_lifetime_max_phys_footprint`, the peak physical footprint. macOS has no VmHWM; the
//! footprint is its measure of a process's memory (what Activity Monitor shows), and it
//! counts what RSS counts for these servers (heap, stacks, huge-page-backed buffers).
//!
//! `pid` is a decimal process id, or `"self"` for this process, on both systems.

#[cfg(target_os = "linux")]
pub use linux::{cpu_seconds, peak_rss_bytes};
#[cfg(target_os = "macos")]
pub use macos::{cpu_seconds, peak_rss_bytes};
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub use other::{cpu_seconds, peak_rss_bytes};

#[cfg(target_os = "linux")]
mod linux {
    use anyhow::{bail, Context, Result};

    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `/proc/<pid>/stat` times.
    fn clk_tck() -> f64 {
        // SAFETY: sysconf has no preconditions; it only reads a system constant.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            t as f64
        } else {
            100.0
        }
    }

    /// CPU seconds (user + system, all threads, live and exited) used so far by process `pid`
    /// (`"self"` for this process).
    pub fn cpu_seconds(pid: &str) -> Result<f64> {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_stat_cpu(&stat)
            .map(|ticks| ticks as f64 / clk_tck())
            .with_context(|| format!("parsing {path}"))
    }

    /// utime + stime in clock ticks from the text of `/proc/<pid>/stat` (fields 14 and 15;
    /// the command name in field 2 may hold spaces and parentheses, so count from the last `)`).
    pub(super) fn parse_stat_cpu(stat: &str) -> Result<u64> {
        let Some(close) = stat.rfind(')') else {
            bail!("no ')' in stat line")
        };
        // After ") " comes field 3 (state); utime is field 14, i.e. index 11 from there.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.len() < 13 {
            bail!("stat line too short");
        }
        let utime: u64 = fields[11].parse().context("utime")?;
        let stime: u64 = fields[12].parse().context("stime")?;
        Ok(utime + stime)
    }

    /// Peak resident set size (`VmHWM`) of process `pid`, in bytes.
    pub fn peak_rss_bytes(pid: &str) -> Result<u64> {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status_kib(&status, "VmHWM:")
            .map(|kib| kib * 1024)
            .with_context(|| format!("no VmHWM in {path}"))
    }

    /// The value in kB of a `Name:   123 kB` line of `/proc/<pid>/status`.
    pub(super) fn status_kib(status: &str, name: &str) -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    }
}

#[cfg(target_os = "macos")]
mod macos {
    use std::sync::OnceLock;

    use anyhow::{Context, Result};

    /// The process's `rusage_info_v4` (a live process, ours or a child we have not reaped).
    fn rusage(pid: &str) -> Result<libc::rusage_info_v4> {
        let pid: libc::c_int = if pid == "self" {
            // SAFETY: getpid has no preconditions.
            unsafe { libc::getpid() }
        } else {
            pid.parse().with_context(|| format!("bad pid {pid:?}"))?
        };
        // SAFETY: rusage_info_v4 is plain integers, so all-zero is a valid value.
        let mut info: libc::rusage_info_v4 = unsafe { std::mem::zeroed() };
        // SAFETY: the buffer is a rusage_info_v4, the struct the RUSAGE_INFO_V4 flavor
        // writes; the libc binding types it as a pointer to `rusage_info_t`.
        let rc = unsafe {
            libc::proc_pid_rusage(
                pid,
                libc::RUSAGE_INFO_V4,
                (&mut info as *mut libc::rusage_info_v4).cast::<libc::rusage_info_t>(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("proc_pid_rusage({pid})"));
        }
        Ok(info)
    }

    /// Nanoseconds per mach absolute-time unit (1 on Intel, 125/3 on Apple Silicon).
    // libc marks its mach bindings deprecated in favour of the `mach2` crate; this one call
    // and its two-field struct are a stable ABI, not worth a dependency.
    #[allow(deprecated)]
    fn ns_per_tick() -> f64 {
        static RATIO: OnceLock<f64> = OnceLock::new();
        *RATIO.get_or_init(|| {
            let mut tb = libc::mach_timebase_info { numer: 0, denom: 0 };
            // SAFETY: mach_timebase_info only fills the struct it is given.
            let rc = unsafe { libc::mach_timebase_info(&mut tb) };
            if rc == 0 && tb.denom != 0 {
                tb.numer as f64 / tb.denom as f64
            } else {
                1.0
            }
        })
    }

    /// CPU seconds (user + system, all threads) used so far by process `pid` (`"self"` for
    /// this process).
    pub fn cpu_seconds(pid: &str) -> Result<f64> {
        let info = rusage(pid)?;
        let ticks = info.ri_user_time.saturating_add(info.ri_system_time);
        Ok(ticks as f64 * ns_per_tick() / 1e9)
    }

    /// Peak physical footprint of process `pid`, in bytes (macOS's counterpart of VmHWM).
    pub fn peak_rss_bytes(pid: &str) -> Result<u64> {
        Ok(rusage(pid)?.ri_lifetime_max_phys_footprint)
    }
}

/// Elsewhere the figures are unavailable: the benches still run, the cost columns fail.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod other {
    use anyhow::{bail, Result};

    /// Not measured on this system.
    pub fn cpu_seconds(_pid: &str) -> Result<f64> {
        bail!("CPU time of a process is only read on Linux and macOS")
    }

    /// Not measured on this system.
    pub fn peak_rss_bytes(_pid: &str) -> Result<u64> {
        bail!("peak memory of a process is only read on Linux and macOS")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "1234 (cairn (x) y) S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 9 0";
        assert_eq!(linux::parse_stat_cpu(line).ok(), Some(290));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn parses_status_hwm() {
        let s = "Name:\tcairn-node\nVmPeak:\t  100 kB\nVmHWM:\t   20480 kB\n";
        assert_eq!(linux::status_kib(s, "VmHWM:"), Some(20480));
    }

    #[test]
    fn reads_own_process() {
        assert!(cpu_seconds("self").is_ok());
        assert!(peak_rss_bytes("self").map(|b| b > 0).unwrap_or(false));
    }
}
