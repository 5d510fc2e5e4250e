//! Retention: keep the last N committed checkpoints. A checkpoint is removed manifest
//! first (so it stops existing at once), then its data.

use aws_sdk_s3::Client;

use crate::error::Result;
use crate::manifest::{self, Manifest};
use crate::s3client::S3Url;
use crate::state::StateStore;
use crate::sync::delete;

/// Names of the checkpoints to delete so that only the `keep_last` latest remain.
/// `committed` may be in any order; "latest" is by step, then commit time.
pub fn select_for_deletion(committed: &[Manifest], keep_last: usize) -> Vec<String> {
    let mut sorted: Vec<&Manifest> = committed.iter().collect();
    sorted.sort_by_key(|m| m.order_key());
    let n = sorted.len().saturating_sub(keep_last);
    sorted[..n].iter().map(|m| m.name.clone()).collect()
}

/// Applies retention under `url`; marks deleted checkpoints retired in `store`.
/// Returns the names deleted.
pub async fn apply(
    client: &Client,
    url: &S3Url,
    keep_last: usize,
    store: Option<&StateStore>,
) -> Result<Vec<String>> {
    let committed = manifest::list_committed(client, url).await?;
    let doomed = select_for_deletion(&committed, keep_last);
    for name in &doomed {
        if let Some(s) = store {
            s.update(name, |c| c.retired = true)?;
        }
        remove_checkpoint(client, url, name).await?;
        tracing::info!("retention: deleted {name} from {url}");
    }
    Ok(doomed)
}

/// Deletes every manifest generation of `name`, then all its data.
pub async fn remove_checkpoint(client: &Client, url: &S3Url, name: &str) -> Result<()> {
    let mprefix = format!("{}{name}/", manifest::manifests_prefix(url));
    for key in manifest::list_keys(client, &url.bucket, &mprefix).await? {
        delete(client, &url.bucket, &key).await?;
    }
    for key in manifest::list_keys(client, &url.bucket, &manifest::data_prefix(url, name)).await? {
        delete(client, &url.bucket, &key).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Kind;
    use crate::manifest::FileEntry;

    fn m(name: &str, step: Option<u64>, created: &str) -> Manifest {
        let mut m = Manifest::new(
            name,
            step,
            1,
            Kind::HfDir,
            vec![FileEntry {
                path: "a".into(),
                key: "k".into(),
                size: 1,
                sha256: String::new(),
                crc32c: String::new(),
                parts: 1,
            }],
        );
        m.created = created.into();
        m
    }

    #[test]
    fn keeps_latest_by_step_then_time() {
        let list = vec![
            m("checkpoint-30", Some(30), "2026-01-01T00:00:00Z"),
            m("checkpoint-5", Some(5), "2026-01-03T00:00:00Z"),
            m("checkpoint-100", Some(100), "2026-01-02T00:00:00Z"),
            m("final", None, "2026-01-04T00:00:00Z"),
            m("checkpoint-20", Some(20), "2026-01-01T00:00:00Z"),
        ];
        let mut d = select_for_deletion(&list, 2);
        d.sort();
        assert_eq!(d, vec!["checkpoint-20", "checkpoint-5", "final"]);
        assert!(select_for_deletion(&list, 5).is_empty());
        assert!(select_for_deletion(&list, 10).is_empty());
        assert_eq!(select_for_deletion(&list, 0).len(), 5);
        // Same step: the later commit is the latest.
        let same = vec![
            m("b", Some(1), "2026-01-02T00:00:00Z"),
            m("a", Some(1), "2026-01-01T00:00:00Z"),
        ];
        assert_eq!(select_for_deletion(&same, 1), vec!["a"]);
    }
}
