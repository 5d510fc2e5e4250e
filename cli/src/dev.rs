//! `cairn dev`: a whole Cairn cluster on this machine, for trying it out and for tests.
//!
//! Starts N storage nodes and one gateway as child processes of this binary (`cairn node`
//! and `cairn gateway`), waits until each is healthy (a node's `/health`, the gateway's
//! `/_cairn/health`), prints the endpoint, the credentials, the admin token and an
//! aws-cli example, and on Ctrl-C (or SIGTERM) stops them all.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

/// Arguments of `cairn dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Address of the S3 endpoint.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Number of storage nodes.
    #[arg(long, default_value_t = 4)]
    pub nodes: u16,
    /// First storage-node port (default: the gateway's port + 1).
    #[arg(long)]
    pub node_port: Option<u16>,
    /// Where the nodes' data and the catalog live.
    #[arg(long, default_value = "./cairn-data")]
    pub data: PathBuf,
    /// Erasure geometry K+M.
    #[arg(long, default_value = "3+1")]
    pub ec: String,
    /// S3 access key.
    #[arg(long, env = "CAIRN_ACCESS_KEY", default_value = "cairn-dev")]
    pub access_key: String,
    /// S3 secret key.
    #[arg(long, env = "CAIRN_SECRET_KEY", default_value = "cairn-dev-secret")]
    pub secret_key: String,
    /// Region reported to clients.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
}

/// A cluster process: what to call it, where it listens.
struct Proc {
    name: String,
    addr: SocketAddr,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The cluster secret of this dev cluster: from the environment, or generated once and
/// kept in the data dir so restarts find their nodes' data readable.
fn cluster_secret(data: &Path) -> anyhow::Result<String> {
    if let Ok(s) = std::env::var("CAIRN_CLUSTER_SECRET") {
        return Ok(s);
    }
    let path = data.join("cluster-secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().to_string());
    }
    let mut buf = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    let secret: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

/// Where a node says it is healthy.
const NODE_HEALTH: &str = "/health";
/// Where the gateway says it is healthy.
const GATEWAY_HEALTH: &str = "/_cairn/health";

fn healthy(addr: &SocketAddr, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}

fn wait_healthy(p: &mut Proc, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = p.child.try_wait() {
            bail!("{} exited during start-up ({status})", p.name);
        }
        if healthy(&p.addr, path) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "{} did not become healthy on {} within {timeout:?}",
        p.name,
        p.addr
    )
}

fn terminate(p: &mut Proc) {
    if let Ok(None) = p.child.try_wait() {
        // SAFETY: kill(2) with our own child's pid has no memory-safety preconditions.
        unsafe {
            libc::kill(p.child.id() as i32, libc::SIGTERM);
        }
    }
}

/// Runs the local cluster until Ctrl-C.
pub fn run(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    let launcher = Launcher {
        secret: cluster_secret(&args.data)?,
        exe: std::env::current_exe().context("finding the cairn binary")?,
        args: &args,
    };
    let mut procs = launcher.start_nodes()?;
    let nodes: Vec<SocketAddr> = procs.iter().map(|p| p.addr).collect();
    procs.push(launcher.start_gateway(&nodes)?);
    // The gateway inherits CAIRN_ADMIN_TOKEN if set; else it derives one from the secret.
    let admin_token = std::env::var("CAIRN_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| cairn_common::auth::ClusterKey::new(&launcher.secret).admin_token());
    print_banner(&args, &admin_token);
    let stopped_by_user = run_until_stopped(&mut procs)?;
    stop(procs);
    if stopped_by_user {
        println!("Cairn stopped.");
        Ok(())
    } else {
        bail!("a cluster process died")
    }
}

/// Starts the cluster's processes: this binary as `cairn node` and `cairn gateway`.
struct Launcher<'a> {
    exe: PathBuf,
    secret: String,
    args: &'a DevArgs,
}

impl Launcher<'_> {
    /// Starts every storage node, then waits until each is healthy.
    fn start_nodes(&self) -> anyhow::Result<Vec<Proc>> {
        let host = self.args.listen.ip();
        let first_port = self
            .args
            .node_port
            .unwrap_or(self.args.listen.port().saturating_add(1));
        let mut nodes = Vec::new();
        for i in 0..self.args.nodes {
            let addr = SocketAddr::new(host, first_port + i);
            let dir = self.args.data.join(format!("node{}", i + 1));
            let child = Command::new(&self.exe)
                .args(["node", "--listen", &addr.to_string(), "--data"])
                .arg(&dir)
                .env("CAIRN_CLUSTER_SECRET", &self.secret)
                .stdin(Stdio::null())
                .spawn()
                .with_context(|| format!("starting node {}", i + 1))?;
            nodes.push(Proc {
                name: format!("node{} ({addr})", i + 1),
                addr,
                child,
            });
        }
        for p in nodes.iter_mut() {
            wait_healthy(p, NODE_HEALTH, Duration::from_secs(20))?;
        }
        Ok(nodes)
    }

    /// Starts the gateway in front of `nodes`, then waits until it is healthy.
    fn start_gateway(&self, nodes: &[SocketAddr]) -> anyhow::Result<Proc> {
        let args = self.args;
        let nodes: Vec<String> = nodes.iter().map(|a| a.to_string()).collect();
        let child = Command::new(&self.exe)
            .args(["gateway", "--listen", &args.listen.to_string(), "--meta"])
            .arg(args.data.join("meta"))
            .args([
                "--nodes",
                &nodes.join(","),
                "--ec",
                &args.ec,
                "--region",
                &args.region,
            ])
            .env("CAIRN_CLUSTER_SECRET", &self.secret)
            .env("CAIRN_ACCESS_KEY", &args.access_key)
            .env("CAIRN_SECRET_KEY", &args.secret_key)
            .stdin(Stdio::null())
            .spawn()
            .context("starting the gateway")?;
        let mut gateway = Proc {
            name: format!("gateway ({})", args.listen),
            addr: args.listen,
            child,
        };
        wait_healthy(&mut gateway, GATEWAY_HEALTH, Duration::from_secs(20))?;
        Ok(gateway)
    }
}

/// Prints the endpoint, the credentials, the admin token and how to try it.
fn print_banner(args: &DevArgs, admin_token: &str) {
    let endpoint = format!("http://{}", args.listen);
    println!(
        "Cairn is running: {} storage nodes, erasure coding {}",
        args.nodes, args.ec
    );
    println!();
    println!("  endpoint    {endpoint}");
    println!("  access key  {}", args.access_key);
    println!("  secret key  {}", args.secret_key);
    println!("  region      {}", args.region);
    println!("  admin token {admin_token}  (Bearer, for {endpoint}/_cairn/metrics, /_cairn/nodes, /_cairn/sd/prometheus)");
    println!("  data        {}", args.data.display());
    println!();
    println!("Try it:");
    println!(
        "  export AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION={}",
        args.access_key, args.secret_key, args.region
    );
    println!("  aws --endpoint-url {endpoint} s3 mb s3://checkpoints");
    println!("  aws --endpoint-url {endpoint} s3 cp ./model.safetensors s3://checkpoints/");
    println!("  curl -H 'Authorization: Bearer {admin_token}' {endpoint}/_cairn/metrics");
    println!();
    println!("Press Ctrl-C to stop.");
    let _ = std::io::stdout().flush();
}

/// Waits for Ctrl-C, SIGTERM, or a cluster process exiting. Returns true when stopped by
/// a signal.
fn run_until_stopped(procs: &mut [Proc]) -> anyhow::Result<bool> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok::<bool, anyhow::Error>(true),
                _ = term.recv() => return Ok(true),
                _ = tick.tick() => {
                    for p in procs.iter_mut() {
                        if let Ok(Some(status)) = p.child.try_wait() {
                            eprintln!("cairn dev: {} exited ({status}); stopping the cluster", p.name);
                            return Ok(false);
                        }
                    }
                }
            }
        }
    })
}

/// Stops every process, the gateway first so no request is in flight when nodes go; whatever
/// has not exited within 10 seconds is killed.
fn stop(mut procs: Vec<Proc>) {
    for p in procs.iter_mut().rev() {
        terminate(p);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for p in procs.iter_mut().rev() {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = p.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(procs); // kills whatever did not stop in time
}
