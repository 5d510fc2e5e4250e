//! A real Cairn cluster on loopback: `cairn-node` and `cairn-gateway` child processes.
//!
//! Children run in their own process group (a terminal Ctrl-C reaches only the bench, which
//! then stops them in order). [`Cluster`]'s `Drop` stops them: SIGTERM, then SIGKILL; it runs
//! when the bench ends, fails, or gets SIGINT/SIGTERM (the binaries drop their `run` future
//! on those signals). On Linux children also get `PR_SET_PDEATHSIG = SIGKILL`, so they die
//! with the bench even if it is killed outright. macOS has no parent-death signal: there
//! only that `Drop` (through the signal handlers) stops them, and a bench killed with
//! SIGKILL leaves its children running (`kill -- -<pid>` of each child's process group).
//! A process can also be SIGKILLed ([`Proc::kill`]) and started again with the same command
//! line, port and data ([`Proc::restart`]), for crash tests.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to start.
pub struct ClusterSpec {
    /// Directory holding `cairn-node` and `cairn-gateway`.
    pub bin_dir: PathBuf,
    /// Where node data, the catalog and the logs go.
    pub work_dir: PathBuf,
    /// Number of storage nodes.
    pub nodes: usize,
    /// Erasure geometry, e.g. `3+1`.
    pub ec: String,
    /// How long each process may take to become healthy (a node's `/health`, the
    /// gateway's `/_cairn/health`).
    pub ready_timeout: Duration,
    /// Extra arguments and environment of node `i` (nodes past the end get none).
    pub node_extra: Vec<Extra>,
    /// Extra arguments and environment of the gateway.
    pub gateway_extra: Extra,
    /// Fixed addresses, data directories and launch commands instead of free loopback
    /// ports and `work_dir/node<i>` (the simulated lab of `cairn-bench pisim`).
    pub layout: Option<Layout>,
}

/// Where each process listens, where node data lives, and what command runs each node.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// The gateway's listen address.
    pub gateway: Option<SocketAddr>,
    /// Node `i` listens on `nodes[i]`.
    pub nodes: Vec<SocketAddr>,
    /// Node `i` keeps its data in `node_data[i]`.
    pub node_data: Vec<PathBuf>,
    /// Node `i` runs as `node_prefix[i] cairn-node ...` (e.g. `ip netns exec ns`), so a
    /// restart goes through the same prefix.
    pub node_prefix: Vec<Vec<String>>,
}

/// `bin` run through `prefix` (the prefix's first word is the program), or `bin` itself.
fn prefixed(prefix: Option<&Vec<String>>, bin: &Path) -> Command {
    match prefix.and_then(|p| p.split_first()) {
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

/// Command-line arguments and environment added to one process's defaults.
#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// Appended after the cluster's own arguments.
    pub args: Vec<String>,
    /// Set in the process's environment.
    pub env: Vec<(String, String)>,
}

impl Extra {
    fn apply(&self, cmd: &mut Command) {
        cmd.args(&self.args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
    }
}

/// One child process and where its output goes.
pub struct Proc {
    /// Short name (`gateway`, `node0`, ...).
    pub name: String,
    /// Address it listens on.
    pub addr: SocketAddr,
    /// Where it says it is healthy.
    health: &'static str,
    log: PathBuf,
    cmd: Command,
    child: Child,
}

impl Proc {
    /// A GET of `path` on the process (a node's `/metrics`, `/health`), with `bearer` as
    /// its token if given: (status, body).
    pub async fn http_get(&self, path: &str, bearer: Option<&str>) -> Result<(u16, String)> {
        http_get(self.addr, path, bearer).await
    }

    /// Whether the process is running (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Process id as a `/proc` path component.
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The last lines of the process's output, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", self.log.display())
    }

    /// Fails (with the log tail) if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited unexpectedly ({status})\n{}",
                self.name,
                self.log_tail(30)
            ),
            Err(e) => bail!("waiting on {}: {e}", self.name),
        }
    }

    /// SIGKILL (no chance to clean up) and reap.
    pub fn kill(&mut self) -> Result<()> {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.child
                .kill()
                .with_context(|| format!("killing {}", self.name))?;
        }
        self.child
            .wait()
            .with_context(|| format!("reaping {}", self.name))?;
        Ok(())
    }

    /// Starts the (exited) process again with the same command line, so the same port and
    /// data, and waits for its `/health`. Retries while the port is still taken.
    pub async fn restart(&mut self, timeout: Duration) -> Result<()> {
        if matches!(self.child.try_wait(), Ok(None)) {
            bail!("{} is still running", self.name);
        }
        let deadline = Instant::now() + timeout;
        loop {
            self.child = self
                .cmd
                .spawn()
                .with_context(|| format!("restarting {}", self.name))?;
            match wait_healthy(self, deadline.saturating_duration_since(Instant::now())).await {
                Ok(()) => return Ok(()),
                Err(e)
                    if Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(None)) =>
                {
                    // exited early, most likely because the port was not free yet
                    eprintln!("{} did not come back ({e:#}); retrying", self.name);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    let _ = self.kill();
                    return Err(e);
                }
            }
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    fn stop(&mut self, grace: Duration) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; it has not been reaped yet (try_wait
            // returned None above), so the pid cannot have been reused.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running cluster. Dropping it stops every process.
pub struct Cluster {
    /// The S3 gateway.
    pub gateway: Proc,
    /// The storage nodes.
    pub nodes: Vec<Proc>,
    /// S3 access key.
    pub access_key: String,
    /// S3 secret key.
    pub secret_key: String,
    /// Data directory of each node (same order as `nodes`).
    pub node_data: Vec<PathBuf>,
    /// Bearer token of the gateway's internal routes (`/_cairn/...`).
    pub admin_token: String,
}

impl Cluster {
    /// Starts the nodes, waits for their `/health`, then starts the gateway and waits until
    /// it is healthy and sees every node up (`cairn_nodes_up` in its `/_cairn/metrics`).
    pub async fn start(spec: &ClusterSpec) -> Result<Self> {
        let node_bin = find_bin(&spec.bin_dir, "cairn-node")?;
        let gw_bin = find_bin(&spec.bin_dir, "cairn-gateway")?;
        let logs = spec.work_dir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let cluster_secret = random_hex(24);
        let access_key = format!("bench-{}", random_hex(6));
        let secret_key = random_hex(20);
        let layout = spec.layout.clone().unwrap_or_default();
        let mut addrs = free_ports(spec.nodes + 1)?;
        if let Some(gw) = layout.gateway {
            addrs[0] = gw;
        }
        for (slot, fixed) in addrs[1..].iter_mut().zip(&layout.nodes) {
            *slot = *fixed;
        }

        let mut nodes = Vec::with_capacity(spec.nodes);
        let mut node_data = Vec::with_capacity(spec.nodes);
        for (i, addr) in addrs[1..].iter().enumerate() {
            let data = match layout.node_data.get(i) {
                Some(d) => d.clone(),
                None => spec.work_dir.join(format!("node{i}")),
            };
            std::fs::create_dir_all(&data)
                .with_context(|| format!("creating {}", data.display()))?;
            let mut cmd = prefixed(layout.node_prefix.get(i), &node_bin);
            cmd.arg("--listen")
                .arg(addr.to_string())
                .arg("--data")
                .arg(&data)
                .env("CAIRN_CLUSTER_SECRET", &cluster_secret);
            if let Some(extra) = spec.node_extra.get(i) {
                extra.apply(&mut cmd);
            }
            nodes.push(spawn(format!("node{i}"), *addr, NODE_HEALTH, cmd, &logs)?);
            node_data.push(data);
        }
        for n in &mut nodes {
            wait_healthy(n, spec.ready_timeout).await?;
        }

        let meta = spec.work_dir.join("meta");
        let node_list: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
        let mut cmd = Command::new(&gw_bin);
        cmd.arg("--listen")
            .arg(addrs[0].to_string())
            .arg("--meta")
            .arg(&meta)
            .arg("--nodes")
            .arg(node_list.join(","))
            .arg("--ec")
            .arg(&spec.ec)
            .env("CAIRN_ACCESS_KEY", &access_key)
            .env("CAIRN_SECRET_KEY", &secret_key)
            .env("CAIRN_CLUSTER_SECRET", &cluster_secret);
        spec.gateway_extra.apply(&mut cmd);
        let gateway = spawn("gateway".into(), addrs[0], GATEWAY_HEALTH, cmd, &logs)?;
        // The gateway's own default unless the caller gave it one.
        let admin_token = spec
            .gateway_extra
            .env
            .iter()
            .find(|(k, _)| k == "CAIRN_ADMIN_TOKEN")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| cairn_common::auth::ClusterKey::new(&cluster_secret).admin_token());
        let mut cluster = Cluster {
            gateway,
            nodes,
            access_key,
            secret_key,
            node_data,
            admin_token,
        };
        wait_healthy(&mut cluster.gateway, spec.ready_timeout).await?;
        cluster.wait_nodes_up(spec.ready_timeout).await?;
        Ok(cluster)
    }

    /// The S3 endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.gateway.addr)
    }

    /// A GET of the gateway's `path` (`/_cairn/metrics`, `/_cairn/nodes`) with the admin
    /// token: (status, body).
    pub async fn gateway_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.gateway.addr, path, Some(&self.admin_token)).await
    }

    /// Fails (with its log) if any process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.gateway.check_alive()?;
        for n in &mut self.nodes {
            n.check_alive()?;
        }
        Ok(())
    }

    /// Polls the gateway's `/_cairn/metrics` until `cairn_nodes_up` equals the node count and no
    /// per-node `cairn_node_up` gauge is 0 (a failed transfer flips that one at once, while
    /// the summary waits for the next heartbeat).
    pub async fn wait_nodes_up(&mut self, timeout: Duration) -> Result<()> {
        let want = self.nodes.len() as f64;
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            self.gateway.check_alive()?;
            if let Ok((200, body)) = self.gateway_get("/_cairn/metrics").await {
                last = body
                    .lines()
                    .find_map(|l| l.strip_prefix("cairn_nodes_up "))
                    .and_then(|v| v.trim().parse::<f64>().ok());
                let any_down = body.lines().any(|l| {
                    l.starts_with("cairn_node_up{")
                        && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(0.0)
                });
                if last == Some(want) && !any_down {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "gateway sees {} of {want} nodes up after {timeout:?} (cairn_nodes_up)\n{}",
                    last.map_or("an unknown number".into(), |v| v.to_string()),
                    self.gateway.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Gateway first, so it does not mark nodes down mid-request and log noise.
        self.gateway.stop(Duration::from_secs(3));
        for n in &mut self.nodes {
            n.stop(Duration::from_secs(3));
        }
    }
}

/// Whether `bin --help` mentions `flag` (e.g. `--capacity`), for options that newer
/// builds have and older ones refuse.
pub fn help_lists(bin: &Path, flag: &str) -> bool {
    let Ok(out) = Command::new(bin)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == ']')
        .any(|w| w == flag)
}

/// The path of binary `name` in `dir`, or an error saying how to build it.
pub fn find_bin(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        bail!(
            "{} not found: build with `cargo build --release --workspace` or set CAIRN_BIN_DIR",
            p.display()
        )
    }
}

fn spawn(
    name: String,
    addr: SocketAddr,
    health: &'static str,
    mut cmd: Command,
    logs: &Path,
) -> Result<Proc> {
    let log = logs.join(format!("{name}.log"));
    let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("opening {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2),
    // which is async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
    Ok(Proc {
        name,
        addr,
        health,
        log,
        cmd,
        child,
    })
}

/// `n` distinct free loopback ports (all held open at once so none repeats).
fn free_ports(n: usize) -> Result<Vec<SocketAddr>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("finding free loopback ports")?;
    listeners
        .iter()
        .map(|l| l.local_addr().context("local_addr"))
        .collect()
}

async fn wait_healthy(p: &mut Proc, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        p.check_alive()?;
        if let Ok((200, _)) = http_get(p.addr, p.health, None).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} at {} not healthy after {timeout:?}\n{}",
                p.name,
                p.addr,
                p.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where a node says it is healthy.
const NODE_HEALTH: &str = "/health";
/// Where the gateway says it is healthy.
const GATEWAY_HEALTH: &str = "/_cairn/health";

/// A plain HTTP/1.0 GET, with `Authorization: Bearer <bearer>` if given: (status, body).
async fn http_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> Result<(u16, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(4 << 20).read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .context("timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// `bytes` random bytes as hex.
pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}
