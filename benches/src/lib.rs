//! Building blocks shared by the `cairn-bench` and `cairn-torture` binaries: a real
//! cluster on loopback, an S3 client, per-process CPU and memory readings (`/proc` on
//! Linux, `proc_pid_rusage` on macOS) and the bench's source file.

pub mod cluster;
pub mod procfs;
pub mod s3ops;
pub mod source;
