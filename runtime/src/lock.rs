//! The one way rsupd takes a std mutex: a panic while one was held leaves
//! data that every path here keeps consistent step by step, so the guard is
//! taken over instead of poisoning every later caller.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking it over if a panicking thread held it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
