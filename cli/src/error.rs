//! The one error type of the checkpoint commands.
//!
//! Every failure inside `cairn watch/push/pull/ls` is a variant here; `main` prints it as
//! one line. S3 failures are mapped once, in [`s3_error`], so a missing bucket or refused
//! credentials read the same whichever operation hit them.

use std::path::PathBuf;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Errors of the checkpoint commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An `s3://` URL that does not parse.
    #[error("bad S3 URL {url:?}: {reason} (expected s3://BUCKET/PREFIX)")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A command-line value that makes no sense.
    #[error("{0}")]
    BadArg(String),
    /// A local path that does not exist.
    #[error("no such file or directory: {}", .0.display())]
    NoSuchPath(PathBuf),
    /// No credentials could be found the AWS way.
    #[error(
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE ({0})"
    )]
    NoCredentials(String),
    /// The bucket does not exist.
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    /// The endpoint refused the credentials or the request.
    #[error("access denied by the S3 endpoint ({0})")]
    AccessDenied(String),
    /// The endpoint could not be reached at all.
    #[error("cannot reach the S3 endpoint: {0}")]
    Unreachable(String),
    /// Any other S3 failure.
    #[error("{op} {key}: {message}")]
    S3 {
        /// The operation, e.g. `UploadPart`.
        op: &'static str,
        /// The object key (or bucket) it was about.
        key: String,
        /// The SDK's full description.
        message: String,
    },
    /// A local I/O failure.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint that is not finished (one-shot `push` refuses it).
    #[error("checkpoint {name} is not complete: {reason}")]
    Incomplete {
        /// Checkpoint name.
        name: String,
        /// Why it is not complete.
        reason: String,
    },
    /// A file changed while it was uploaded; it will be uploaded again.
    #[error("{} changed while it was being uploaded", .0.display())]
    Changed(PathBuf),
    /// A manifest that cannot be decoded or is unsafe.
    #[error("bad manifest {key}: {reason}")]
    BadManifest {
        /// Object key of the manifest.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Someone else committed a different manifest under the same key.
    #[error("manifest {0} already exists with different content")]
    CommitConflict(String),
    /// No committed checkpoint matches the request.
    #[error("no committed checkpoint {0}")]
    NoCheckpoint(String),
    /// Downloaded or uploaded bytes do not match the recorded checksum.
    #[error("checksum mismatch for {what}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// File or key.
        what: String,
        /// Recorded value.
        expected: String,
        /// Computed value.
        actual: String,
    },
    /// The destination of a pull already exists.
    #[error("{} already exists", .0.display())]
    DestExists(PathBuf),
    /// The watcher's state file is unreadable.
    #[error("state file {}: {reason}", path.display())]
    State {
        /// Path of the state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True for failures that retrying cannot fix (bad input, missing bucket, bad credentials).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::BadUrl { .. }
                | Error::BadArg(_)
                | Error::NoCredentials(_)
                | Error::NoSuchBucket(_)
                | Error::AccessDenied(_)
        )
    }
}

/// The first line of an SDK description, without its debug dump, bounded in length.
fn short(s: &str) -> String {
    let s = s.split(" (").next().unwrap_or(s).trim();
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

/// HTTP status of a failed SDK call, if a response arrived.
pub fn http_status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// Maps an SDK failure of operation `op` on `bucket`/`key` to an [`Error`].
pub fn s3_error<E>(
    op: &'static str,
    bucket: &str,
    key: &str,
    err: SdkError<E, HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().map(str::to_owned);
    let status = http_status(&err);
    let message = match (err.code(), err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        _ => short(&DisplayErrorContext(&err).to_string()),
    };
    match (code.as_deref(), status) {
        (Some("NoSuchBucket"), _) => Error::NoSuchBucket(bucket.to_owned()),
        (Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied"), _)
        | (_, Some(403)) => {
            Error::AccessDenied(format!("{op} {bucket}/{key}: {}", code.unwrap_or_default()))
        }
        _ => match err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                Error::Unreachable(format!("{op} {bucket}/{key}: {message}"))
            }
            _ => Error::S3 {
                op,
                key: format!("{bucket}/{key}"),
                message,
            },
        },
    }
}
