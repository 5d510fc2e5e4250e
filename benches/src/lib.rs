//! Building blocks shared by the `cairn-bench` and `cairn-torture` binaries: a real
//! cluster on loopback, an S3 client, per-process CPU and memory readings (`/proc` on
//! Linux, `proc_pid_rusage` on macOS), the bench's source file, and the simulated home lab
//! of `cairn-bench pisim`.

pub mod cluster;
pub mod pisim;
pub mod procfs;
pub mod s3ops;
pub mod source;
