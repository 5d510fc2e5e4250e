//! The simulated lab: network namespaces on a bridge with shaped links, node cgroups with a
//! CPU quota, and one throttled loop-device filesystem per node. [`Lab`]'s `Drop` removes
//! all of it; [`Lab::build`] first removes what a crashed run left.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{DiskProfile, NetProfile};

/// Prefix of every namespace this bench creates (and removes at start and exit).
const NS_PREFIX: &str = "pisim-";
/// The namespace holding the bridge (the switch).
const SWITCH_NS: &str = "pisim-sw";
/// The coordinator's namespace: gateway, clients and this bench.
pub const COORD_NS: &str = "pisim-coord";
/// Name of this bench's cgroup under each controller's root.
const CGROUP_NAME: &str = "cairn-pisim";
/// The gateway's S3 port.
pub const GATEWAY_PORT: u16 = 9000;
/// Each node's port.
pub const NODE_PORT: u16 = 7000;

/// The coordinator's address.
pub fn coord_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 1)
}

/// Node `i`'s address.
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 11 + i as u8)
}

/// Node `i`'s namespace.
pub fn node_ns(i: usize) -> String {
    format!("pisim-n{i}")
}

/// Which cgroup hierarchy the box has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cgroups {
    /// v1: `cpu` and `blkio` mounted separately under /sys/fs/cgroup.
    V1,
    /// v2: one unified hierarchy at /sys/fs/cgroup.
    V2,
}

impl Cgroups {
    /// v2 if /sys/fs/cgroup is the unified hierarchy, else v1 if `cpu` and `blkio` are
    /// mounted.
    pub fn detect() -> Result<Self> {
        if Path::new("/sys/fs/cgroup/cgroup.controllers").is_file() {
            Ok(Self::V2)
        } else if Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").is_file()
            && Path::new("/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device").is_file()
        {
            Ok(Self::V1)
        } else {
            bail!("neither cgroup v2 nor the v1 cpu and blkio controllers are mounted under /sys/fs/cgroup")
        }
    }

    /// The bench's parent cgroup of the CPU controller.
    fn cpu_parent(self) -> PathBuf {
        match self {
            Self::V1 => PathBuf::from("/sys/fs/cgroup/cpu").join(CGROUP_NAME),
            Self::V2 => PathBuf::from("/sys/fs/cgroup").join(CGROUP_NAME),
        }
    }
}

/// CFS period of the node cgroups, in microseconds.
const PERIOD_US: u64 = 100_000;

/// Limits cgroup `cg` to `cores` of CPU.
pub fn set_quota(cgroups: Cgroups, cg: &Path, cores: f64) -> Result<()> {
    let quota = ((cores * PERIOD_US as f64).round() as u64).max(1000);
    match cgroups {
        Cgroups::V1 => {
            write(cg.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(cg.join("cpu.cfs_quota_us"), &quota.to_string())
        }
        Cgroups::V2 => write(cg.join("cpu.max"), &format!("{quota} {PERIOD_US}")),
    }
}

/// Cgroup `cg`'s current quota, as [`restore_quota`] takes it back.
pub fn quota_setting(cgroups: Cgroups, cg: &Path) -> Result<String> {
    let file = match cgroups {
        Cgroups::V1 => cg.join("cpu.cfs_quota_us"),
        Cgroups::V2 => cg.join("cpu.max"),
    };
    Ok(fs::read_to_string(&file)
        .with_context(|| format!("reading {}", file.display()))?
        .trim()
        .to_string())
}

/// Puts back a quota read with [`quota_setting`].
pub fn restore_quota(cgroups: Cgroups, cg: &Path, setting: &str) -> Result<()> {
    match cgroups {
        Cgroups::V1 => write(cg.join("cpu.cfs_quota_us"), setting),
        Cgroups::V2 => write(cg.join("cpu.max"), setting),
    }
}

/// One storage node's slot in the lab.
pub struct NodeSlot {
    /// Its namespace.
    pub ns: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Its cgroup (CPU quota; on v2 also the io limits).
    pub cgroup: PathBuf,
    /// Its loop device (`/dev/loopN`) and `major:minor`.
    pub loop_dev: String,
    pub dev_no: String,
    /// Mount point of its card.
    pub mount: PathBuf,
    /// Its data directory (on the card).
    pub data: PathBuf,
}

impl NodeSlot {
    /// Command prefix that runs a program in this node's cgroup (and namespace if `net`):
    /// `sh -c 'echo $$ > cgroup.procs; exec "$0" "$@"' [ip netns exec NS]`. The pid stays
    /// the program's (sh and ip exec it), so a restart through the same prefix lands in the
    /// same cgroup.
    pub fn prefix(&self, net: bool) -> Vec<String> {
        let procs = self.cgroup.join("cgroup.procs");
        let mut p = vec![
            "sh".to_string(),
            "-c".to_string(),
            format!("echo $$ > '{}' && exec \"$0\" \"$@\"", procs.display()),
        ];
        if net {
            p.extend(["ip", "netns", "exec", &self.ns].map(String::from));
        }
        p
    }
}

/// Held (flock) by a running lab, so a second run fails instead of removing the first
/// one's namespaces as leftovers.
const LOCK: &str = "/run/lock/cairn-pisim.lock";

/// The lab. Dropping it removes everything it made.
pub struct Lab {
    /// Where card images, mounts and the workload live.
    pub work: PathBuf,
    /// Where the card images are (RAM by default, see [`card_dir`]).
    pub cards: PathBuf,
    pub cgroups: Cgroups,
    pub nodes: Vec<NodeSlot>,
    pub net: NetProfile,
    pub disk: DiskProfile,
    /// The lock file, locked; declared last so it is released after the cleanup.
    _lock: fs::File,
}

impl Lab {
    /// Removes leftovers, then builds the lab for `n` nodes with `card_bytes` cards.
    pub fn build(
        work: &Path,
        cards: &Path,
        n: usize,
        net: NetProfile,
        disk: DiskProfile,
        node_cpu: f64,
        card_bytes: u64,
    ) -> Result<Self> {
        if n == 0 || n > 200 {
            bail!("--nodes must be between 1 and 200");
        }
        let cgroups = Cgroups::detect()?;
        let lock = take_lock()?;
        for tool in ["ip", "tc", "losetup", "mkfs.ext4", "mount", "umount", "dd"] {
            if which(tool).is_none() {
                bail!("{tool} not found in PATH");
            }
        }
        cleanup(work, cards, cgroups);
        for dir in [work, cards] {
            if dir.exists() && fs::read_dir(dir).map_or(true, |mut d| d.next().is_some()) {
                bail!(
                    "{} exists and was not made by cairn-bench pisim; give an empty or new directory",
                    dir.display()
                );
            }
            mkdir(dir)?;
            write(dir.join(MARKER), "cairn-bench pisim directory\n")?;
        }
        // From here on, a failure drops the half-built lab, which removes what was made.
        let mut lab = Lab {
            work: work.to_path_buf(),
            cards: cards.to_path_buf(),
            cgroups,
            nodes: Vec::new(),
            net,
            disk,
            _lock: lock,
        };
        lab.build_net(n)?;
        lab.build_cgroups(n, node_cpu)?;
        for i in 0..n {
            lab.build_card(i, card_bytes)?;
        }
        Ok(lab)
    }

    fn build_net(&mut self, n: usize) -> Result<()> {
        ip(&["netns", "add", SWITCH_NS])?;
        ip(&["-n", SWITCH_NS, "link", "set", "lo", "up"])?;
        ip(&["-n", SWITCH_NS, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", SWITCH_NS, "link", "set", "br0", "up"])?;
        let hosts: Vec<(String, Ipv4Addr)> = std::iter::once((COORD_NS.to_string(), coord_ip()))
            .chain((0..n).map(|i| (node_ns(i), node_ip(i))))
            .collect();
        for (idx, (ns, addr)) in hosts.iter().enumerate() {
            let port = format!("p{idx}");
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", SWITCH_NS, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ])?;
            ip(&["-n", SWITCH_NS, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            // Host to switch (the host's uplink) and switch to host (its downlink).
            self.shape(ns, "eth0")?;
            self.shape(SWITCH_NS, &port)?;
        }
        Ok(())
    }

    /// A token bucket at the profile's rate on `dev`'s egress in `ns`. The bucket holds
    /// 2 ms of traffic (at least 64 KiB, so one GSO segment fits) and the queue 20 ms.
    fn shape(&self, ns: &str, dev: &str) -> Result<()> {
        let burst = (self.net.bits_per_s() / 8 / 500).max(64 * 1024);
        run(
            "tc",
            &[
                "-n",
                ns,
                "qdisc",
                "replace",
                "dev",
                dev,
                "root",
                "tbf",
                "rate",
                self.net.tc_rate(),
                "burst",
                &burst.to_string(),
                "latency",
                "20ms",
            ],
        )
    }

    fn build_cgroups(&mut self, n: usize, node_cpu: f64) -> Result<()> {
        let parent = self.cgroups.cpu_parent();
        mkdir(&parent)?;
        if self.cgroups == Cgroups::V2 {
            write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu +io")?;
            write(parent.join("cgroup.subtree_control"), "+cpu +io")?;
        }
        for i in 0..n {
            let cg = parent.join(format!("node{i}"));
            mkdir(&cg)?;
            if node_cpu > 0.0 {
                set_quota(self.cgroups, &cg, node_cpu)?;
            }
            self.nodes.push(NodeSlot {
                ns: node_ns(i),
                addr: SocketAddr::new(node_ip(i).into(), NODE_PORT),
                cgroup: cg,
                loop_dev: String::new(),
                dev_no: String::new(),
                mount: PathBuf::new(),
                data: PathBuf::new(),
            });
        }
        Ok(())
    }

    /// Node `i`'s card: a sparse image on a loop device, ext4, mounted, throttled.
    fn build_card(&mut self, i: usize, bytes: u64) -> Result<()> {
        let img = self.cards.join(format!("card{i}.img"));
        let f = fs::File::create(&img).with_context(|| format!("creating {}", img.display()))?;
        f.set_len(bytes)
            .with_context(|| format!("sizing {}", img.display()))?;
        drop(f);
        let dev = output("losetup", &["--find", "--show", &path_str(&img)?])?;
        let dev = dev.trim().to_string();
        let slot = &mut self.nodes[i];
        slot.loop_dev = dev.clone();
        let name = dev.trim_start_matches("/dev/");
        slot.dev_no = fs::read_to_string(format!("/sys/block/{name}/dev"))
            .with_context(|| format!("reading the device number of {dev}"))?
            .trim()
            .to_string();
        // Inode tables and journal are written now, not by a background thread that would
        // share the card's throttled bandwidth with the bench.
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                &dev,
            ],
        )?;
        let mnt = self.work.join(format!("mnt{i}"));
        mkdir(&mnt)?;
        run("mount", &["-o", "noatime", &dev, &path_str(&mnt)?])?;
        slot.mount = mnt.clone();
        slot.data = mnt.join("data");
        mkdir(&slot.data)?;
        let (w, r) = self.disk.rates();
        let dev_no = slot.dev_no.clone();
        match self.cgroups {
            // v1 throttles are not hierarchical and buffered writeback (the journal, the
            // page cache) is submitted by kernel threads of the root cgroup: a rule in the
            // root cgroup limits every submitter of this device together, like a card.
            Cgroups::V1 => {
                write(
                    "/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device",
                    &format!("{dev_no} {w}"),
                )?;
                write(
                    "/sys/fs/cgroup/blkio/blkio.throttle.read_bps_device",
                    &format!("{dev_no} {r}"),
                )?;
            }
            // v2 charges writeback to the cgroup that dirtied the pages.
            Cgroups::V2 => write(
                self.nodes[i].cgroup.join("io.max"),
                &format!("{dev_no} rbps={r} wbps={w}"),
            )?,
        }
        Ok(())
    }

    /// Moves this thread (and every thread and child it creates later) into the
    /// coordinator's network namespace.
    pub fn enter_coordinator(&self) -> Result<()> {
        let path = format!("/var/run/netns/{COORD_NS}");
        let f = fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) on a namespace file we hold open; it changes only this thread's
        // network namespace.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("setns into the coordinator");
        }
        Ok(())
    }

    /// The gateway's address.
    pub fn gateway_addr(&self) -> SocketAddr {
        SocketAddr::new(coord_ip().into(), GATEWAY_PORT)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        cleanup(&self.work, &self.cards, self.cgroups);
    }
}

fn take_lock() -> Result<fs::File> {
    use std::os::fd::AsRawFd;
    if let Some(dir) = Path::new(LOCK).parent() {
        mkdir(dir)?;
    }
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .with_context(|| format!("opening {LOCK}"))?;
    // SAFETY: flock(2) on a descriptor we own; the lock goes with the file.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!("another cairn-bench pisim is running (it holds {LOCK})");
    }
    Ok(f)
}

/// Removes everything a run makes, whether it finished or crashed: processes left in the
/// bench's cgroups or namespaces, the namespaces, mounts under `work`, the throttle rules
/// and loop devices of card images under `cards`, the cgroups, and `work` and `cards`
/// themselves. Best effort: what fails is reported and the rest still goes.
pub fn cleanup(work: &Path, cards: &Path, cgroups: Cgroups) {
    let parent = cgroups.cpu_parent();
    // Processes in the bench's own cgroups were started by a run of this bench.
    if let Ok(entries) = fs::read_dir(&parent) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                kill_all(&fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default());
            }
        }
    }
    if let Ok(list) = output("ip", &["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if !ns.starts_with(NS_PREFIX) {
                continue;
            }
            if let Ok(pids) = output("ip", &["netns", "pids", ns]) {
                kill_all(&pids);
            }
            warn(ip(&["netns", "del", ns]));
        }
    }
    if let Ok(mounts) = fs::read_to_string("/proc/mounts") {
        for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
            if Path::new(m).starts_with(work) && run("umount", &[m]).is_err() {
                warn(run("umount", &["-l", m]));
            }
        }
    }
    if let Ok(loops) = output("losetup", &["-l", "-n", "-O", "NAME,MAJ:MIN,BACK-FILE"]) {
        for l in loops.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [name, dev_no, back, ..] = f[..] else {
                continue;
            };
            if !Path::new(back).starts_with(cards) {
                continue;
            }
            if cgroups == Cgroups::V1 {
                for which in ["write", "read"] {
                    warn(write(
                        format!("/sys/fs/cgroup/blkio/blkio.throttle.{which}_bps_device"),
                        &format!("{dev_no} 0"),
                    ));
                }
            }
            warn(run("losetup", &["-d", name]));
        }
    }
    if let Ok(entries) = fs::read_dir(&parent) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                warn(
                    fs::remove_dir(e.path())
                        .with_context(|| format!("removing {}", e.path().display())),
                );
            }
        }
    }
    if parent.is_dir() {
        warn(fs::remove_dir(&parent).with_context(|| format!("removing {}", parent.display())));
    }
    // Only a directory this bench made (it holds the marker) is removed.
    for dir in [work, cards] {
        if dir.join(MARKER).is_file() {
            warn(fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display())));
        }
    }
}

/// File that marks a work directory as made by this bench.
const MARKER: &str = ".cairn-pisim";

/// SIGKILLs every pid in `pids` but this process.
fn kill_all(pids: &str) {
    let me = std::process::id() as i32;
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|p| *p != me)
    {
        // SAFETY: kill(2) with a pid read from this bench's own cgroup or namespace.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    if !pids.trim().is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn warn(r: Result<()>) {
    if let Err(e) = r {
        eprintln!("pisim cleanup: {e:#}");
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/sbin", "/usr/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn path_str(p: &Path) -> Result<String> {
    p.to_str()
        .map(String::from)
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

fn mkdir(p: &Path) -> Result<()> {
    fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

/// Writes `value` to a control file (cgroup, sysfs).
pub fn write(path: impl AsRef<Path>, value: &str) -> Result<()> {
    let path = path.as_ref();
    fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

/// Runs `prog args`; fails with its stderr if it exits non-zero.
pub fn run(prog: &str, args: &[&str]) -> Result<()> {
    output(prog, args).map(|_| ())
}

/// Runs `prog args` and returns its stdout; fails with its stderr if it exits non-zero.
pub fn output(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        bail!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
