//! Waiting without fixed sleeps: a condition is polled every
//! [`POLL_INTERVAL`] until it holds or a bound passes ([`eventually`], and
//! its blocking form for teardown), blocking work is announced to a
//! multi-threaded tokio runtime so that its other tasks keep running
//! ([`blocking`]), and many async jobs run with bounded concurrency
//! ([`concurrently`]).
//!
//! Invariant: every wait here has a bound; none sleeps for a state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Interval between two checks of a polled condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `check` every [`POLL_INTERVAL`] until it returns `Ok`, and panics
/// with `what` and the last `Err` once `timeout` has passed.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last: {last}"
            ),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Blocking form of [`eventually`] for teardown: returns whether `check`
/// became true in time.
pub(crate) fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Runs blocking `f` (a child process, a poll of /proc), telling a
/// multi-threaded tokio runtime first (if this thread is in one) so that its
/// other tasks keep running meanwhile.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Runs `job(i)` for i in 0..n with at most `concurrency` at once; returns
/// the results in index order.
pub async fn concurrently<T, F, Fut>(n: usize, concurrency: usize, job: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1).min(n.max(1)) {
        let job = job.clone();
        let next = next.clone();
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return out;
                }
                out.push((i, job(i).await));
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(part) => all.extend(part),
            Err(e) => eprintln!("warning: worker task failed: {e}"),
        }
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, v)| v).collect()
}
