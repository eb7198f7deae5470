//! Test support shared by every crate's tests (feature `testing`): [`eventually`], the one
//! bounded wait for a condition that no event reports (stored state seen over HTTP, a child
//! process, a broker). Background paths of a node report [`Event`](crate::signals::Event)s;
//! a test waits for those instead where it can.

use std::future::Future;
use std::time::{Duration, Instant};

/// Re-checks `probe` until it returns `Some`, and returns that; panics naming `what` (and the
/// last value seen, as `probe` may record it) once `timeout` has passed. Between checks it
/// yields for a short, growing pause (1 ms doubling to 50 ms), so a condition that holds early is
/// seen early and a slow one costs little.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn eventually_returns_the_first_value_that_holds() {
        let calls = AtomicU32::new(0);
        let calls = &calls;
        let got = eventually("the third call", Duration::from_secs(5), move || async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (n == 3).then_some(n)
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 20ms waiting for never")]
    async fn eventually_names_what_it_waited_for_on_timeout() {
        eventually("never", Duration::from_millis(20), || async { None::<()> }).await;
    }
}
