//! An undo stack for operations made of several steps that each take
//! something (an IP lease, a directory, a cgroup, a network namespace, a
//! port): either all of them stay, or none does.
//!
//! After each step that succeeded, the caller pushes the step that undoes
//! it. [`Rollback::commit`] keeps everything; [`Rollback::undo`] runs the
//! undo steps in reverse order, keeps going when one fails and returns every
//! failure (STYLE.md, practice 4). A guard dropped without either (an early
//! `?` return, a panic, or the future of a cancelled request dropped at an
//! `.await`) undoes too: the steps that finish at once (plain file and
//! pool operations) run right there, in order; from the first one that
//! needs to wait (netlink), the rest runs on the runtime's task tracker.
//!
//! Undo steps must be idempotent and treat "already gone" as done: they run
//! at most once, but what they undo may have been removed by someone else.

use std::future::Future;
use std::pin::Pin;

use futures::FutureExt;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// One undo step: what it undoes (for messages) and the work.
type Step = (
    String,
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send>,
);

/// The undo stack of one operation; see the module documentation.
#[must_use = "an unused Rollback undoes its steps at once"]
pub struct Rollback {
    /// The operation, for log messages ("create of web").
    what: String,
    steps: Vec<Step>,
    /// Where undo work that must wait goes when the guard is dropped.
    tracker: Option<TaskTracker>,
}

impl Rollback {
    /// An empty stack for `what`. `tracker` runs what a drop cannot finish
    /// at once; without one (or outside a tokio runtime) such steps are
    /// reported as not done.
    pub fn new(what: impl Into<String>, tracker: Option<TaskTracker>) -> Rollback {
        Rollback {
            what: what.into(),
            steps: Vec::new(),
            tracker,
        }
    }

    /// Pushes a synchronous undo step.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        undo: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) {
        self.steps.push((
            name.into(),
            Box::new(move || Box::pin(async move { undo() })),
        ));
    }

    /// Pushes an undo step that has to wait (netlink, a task).
    pub fn push_async<F>(
        &mut self,
        name: impl Into<String>,
        undo: impl FnOnce() -> F + Send + 'static,
    ) where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.steps
            .push((name.into(), Box::new(move || Box::pin(undo()))));
    }

    /// Number of undo steps pushed.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The operation succeeded: keep everything.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// Undoes every step, last first, and returns the failures as
    /// "STEP: ERROR" (each is logged too).
    pub async fn undo(mut self) -> Vec<String> {
        let steps = std::mem::take(&mut self.steps);
        run_all(&self.what, steps).await
    }
}

/// Runs `steps` in reverse order, collecting failures.
async fn run_all(what: &str, steps: Vec<Step>) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, step) in steps.into_iter().rev() {
        if let Err(e) = step().await {
            warn!(operation = %what, step = %name, error = %e, "undo step failed");
            failures.push(format!("{name}: {e}"));
        }
    }
    failures
}

impl Drop for Rollback {
    fn drop(&mut self) {
        let mut steps = std::mem::take(&mut self.steps);
        // Last first; everything that finishes at once runs here.
        while let Some((name, step)) = steps.pop() {
            let mut fut = step();
            match (&mut fut).now_or_never() {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    warn!(operation = %self.what, step = %name, error = %e, "undo step failed")
                }
                None => {
                    // This one waits: it and the rest (still last first)
                    // go to a task.
                    let what = self.what.clone();
                    let rest = async move {
                        if let Err(e) = fut.await {
                            warn!(operation = %what, step = %name, error = %e, "undo step failed");
                        }
                        run_all(&what, steps).await;
                    };
                    match (&self.tracker, tokio::runtime::Handle::try_current()) {
                        (Some(t), Ok(h)) => {
                            t.spawn_on(rest, &h);
                        }
                        _ => warn!(
                            operation = %self.what,
                            "undo steps left undone: no runtime to run them on"
                        ),
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn log() -> Arc<Mutex<Vec<String>>> {
        Arc::new(Mutex::new(Vec::new()))
    }

    fn record(
        log: &Arc<Mutex<Vec<String>>>,
        s: &str,
    ) -> impl FnOnce() -> Result<(), String> + Send + 'static {
        let log = log.clone();
        let s = s.to_string();
        move || {
            log.lock().expect("lock").push(s);
            Ok(())
        }
    }

    #[tokio::test]
    async fn undo_runs_in_reverse_and_keeps_going() {
        let l = log();
        let mut rb = Rollback::new("test", None);
        rb.push("lease", record(&l, "release"));
        rb.push("dir", || Err("EBUSY".into()));
        rb.push("cgroup", record(&l, "rmdir"));
        let l2 = l.clone();
        rb.push_async("veth", move || async move {
            tokio::task::yield_now().await;
            l2.lock().expect("lock").push("del veth".into());
            Err("ENODEV".into())
        });
        assert_eq!(rb.len(), 4);
        let failures = rb.undo().await;
        assert_eq!(*l.lock().expect("lock"), ["del veth", "rmdir", "release"]);
        assert_eq!(failures, ["veth: ENODEV", "dir: EBUSY"]);
    }

    #[test]
    fn commit_keeps_everything() {
        let l = log();
        let mut rb = Rollback::new("test", None);
        rb.push("a", record(&l, "a"));
        rb.commit();
        assert!(l.lock().expect("lock").is_empty());
    }

    #[test]
    fn drop_undoes_synchronous_steps_at_once() {
        let l = log();
        {
            let mut rb = Rollback::new("test", None);
            rb.push("a", record(&l, "a"));
            rb.push("b", || Err("x".into()));
            rb.push("c", record(&l, "c"));
            // Dropped here, as by an early `?` return.
        }
        assert_eq!(*l.lock().expect("lock"), ["c", "a"]);
    }

    #[test]
    fn drop_on_panic_undoes() {
        let l = log();
        let l2 = l.clone();
        let r = std::panic::catch_unwind(move || {
            let mut rb = Rollback::new("test", None);
            rb.push("a", record(&l2, "a"));
            panic!("step failed");
        });
        assert!(r.is_err());
        assert_eq!(*l.lock().expect("lock"), ["a"]);
    }

    #[tokio::test]
    async fn drop_hands_waiting_steps_to_the_tracker_in_order() {
        let l = log();
        let tracker = TaskTracker::new();
        {
            let mut rb = Rollback::new("test", Some(tracker.clone()));
            rb.push("first", record(&l, "first"));
            let l2 = l.clone();
            rb.push_async("waits", move || async move {
                tokio::task::yield_now().await;
                l2.lock().expect("lock").push("waits".into());
                Ok(())
            });
            rb.push("last", record(&l, "last"));
        }
        // "last" ran in the drop; the rest waits for the task.
        assert_eq!(*l.lock().expect("lock"), ["last"]);
        tracker.close();
        tracker.wait().await;
        assert_eq!(*l.lock().expect("lock"), ["last", "waits", "first"]);
    }

    #[tokio::test]
    async fn a_cancelled_operation_undoes() {
        let l = log();
        let l2 = l.clone();
        let op = async move {
            let mut rb = Rollback::new("test", None);
            rb.push("a", record(&l2, "a"));
            std::future::pending::<()>().await;
            rb.commit();
        };
        // The caller gives up (a client cancelled its request).
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(10), op)
                .await
                .is_err()
        );
        assert_eq!(*l.lock().expect("lock"), ["a"]);
    }
}
