//! Direct measurements of every limit of the lab, before any figure is trusted: each card's
//! O_DIRECT write and read rate (dd inside the node's cgroup), each link's TCP payload rate
//! in both directions (a Python sender and receiver between namespaces), and each node's
//! CPU quota (busy loops in its cgroup).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::lab::{self, Lab, NodeSlot, COORD_NS};

/// Largest accepted deviation of a measured rate from its limit.
const TOLERANCE: f64 = 0.20;

/// One measured limit.
pub struct Check {
    pub what: String,
    pub expected: f64,
    pub measured: f64,
    pub unit: &'static str,
    /// Whether the measurement confirms the limit applies.
    pub ok: bool,
    pub note: String,
}

/// Measures every limit; the caller prints them and stops on a failed one.
pub fn run_all(lab: &Lab, node_cpu: f64, seconds: f64) -> Result<Vec<Check>> {
    let mut out = disks(lab, seconds)?;
    out.extend(network(lab, seconds)?);
    if node_cpu > 0.0 {
        out.extend(cpu(lab, node_cpu, seconds)?);
    }
    Ok(out)
}

/// The checks as a table.
pub fn table(checks: &[Check]) -> String {
    let mut s =
        String::from("\n  limit check                          expected   measured   ratio\n");
    for c in checks {
        let _ = writeln!(
            s,
            "  {:<34} {:>8.2} {:>10.2}   {:>5.2} {:<4} {} {}",
            c.what,
            c.expected,
            c.measured,
            c.measured / c.expected,
            c.unit,
            if c.ok { "ok" } else { "FAILED" },
            c.note
        );
    }
    s
}

fn rate_check(what: String, expected: f64, measured: f64) -> Check {
    let ratio = measured / expected;
    Check {
        what,
        expected: expected / 1e6,
        measured: measured / 1e6,
        unit: "MB/s",
        ok: (1.0 - TOLERANCE..=1.0 + TOLERANCE).contains(&ratio),
        note: String::new(),
    }
}

/// Each card, all at once (they are separate devices): an O_DIRECT write of about
/// `seconds` at the card's write rate, then an O_DIRECT read of that file, each by dd in
/// the node's cgroup.
fn disks(lab: &Lab, seconds: f64) -> Result<Vec<Check>> {
    let (w, r) = lab.disk.rates();
    let mib = ((w.max(r) as f64 * seconds) / (1 << 20) as f64).ceil() as u64;
    let bytes = mib << 20;
    let files: Vec<String> = lab
        .nodes
        .iter()
        .map(|n| {
            n.mount
                .join("pisim-check.bin")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // `dd` in each node's cgroup and namespace, with the arguments for its file.
    let dd_each = |args: &dyn Fn(&str) -> Vec<String>| -> Vec<Vec<String>> {
        lab.nodes
            .iter()
            .zip(&files)
            .map(|(n, f)| {
                let mut p = n.prefix(false);
                p.push("dd".into());
                p.extend(args(f));
                p
            })
            .collect()
    };
    let writes = dd_all(dd_each(&|f| {
        vec![
            "if=/dev/zero".into(),
            format!("of={f}"),
            "bs=1M".into(),
            format!("count={mib}"),
            "oflag=direct".into(),
        ]
    }))?;
    let reads = dd_all(dd_each(&|f| {
        vec![
            format!("if={f}"),
            "of=/dev/null".into(),
            "bs=1M".into(),
            "iflag=direct".into(),
        ]
    }))?;
    for f in &files {
        std::fs::remove_file(f).with_context(|| format!("removing {f}"))?;
    }
    let mut out = Vec::new();
    for (i, (tw, tr)) in writes.iter().zip(&reads).enumerate() {
        out.push(rate_check(
            format!("node{i} card write (O_DIRECT)"),
            w as f64,
            bytes as f64 / tw,
        ));
        out.push(rate_check(
            format!("node{i} card read (O_DIRECT)"),
            r as f64,
            bytes as f64 / tr,
        ));
    }
    Ok(out)
}

/// The seconds dd reports for its copy (its last stderr line: `N bytes (...) copied, T s,
/// R MB/s`), which leave out the start of the process.
fn dd_seconds(stderr: &str) -> Result<f64> {
    stderr
        .lines()
        .rev()
        .find_map(|l| {
            let (_, after) = l.split_once("copied, ")?;
            after.split_whitespace().next()?.parse().ok()
        })
        .with_context(|| format!("no timing in dd's output {stderr:?}"))
}

/// Starts every command (dd) at once and returns the seconds each one reports.
fn dd_all(cmds: Vec<Vec<String>>) -> Result<Vec<f64>> {
    timed_all(cmds)?.iter().map(|e| dd_seconds(e)).collect()
}

/// Starts every command at once; each must succeed. Returns each one's stderr.
fn timed_all(cmds: Vec<Vec<String>>) -> Result<Vec<String>> {
    let start = Instant::now();
    let mut children: Vec<(Child, String, Option<String>)> = Vec::new();
    for c in cmds {
        let child = Command::new(&c[0])
            .args(&c[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", c.join(" ")))?;
        children.push((child, c.join(" "), None));
    }
    loop {
        let mut pending = false;
        for (child, cmd, done) in &mut children {
            if done.is_some() {
                continue;
            }
            match child
                .try_wait()
                .with_context(|| format!("waiting on {cmd}"))?
            {
                Some(status) if status.success() => {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        std::io::Read::read_to_string(&mut e, &mut err)
                            .with_context(|| format!("reading the output of {cmd}"))?;
                    }
                    *done = Some(err);
                }
                Some(status) => {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    bail!("{cmd} failed ({status}): {}", err.trim());
                }
                None => pending = true,
            }
        }
        if !pending {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("limit measurement took over 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(children.into_iter().filter_map(|(_, _, d)| d).collect())
}

/// A TCP receiver (`recv PORT`: accepts one connection, prints `bytes seconds` from the
/// first byte to EOF) and sender (`send HOST PORT BYTES`, retrying the connect while the
/// receiver starts).
const NET_SCRIPT: &str = r#"
import socket, sys, time
if sys.argv[1] == "recv":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept(); n = 0; t0 = None; buf = bytearray(1 << 20)
    while True:
        k = c.recv_into(buf)
        if k == 0: break
        if t0 is None: t0 = time.monotonic()
        n += k
    print(n, time.monotonic() - t0, flush=True)
else:
    host, port, total = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    deadline = time.monotonic() + 10
    while True:
        try:
            s = socket.create_connection((host, port)); break
        except OSError:
            if time.monotonic() > deadline: raise
            time.sleep(0.05)
    chunk = bytes(1 << 20); left = total
    while left > 0:
        k = min(left, len(chunk)); s.sendall(chunk[:k]); left -= k
    s.close()
"#;

/// One TCP flow: (from namespace, to namespace, to address).
struct Flow {
    what: String,
    from_ns: String,
    to_ns: String,
    to_ip: String,
}

/// Runs `flows` at once, `bytes` each; returns each flow's receiver-side rate (bytes/s).
fn flows(script: &Path, flows: &[Flow], bytes: u64) -> Result<Vec<f64>> {
    let script = script.to_string_lossy().into_owned();
    let mut receivers = Vec::new();
    for (i, f) in flows.iter().enumerate() {
        let port = (5201 + i).to_string();
        let mut child = in_ns(&f.to_ns, &["python3", "-u", &script, "recv", &port])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the TCP receiver")?;
        // Wait for "ready" so the sender's first connect finds it listening.
        let mut line = String::new();
        if let Some(out) = child.stdout.as_mut() {
            let mut r = std::io::BufReader::new(out);
            std::io::BufRead::read_line(&mut r, &mut line).context("reading the receiver")?;
        }
        receivers.push((child, port));
    }
    let mut senders = Vec::new();
    for (f, (_, port)) in flows.iter().zip(&receivers) {
        let total = bytes.to_string();
        let child = in_ns(
            &f.from_ns,
            &["python3", &script, "send", &f.to_ip, port, &total],
        )
        .stdout(Stdio::null())
        .spawn()
        .context("starting the TCP sender")?;
        senders.push(child);
    }
    for mut s in senders {
        let st = s.wait().context("waiting on the TCP sender")?;
        if !st.success() {
            bail!("TCP sender failed ({st})");
        }
    }
    let mut rates = Vec::new();
    for ((child, _), f) in receivers.into_iter().zip(flows) {
        let out = child
            .wait_with_output()
            .context("waiting on the TCP receiver")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().unwrap_or_default();
        let mut it = last.split_whitespace();
        let (Some(n), Some(t)) = (it.next(), it.next()) else {
            bail!("receiver of {} printed {text:?}", f.what);
        };
        let n: f64 = n.parse().context("receiver byte count")?;
        let t: f64 = t.parse().context("receiver seconds")?;
        if n as u64 != bytes {
            bail!("receiver of {} got {n} of {bytes} bytes", f.what);
        }
        rates.push(n / t.max(1e-9));
    }
    Ok(rates)
}

/// `argv` run in namespace `ns` (this process is already in the coordinator's).
fn in_ns(ns: &str, argv: &[&str]) -> Command {
    let mut cmd = if ns == COORD_NS {
        Command::new(argv[0])
    } else {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, argv[0]]);
        c
    };
    cmd.args(&argv[1..]).stdin(Stdio::null());
    cmd
}

/// The coordinator's uplink (to all nodes at once) and downlink (from all nodes at once),
/// then every node's link with a ring of node-to-node flows (each node sends once and
/// receives once).
fn network(lab: &Lab, seconds: f64) -> Result<Vec<Check>> {
    let script = lab.work.join("pisim-net.py");
    std::fs::write(&script, NET_SCRIPT).context("writing the TCP test script")?;
    let rate = lab.net.payload_bytes_per_s();
    let n = lab.nodes.len();
    let each = (rate * seconds / n as f64) as u64;
    let coord_ip = lab::coord_ip().to_string();
    let up: Vec<Flow> = lab
        .nodes
        .iter()
        .map(|nd| Flow {
            what: format!("coordinator -> {}", nd.ns),
            from_ns: COORD_NS.into(),
            to_ns: nd.ns.clone(),
            to_ip: nd.addr.ip().to_string(),
        })
        .collect();
    let down: Vec<Flow> = lab
        .nodes
        .iter()
        .map(|nd| Flow {
            what: format!("{} -> coordinator", nd.ns),
            from_ns: nd.ns.clone(),
            to_ns: COORD_NS.into(),
            to_ip: coord_ip.clone(),
        })
        .collect();
    let mut out = Vec::new();
    // The coordinator's link is the bottleneck of n parallel flows: their sum is its rate.
    // Each flow is timed from its own first byte, so the sum over-counts a little when
    // flows start apart; the aggregate is total bytes over the longest flow instead.
    for (name, fl) in [
        ("coordinator uplink (TCP)", up),
        ("coordinator downlink (TCP)", down),
    ] {
        let rates = flows(&script, &fl, each)?;
        let slowest = rates.iter().cloned().fold(f64::INFINITY, f64::min);
        out.push(rate_check(
            name.into(),
            rate,
            each as f64 * n as f64 / (each as f64 / slowest),
        ));
    }
    if n >= 2 {
        let ring: Vec<Flow> = (0..n)
            .map(|i| {
                let (a, b) = (&lab.nodes[i], &lab.nodes[(i + 1) % n]);
                Flow {
                    what: format!("{} -> {}", a.ns, b.ns),
                    from_ns: a.ns.clone(),
                    to_ns: b.ns.clone(),
                    to_ip: b.addr.ip().to_string(),
                }
            })
            .collect();
        let rates = flows(&script, &ring, (rate * seconds) as u64)?;
        for (f, r) in ring.iter().zip(rates) {
            out.push(rate_check(format!("link {} (TCP)", f.what), rate, r));
        }
    }
    Ok(out)
}

/// Each node's quota, twice. First a probe quota of a quarter core, which even this
/// shared machine can give: one busy loop in the cgroup must get 0.25 cores (within the
/// tolerance) and be throttled, which shows the quota applies. Then the real quota with
/// one more busy loop than its whole cores: above it by more than the tolerance fails;
/// below it only means the machine had no more to give (a warning).
fn cpu(lab: &Lab, quota: f64, seconds: f64) -> Result<Vec<Check>> {
    const PROBE: f64 = 0.25;
    let mut out = Vec::new();
    for (i, n) in lab.nodes.iter().enumerate() {
        let real = lab::quota_setting(lab.cgroups, &n.cgroup)?;
        lab::set_quota(lab.cgroups, &n.cgroup, PROBE)?;
        let probe = spin(n, 1, seconds);
        lab::restore_quota(lab.cgroups, &n.cgroup, &real)?;
        let (cores, throttled) = probe?;
        let ratio = cores / PROBE;
        out.push(Check {
            what: format!("node{i} CPU probe quota (1 busy loop)"),
            expected: PROBE,
            measured: cores,
            unit: "cores",
            ok: (1.0 - TOLERANCE..=1.0 + TOLERANCE).contains(&ratio) && throttled > 0,
            note: format!("{throttled} periods throttled"),
        });
        let procs = quota.ceil() as usize + 1;
        let (cores, throttled) = spin(n, procs, seconds)?;
        let ratio = cores / quota;
        let mut note = format!("{throttled} periods throttled");
        if ratio < 1.0 - TOLERANCE {
            note.push_str("; below the quota: this shared machine had no more CPU to give");
        }
        out.push(Check {
            what: format!("node{i} CPU quota ({procs} busy loops)"),
            expected: quota,
            measured: cores,
            unit: "cores",
            ok: ratio <= 1.0 + TOLERANCE,
            note,
        });
    }
    Ok(out)
}

/// `procs` busy loops in the node's cgroup for `seconds`: the cores they got and the
/// periods the cgroup was throttled meanwhile.
fn spin(n: &NodeSlot, procs: usize, seconds: f64) -> Result<(f64, u64)> {
    let throttled_before = nr_throttled(&n.cgroup)?;
    let mut spinners = Vec::new();
    let result: Result<f64> = (|| {
        for _ in 0..procs {
            let mut p = n.prefix(false);
            p.extend(["sh".into(), "-c".into(), "while :; do :; done".into()]);
            let child = Command::new(&p[0])
                .args(&p[1..])
                .stdin(Stdio::null())
                .spawn()
                .context("starting a busy loop")?;
            spinners.push(child);
        }
        std::thread::sleep(Duration::from_millis(200));
        let pids: Vec<String> = spinners.iter().map(|c| c.id().to_string()).collect();
        let cpu = |pids: &[String]| -> Result<f64> {
            pids.iter().map(|p| crate::procfs::cpu_seconds(p)).sum()
        };
        let cpu0 = cpu(&pids)?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        let cpu1 = cpu(&pids)?;
        let wall = t0.elapsed().as_secs_f64();
        Ok((cpu1 - cpu0) / wall)
    })();
    for mut c in spinners {
        let _ = c.kill();
        let _ = c.wait();
    }
    let cores = result?;
    Ok((cores, nr_throttled(&n.cgroup)? - throttled_before))
}

/// Periods in which the cgroup's quota stopped it (`nr_throttled` of `cpu.stat`).
fn nr_throttled(path: &Path) -> Result<u64> {
    let stat = std::fs::read_to_string(path.join("cpu.stat"))
        .with_context(|| format!("reading {}/cpu.stat", path.display()))?;
    stat.lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|v| v.trim().parse().ok())
        .context("no nr_throttled in cpu.stat")
}
