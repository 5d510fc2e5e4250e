//! Read leases: which object versions are being read right now, so that the shards of a
//! version replaced by an overwrite, a delete or a repair are removed only once no read
//! in flight still needs them (S3 lets a GET that started before an overwrite finish).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_common::ids::ObjectId;

/// Time a freed version waits before its first check, covering a GET that has looked up
/// the record but not yet taken its lease.
const SETTLE: Duration = Duration::from_secs(1);
/// Polling interval while readers remain.
const POLL: Duration = Duration::from_millis(250);

/// Counts of reads in flight per object version.
#[derive(Clone, Default)]
pub struct ReadLeases {
    readers: Arc<Mutex<HashMap<ObjectId, usize>>>,
}

/// Held by one read; releases its lease when dropped.
pub struct Lease {
    leases: ReadLeases,
    id: ObjectId,
}

impl ReadLeases {
    /// Takes a lease on `id` for the lifetime of the returned guard.
    pub fn acquire(&self, id: ObjectId) -> Lease {
        if let Ok(mut m) = self.readers.lock() {
            *m.entry(id).or_insert(0) += 1;
        }
        Lease {
            leases: self.clone(),
            id,
        }
    }

    fn readers(&self, id: &ObjectId) -> usize {
        self.readers
            .lock()
            .map(|m| m.get(id).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Completes once no read holds a lease on `id` (after a short settle time).
    pub async fn idle(&self, id: &ObjectId) {
        tokio::time::sleep(SETTLE).await;
        while self.readers(id) > 0 {
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut m) = self.leases.readers.lock() {
            if let Some(n) = m.get_mut(&self.id) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_every_lease() {
        let leases = ReadLeases::default();
        let id = ObjectId::random();
        let a = leases.acquire(id);
        let b = leases.acquire(id);
        let waiter = tokio::spawn({
            let leases = leases.clone();
            async move { leases.idle(&id).await }
        });
        tokio::time::sleep(SETTLE + POLL * 2).await;
        assert!(!waiter.is_finished());
        drop(a);
        tokio::time::sleep(POLL * 2).await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(POLL * 4, waiter)
            .await
            .expect("idle after the last lease")
            .expect("join");
        assert_eq!(leases.readers(&id), 0);
    }
}
