// Build information for `--version` and `cairn version`: the git commit the binary was
// built from and the target triple it was built for.
//
// Sets, for the crate being compiled:
// - `CAIRN_BUILD_COMMIT`: the full commit hash, from `CAIRN_BUILD_COMMIT` in the build's
//   environment if set (a build from a source tarball), else `git rev-parse HEAD`, else
//   `unknown` (no git, no `.git`);
// - `CAIRN_BUILD_TARGET`: the target triple (`TARGET`);
// - `CARGO_PKG_VERSION`: the package version followed by the short commit and the target,
//   so clap's `--version` (which reads `CARGO_PKG_VERSION`) prints all three with no change
//   to the argument definitions.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn main() {
    // The storage node and the CLI include this file from their own build scripts.
    println!("cargo:rerun-if-changed=../gateway/build.rs");
    println!("cargo:rerun-if-env-changed=CAIRN_BUILD_COMMIT");

    let commit = match std::env::var("CAIRN_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // A new commit or a checkout moves HEAD or the branch it points to: run again
            // then, so the recorded commit is never a stale one.
            if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                let git_dir = PathBuf::from(git_dir);
                println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
                println!(
                    "cargo:rerun-if-changed={}",
                    git_dir.join("packed-refs").display()
                );
                if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    println!("cargo:rerun-if-changed={}", git_dir.join(branch).display());
                }
            }
            git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let short: String = commit.chars().take(12).collect();

    println!("cargo:rustc-env=CAIRN_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=CAIRN_BUILD_TARGET={target}");
    println!("cargo:rustc-env=CARGO_PKG_VERSION={version} ({short} {target})");
}
