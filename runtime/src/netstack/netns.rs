//! Doing netlink work inside another network namespace.
//!
//! `setns(CLONE_NEWNET)` moves only the calling thread, and a netlink socket
//! stays bound to the namespace it was opened in. So the work runs on a
//! short-lived std thread that enters the namespace, builds a current-thread
//! tokio runtime, opens its own [`Netlink`] there, runs the closure, and
//! exits; the thread that entered the namespace never runs anything else,
//! and no tokio worker ever changes namespace.

use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::NetError;
use super::link::Netlink;
use crate::sys;

/// The body of the worker thread: enter `netns`, connect, run `work`.
fn work_in<T, F, Fut>(netns: OwnedFd, label: &str, work: F) -> Result<T, NetError>
where
    F: FnOnce(Netlink) -> Fut,
    Fut: Future<Output = Result<T, NetError>>,
{
    sys::setns_net(netns.as_fd()).map_err(|source| NetError::Setns {
        netns: label.to_owned(),
        source,
    })?;
    drop(netns);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NetError::Worker {
            netns: label.to_owned(),
            reason: format!("building a tokio runtime: {e}"),
        })?;
    rt.block_on(async move {
        let nl = Netlink::connect().await?;
        work(nl).await
    })
}

/// Starts the worker thread for `netns` (a dup of the caller's fd, so the
/// thread owns it) and hands its result to `done`.
fn spawn_in<T, F, Fut>(
    netns: BorrowedFd<'_>,
    work: F,
    done: impl FnOnce(Result<T, NetError>) + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, NetError>
where
    T: Send + 'static,
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetError>>,
{
    let label = sys::describe_fd(netns);
    let fd = netns.try_clone_to_owned().map_err(|e| NetError::Worker {
        netns: label.clone(),
        reason: format!("duplicating the namespace fd: {e}"),
    })?;
    let thread_label = label.clone();
    std::thread::Builder::new()
        .name("rsup-netns".into())
        .spawn(move || done(work_in(fd, &thread_label, work)))
        .map_err(|e| NetError::Worker {
            netns: label,
            reason: format!("spawning a thread: {e}"),
        })
}

/// Runs `work` with a [`Netlink`] bound to `netns` and waits for it without
/// blocking the async caller.
pub(crate) async fn run_in_netns<T, F, Fut>(netns: BorrowedFd<'_>, work: F) -> Result<T, NetError>
where
    T: Send + 'static,
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetError>>,
{
    let label = sys::describe_fd(netns);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _thread = spawn_in(netns, work, move |r| {
        // The receiver only goes away if the caller was cancelled.
        let _ = tx.send(r);
    })?;
    rx.await.map_err(|_| NetError::Worker {
        netns: label,
        reason: "the thread died without an answer".into(),
    })?
}

/// Like [`run_in_netns`], for callers outside async code (e.g. `Drop`):
/// blocks until the thread is done.
#[cfg(test)]
pub(crate) fn run_in_netns_blocking<T, F, Fut>(
    netns: BorrowedFd<'_>,
    work: F,
) -> Result<T, NetError>
where
    T: Send + 'static,
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetError>>,
{
    let label = sys::describe_fd(netns);
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = spawn_in(netns, work, move |r| {
        let _ = tx.send(r);
    })?;
    let _ = thread.join();
    rx.recv().map_err(|_| NetError::Worker {
        netns: label,
        reason: "the thread died without an answer".into(),
    })?
}
