//! Request ids: one per S3 request, carried to every storage-node call the request causes.
//!
//! The gateway makes an id for each request and runs the request inside [`scope`] and a
//! tracing span that records it. Node calls read [`current`] and send it in [`HEADER`];
//! the node runs the call inside a span holding the same id, so one `grep` over gateway and
//! node logs tells the whole story. A task spawned on behalf of a request keeps the id
//! (and the span) when its future is wrapped in [`propagate`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tracing::Instrument as _;

/// Header carrying the request id from the gateway to a storage node.
pub const HEADER: &str = "x-cairn-request-id";

/// Longest id accepted from a peer.
const MAX_LEN: usize = 64;

/// A request id: 16 upper-case hex digits when made here; up to 64 characters of
/// `[A-Za-z0-9._-]` when received.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// A fresh random id (64 bits, like S3's `x-amz-request-id`).
    pub fn generate() -> Self {
        Self(format!("{:016X}", rand::random::<u64>()).into())
    }

    /// Accepts an id received from a peer, if it is short and plain enough to log as is.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        ok.then(|| Self(s.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}

tokio::task_local! {
    static CURRENT: RequestId;
}

/// The id of the request the current task works for, if any.
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(|id| id.clone()).ok()
}

/// Runs `fut` as part of request `id`.
pub async fn scope<F: Future>(id: RequestId, fut: F) -> F::Output {
    CURRENT.scope(id, fut).await
}

/// Wraps a future about to be spawned so it keeps the current request id and tracing span
/// (`tokio::spawn` starts tasks with neither).
pub fn propagate<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let id = current();
    let fut = fut.instrument(tracing::Span::current());
    async move {
        match id {
            Some(id) => CURRENT.scope(id, fut).await,
            None => fut.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_16_hex_digits_and_parse_back() {
        let a = RequestId::generate();
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, RequestId::generate());
        assert_eq!(RequestId::parse(a.as_str()), Some(a));
    }

    #[test]
    fn parse_refuses_what_should_not_reach_a_log() {
        assert!(RequestId::parse("").is_none());
        assert!(RequestId::parse("a b").is_none());
        assert!(RequestId::parse("x\ny").is_none());
        assert!(RequestId::parse("\"}").is_none());
        assert!(RequestId::parse(&"a".repeat(65)).is_none());
        assert!(RequestId::parse("hb-01.x_Y").is_some());
    }

    #[tokio::test]
    async fn spawned_tasks_keep_the_id_only_when_propagated() {
        let id = RequestId::generate();
        let (kept, lost) = scope(id.clone(), async {
            let kept = tokio::spawn(propagate(async { current() }));
            let lost = tokio::spawn(async { current() });
            (kept.await.expect("join"), lost.await.expect("join"))
        })
        .await;
        assert_eq!(kept, Some(id));
        assert_eq!(lost, None);
        assert_eq!(current(), None);
        assert_eq!(
            tokio::spawn(propagate(async { current() })).await.ok(),
            Some(None)
        );
    }
}
