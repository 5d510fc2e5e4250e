//! Server cost from `/proc`: CPU time (utime + stime) and peak resident set size.

use anyhow::{bail, Context, Result};

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `/proc/<pid>/stat` times.
pub fn clk_tck() -> f64 {
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
fn parse_stat_cpu(stat: &str) -> Result<u64> {
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
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "1234 (cairn (x) y) S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 9 0";
        assert_eq!(parse_stat_cpu(line).ok(), Some(290));
    }

    #[test]
    fn parses_status_hwm() {
        let s = "Name:\tcairn-node\nVmPeak:\t  100 kB\nVmHWM:\t   20480 kB\n";
        assert_eq!(status_kib(s, "VmHWM:"), Some(20480));
    }

    #[test]
    fn reads_own_process() {
        assert!(cpu_seconds("self").is_ok());
        assert!(peak_rss_bytes("self").map(|b| b > 0).unwrap_or(false));
    }
}
