//! The shim's loop while the command runs: the command's stdout and stderr
//! go into `container.log`, line by line, and the init's status pipe says
//! how the command ended.
//!
//! Invariants: the loop ends only once both output streams and the status
//! pipe are closed (the init and every process holding the pipes are gone),
//! so no output is lost; a partial last line is logged as partial.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::time::SystemTime;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::status::{Status, StatusReader};
use crate::logs::{LineSplitter, LogWriter, Stream};
use crate::process::ExitInfo;

/// Copies the command's output into the log until both streams and the
/// status pipe are closed; returns the exit the init reported, if any.
pub(super) fn pump(
    log: &mut LogWriter,
    out_r: OwnedFd,
    err_r: OwnedFd,
    status: &mut StatusReader,
) -> Option<ExitInfo> {
    let mut exit = None;
    let mut note = |lines: Vec<Status>| {
        for s in lines {
            if let Status::Exit { code, signal } = s {
                exit = Some(ExitInfo {
                    code,
                    signal,
                    finished_at: SystemTime::now(),
                });
            }
        }
    };
    note(status.take_pending());
    let mut streams = [
        (
            Some(File::from(out_r)),
            Stream::Stdout,
            LineSplitter::default(),
        ),
        (
            Some(File::from(err_r)),
            Stream::Stderr,
            LineSplitter::default(),
        ),
    ];
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut fds = Vec::new();
        let mut who = Vec::new();
        for (i, (f, _, _)) in streams.iter().enumerate() {
            if let Some(f) = f {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                who.push(i);
            }
        }
        if !status.eof() {
            fds.push(PollFd::new(status.as_fd(), PollFlags::POLLIN));
            who.push(2);
        }
        if fds.is_empty() {
            break;
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<usize> = fds
            .iter()
            .zip(&who)
            .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, &w)| w)
            .collect();
        drop(fds);
        for w in ready {
            if w == 2 {
                note(status.read_available());
                continue;
            }
            let (file, stream, splitter) = &mut streams[w];
            let n = file
                .as_mut()
                .map_or(Ok(0), |f| f.read(&mut chunk))
                .unwrap_or(0);
            let stream = *stream;
            let mut emit = |partial: bool, line: &[u8]| {
                let _ = log.write(stream, partial, line);
            };
            if n == 0 {
                splitter.finish(&mut emit);
                *file = None;
            } else {
                splitter.feed(&chunk[..n], &mut emit);
            }
        }
    }
    exit
}
