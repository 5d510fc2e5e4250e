//! The clients a user saves and restores checkpoints with, each run as the user would run
//! it (default settings), as a child process in the coordinator's namespace.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::ClientKind;

/// boto3's `upload_file` / `download_file` with the default `TransferConfig`; prints the
/// seconds of the call alone (a training script has boto3 imported already).
const BOTO3_SCRIPT: &str = r#"
import os, sys, time, boto3
op, bucket, key, path = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
t = time.monotonic()
if op == "save":
    s3.upload_file(path, bucket, key)
else:
    s3.download_file(bucket, key, path)
print(time.monotonic() - t)
"#;

/// Where and as whom the clients connect.
pub struct ClientEnv {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    /// The `cairn` binary.
    pub cairn: PathBuf,
    /// Scratch directory: scripts, the AWS config, logs.
    pub dir: PathBuf,
}

impl ClientEnv {
    /// Writes the boto3 script and an AWS config that names only the region, so no
    /// user profile or credentials file is read.
    pub fn prepare(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        std::fs::write(self.dir.join("boto3_transfer.py"), BOTO3_SCRIPT)
            .context("writing the boto3 script")?;
        std::fs::write(
            self.dir.join("aws-config"),
            "[default]\nregion = us-east-1\n",
        )
        .context("writing the AWS config")?;
        Ok(())
    }

    fn command(&self, argv: &[String], log: &Path) -> Result<tokio::process::Command> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file")?;
        let aws_config = self.dir.join("aws-config");
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(err)
            .kill_on_drop(true)
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_CONFIG_FILE", &aws_config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &aws_config)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_PAGER", "");
        for v in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "AWS_PROFILE",
        ] {
            cmd.env_remove(v);
        }
        drop(out);
        Ok(cmd)
    }

    /// Runs `argv`; returns its wall seconds and stdout. Fails with its log's tail.
    async fn timed(&self, argv: &[String], log: &Path) -> Result<(f64, String)> {
        let mut cmd = self.command(argv, log)?;
        let t = Instant::now();
        let out = cmd
            .output()
            .await
            .with_context(|| format!("running {}", argv[0]))?;
        let wall = t.elapsed().as_secs_f64();
        if !out.status.success() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} failed ({}):\n{}{}{}",
                argv.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail.join("\n")
            );
        }
        Ok((wall, String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// Saves `src` with `kind` under a name of its own; the seconds it took.
    pub async fn save(&self, kind: ClientKind, src: &Path) -> Result<f64> {
        let src_s = src.to_string_lossy().into_owned();
        let log = self.dir.join(format!("{}-save.log", kind.name()));
        match kind {
            ClientKind::Boto3 => {
                let argv = self.boto3_argv("save", &src_s);
                let (_, out) = self.timed(&argv, &log).await?;
                parse_seconds(&out)
            }
            ClientKind::Cairn => {
                let argv = vec![
                    self.cairn.to_string_lossy().into_owned(),
                    "push".into(),
                    "-q".into(),
                    "--name".into(),
                    "ckpt".into(),
                    "--step".into(),
                    "1".into(),
                    src_s,
                    format!("s3://{}/cairn", self.bucket),
                ];
                Ok(self.timed(&argv, &log).await?.0)
            }
            ClientKind::Awscli => {
                let argv = vec![
                    "aws".into(),
                    "s3".into(),
                    "cp".into(),
                    "--only-show-errors".into(),
                    src_s,
                    format!("s3://{}/{}", self.bucket, self.key(kind)),
                ];
                Ok(self.timed(&argv, &log).await?.0)
            }
        }
    }

    /// Restores what [`save`](Self::save) stored with `kind` into the new directory
    /// `dest`; the seconds it took and the restored file.
    pub async fn restore(
        &self,
        kind: ClientKind,
        dest: &Path,
        tag: &str,
    ) -> Result<(f64, PathBuf)> {
        std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
        let log = self.dir.join(format!("{}-restore-{tag}.log", kind.name()));
        let file = dest.join(FILE_NAME);
        let file_s = file.to_string_lossy().into_owned();
        match kind {
            ClientKind::Boto3 => {
                let argv = self.boto3_argv("restore", &file_s);
                let (_, out) = self.timed(&argv, &log).await?;
                Ok((parse_seconds(&out)?, file))
            }
            ClientKind::Cairn => {
                let into = dest.join("pulled");
                let argv = vec![
                    self.cairn.to_string_lossy().into_owned(),
                    "pull".into(),
                    "-q".into(),
                    "--name".into(),
                    "ckpt".into(),
                    format!("s3://{}/cairn", self.bucket),
                    into.to_string_lossy().into_owned(),
                ];
                let (secs, _) = self.timed(&argv, &log).await?;
                let found = find_file(&into, FILE_NAME)?.with_context(|| {
                    format!("cairn pull wrote no {FILE_NAME} under {}", into.display())
                })?;
                Ok((secs, found))
            }
            ClientKind::Awscli => {
                let argv = vec![
                    "aws".into(),
                    "s3".into(),
                    "cp".into(),
                    "--only-show-errors".into(),
                    format!("s3://{}/{}", self.bucket, self.key(kind)),
                    file_s,
                ];
                Ok((self.timed(&argv, &log).await?.0, file))
            }
        }
    }

    fn key(&self, kind: ClientKind) -> String {
        format!("{}/{FILE_NAME}", kind.name())
    }

    fn boto3_argv(&self, op: &str, path: &str) -> Vec<String> {
        vec![
            "python3".into(),
            self.dir
                .join("boto3_transfer.py")
                .to_string_lossy()
                .into_owned(),
            op.into(),
            self.bucket.clone(),
            self.key(ClientKind::Boto3),
            path.into(),
        ]
    }
}

/// The checkpoint's file name.
pub const FILE_NAME: &str = "model.safetensors";

fn parse_seconds(out: &str) -> Result<f64> {
    out.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("the boto3 script printed {out:?}, not its seconds"))
}

/// The first file named `name` under `dir` (depth first).
fn find_file(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e.context("listing a directory")?.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, name)? {
                return Ok(Some(f));
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Ok(Some(p));
        }
    }
    Ok(None)
}
