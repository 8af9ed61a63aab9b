//! The status pipe from the container's init to the shim.
//!
//! The init (PID 1 inside the container) tells the shim how its setup and
//! its command go, one line of text per event, on a close-on-exec pipe:
//!
//! ```text
//! userns                   in its new user namespace, waiting for its id maps
//! ready                    namespaces and mounts done, waiting for "go"
//! started                  the command runs
//! error MESSAGE            setup failed
//! exec-error CODE MESSAGE  the command could not be run (CODE: Docker's 126
//!                          or 127, 0 for none)
//! exit CODE SIGNAL         the command ended (CODE is 128+SIGNAL when killed)
//! ```
//!
//! Invariants: a line never holds a newline of its own (a message's are made
//! spaces); a line that is none of these reads as an `error` with the whole
//! line as its message.
//!
//! The pipe is not the init's alone: a container with `CAP_SYS_PTRACE` can
//! open `/proc/1/fd/N` and write into it. So the reader is bounded: a line
//! longer than [`MAX_LINE`], or more than [`MAX_LINES`] lines in all (the
//! protocol has at most four), is a protocol violation, after which the
//! reader stops reading (it reports end of file, and the shim takes the
//! command's exit from `waitpid` of the init instead); each byte is looked
//! at once, so a flood costs the shim no more than the container's log does.

use crate::error::Step;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

/// One line on the status pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Userns,
    Ready,
    Started,
    Error(String),
    /// A named step of the setup failed.
    SetupError {
        step: Step,
        message: String,
    },
    ExecError {
        code: i32,
        message: String,
    },
    Exit {
        code: i32,
        signal: i32,
    },
}

impl Status {
    /// The line, without its newline.
    pub fn line(&self) -> String {
        let one_line = |m: &str| m.replace('\n', " ");
        match self {
            Status::Userns => "userns".into(),
            Status::Ready => "ready".into(),
            Status::Started => "started".into(),
            Status::Error(m) => format!("error {}", one_line(m)),
            Status::SetupError { step, message } => {
                format!("setup-error {} {}", step.token(), one_line(message))
            }
            Status::ExecError { code, message } => {
                format!("exec-error {code} {}", one_line(message))
            }
            Status::Exit { code, signal } => format!("exit {code} {signal}"),
        }
    }

    /// Reads a line (without its newline).
    pub fn parse(line: &str) -> Status {
        match line {
            "userns" => return Status::Userns,
            "ready" => return Status::Ready,
            "started" => return Status::Started,
            _ => {}
        }
        if let Some(rest) = line.strip_prefix("setup-error ")
            && let Some((token, message)) = rest.split_once(' ')
            && let Some(step) = Step::from_token(token)
        {
            return Status::SetupError {
                step,
                message: message.to_string(),
            };
        }
        if let Some(rest) = line.strip_prefix("exec-error ") {
            let (code, message) = rest
                .split_once(' ')
                .and_then(|(c, m)| Some((c.parse::<i32>().ok()?, m)))
                .unwrap_or((0, rest));
            return Status::ExecError {
                code,
                message: message.to_string(),
            };
        }
        if line == "exit" || line.starts_with("exit ") {
            let mut it = line.split_whitespace().skip(1);
            let code = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let signal = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            return Status::Exit { code, signal };
        }
        Status::Error(line.strip_prefix("error ").unwrap_or(line).to_string())
    }

    /// Writes the line to the pipe (the init's end).
    pub fn send(&self, to: &mut File) -> std::io::Result<()> {
        writeln!(to, "{}", self.line())
    }
}

/// The longest status line the shim reads (an error message with a path
/// or two; every input it quotes is capped at 200 bytes).
pub const MAX_LINE: usize = 8 * 1024;
/// The most status lines the shim reads from one init (`userns`, `ready`,
/// `started` and one of `exit`/`error`/`exec-error` at most; room to spare).
pub const MAX_LINES: usize = 16;

/// The shim's end of the status pipe.
pub struct StatusReader {
    fd: File,
    /// Bytes of the line being read (never more than [`MAX_LINE`]).
    buf: Vec<u8>,
    eof: bool,
    /// Lines taken so far.
    lines: usize,
    /// Set when the pipe broke the protocol (see the module doc).
    violation: Option<&'static str>,
    pending: Vec<Status>,
}

impl StatusReader {
    pub fn new(fd: File) -> StatusReader {
        StatusReader {
            fd,
            buf: Vec::new(),
            eof: false,
            lines: 0,
            violation: None,
            pending: Vec::new(),
        }
    }

    /// True once the init's end is closed (and everything read), or once
    /// the pipe broke the protocol and is no longer read.
    pub fn eof(&self) -> bool {
        self.eof
    }

    /// Why the reader stopped reading before the end, if it did.
    pub fn violation(&self) -> Option<&'static str> {
        self.violation
    }

    /// Reads what is available (blocking once) and queues the complete
    /// lines.
    fn fill(&mut self) {
        if self.eof {
            return;
        }
        let mut chunk = [0u8; 512];
        let n = match self.fd.read(&mut chunk) {
            Ok(0) | Err(_) => {
                self.eof = true;
                return;
            }
            Ok(n) => n,
        };
        for part in chunk[..n].split_inclusive(|&c| c == b'\n') {
            let (text, complete) = match part.split_last() {
                Some((b'\n', text)) => (text, true),
                _ => (part, false),
            };
            if self.buf.len() + text.len() > MAX_LINE {
                return self.stop("a status line longer than 8 KiB");
            }
            self.buf.extend_from_slice(text);
            if complete {
                if self.lines == MAX_LINES {
                    return self.stop("more status lines than the protocol has");
                }
                self.lines += 1;
                let line = std::mem::take(&mut self.buf);
                self.pending
                    .push(Status::parse(&String::from_utf8_lossy(&line)));
            }
        }
    }

    /// Stops reading: what was queued stays, nothing more is read.
    fn stop(&mut self, why: &'static str) {
        self.violation = Some(why);
        self.eof = true;
        self.buf = Vec::new();
    }

    /// Blocks until one line arrives; `None` at EOF.
    pub fn next(&mut self) -> Option<Status> {
        while self.pending.is_empty() && !self.eof {
            self.fill();
        }
        if self.pending.is_empty() {
            None
        } else {
            Some(self.pending.remove(0))
        }
    }

    /// Reads once (the fd is readable) and returns the lines queued.
    pub fn read_available(&mut self) -> Vec<Status> {
        self.fill();
        self.take_pending()
    }

    /// The lines read but not returned yet.
    pub fn take_pending(&mut self) -> Vec<Status> {
        std::mem::take(&mut self.pending)
    }
}

impl AsFd for StatusReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_as_written() {
        for s in [
            Status::Userns,
            Status::Ready,
            Status::Started,
            Status::Error("mount proc on proc: EPERM: Operation not permitted".into()),
            Status::ExecError {
                code: 127,
                message: "exec: \"x\": executable file not found in $PATH".into(),
            },
            Status::ExecError {
                code: 0,
                message: "setuid: EPERM".into(),
            },
            Status::Exit {
                code: 137,
                signal: 9,
            },
        ] {
            assert_eq!(Status::parse(&s.line()), s, "{}", s.line());
        }
    }

    #[test]
    fn the_wire_format_stays_the_same() {
        assert_eq!(Status::Error("a\nb".into()).line(), "error a b");
        assert_eq!(
            Status::ExecError {
                code: 126,
                message: "x".into()
            }
            .line(),
            "exec-error 126 x"
        );
        assert_eq!(Status::Exit { code: 3, signal: 0 }.line(), "exit 3 0");
        // What the shim has always made of odd lines.
        assert_eq!(
            Status::parse("exec-error oops"),
            Status::ExecError {
                code: 0,
                message: "oops".into()
            }
        );
        assert_eq!(Status::parse("garbage"), Status::Error("garbage".into()));
        assert_eq!(Status::parse("exit"), Status::Exit { code: 0, signal: 0 });
        assert_eq!(Status::parse("exit x"), Status::Exit { code: 0, signal: 0 });
    }

    #[test]
    fn the_reader_splits_lines_across_reads() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let mut w = File::from(w);
        let mut reader = StatusReader::new(File::from(r));
        w.write_all(b"userns\nrea").expect("write");
        assert_eq!(reader.next(), Some(Status::Userns));
        w.write_all(b"dy\nexit 1 0\n").expect("write");
        assert_eq!(reader.next(), Some(Status::Ready));
        assert_eq!(reader.take_pending(), [Status::Exit { code: 1, signal: 0 }]);
        drop(w);
        assert_eq!(reader.next(), None);
        assert!(reader.eof());
        assert_eq!(reader.violation(), None);
    }

    /// What a container that opened `/proc/1/fd/N` could write: one endless
    /// line, or endless short lines. The reader stops at its bounds and
    /// keeps what came before.
    #[test]
    fn a_flood_on_the_pipe_stops_the_reader() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let mut w = File::from(w);
        let mut reader = StatusReader::new(File::from(r));
        w.write_all(b"ready\n").expect("write");
        assert_eq!(reader.next(), Some(Status::Ready));
        let writer = std::thread::spawn(move || {
            // Blocks once the reader stops: ends with EPIPE when it is dropped.
            let _ = w.write_all(&vec![b'x'; 1 << 20]);
        });
        assert_eq!(reader.next(), None);
        assert_eq!(reader.violation(), Some("a status line longer than 8 KiB"));
        drop(reader);
        writer.join().expect("writer");

        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let mut w = File::from(w);
        let mut reader = StatusReader::new(File::from(r));
        let lines = "started\n".repeat(MAX_LINES + 1);
        w.write_all(lines.as_bytes()).expect("write");
        let mut got = 0;
        while reader.next().is_some() {
            got += 1;
        }
        assert_eq!(got, MAX_LINES);
        assert_eq!(
            reader.violation(),
            Some("more status lines than the protocol has")
        );
        // A line of exactly MAX_LINE bytes is still read.
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let mut w = File::from(w);
        let mut reader = StatusReader::new(File::from(r));
        let long = format!("error {}\n", "m".repeat(MAX_LINE - 6));
        let writer = std::thread::spawn(move || w.write_all(long.as_bytes()).expect("write"));
        assert_eq!(reader.next(), Some(Status::Error("m".repeat(MAX_LINE - 6))));
        writer.join().expect("writer");
    }

    #[test]
    fn a_failed_setup_step_crosses_the_pipe_by_name() {
        use crate::error::Step;
        for step in Step::ALL {
            let st = Status::SetupError {
                step,
                message: "mount proc on proc: EPERM\nsecond line".into(),
            };
            let line = st.line();
            assert!(
                line.starts_with(&format!("setup-error {} ", step.token())),
                "{line}"
            );
            assert_eq!(
                Status::parse(&line),
                Status::SetupError {
                    step,
                    message: "mount proc on proc: EPERM second line".into(),
                }
            );
        }
        // A step this build does not know is still an error, whole.
        assert_eq!(
            Status::parse("setup-error warp-drive it broke"),
            Status::Error("setup-error warp-drive it broke".into())
        );
    }
}
