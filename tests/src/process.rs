//! Child processes of the tests (`rsupctl`, `ip`, a second `rsupd`...): run
//! to completion with a bound and captured output, shown as text in
//! assertion messages, or killed and reaped when their owner goes away.
//!
//! Invariants: a child is only ever signalled through its own `Child`
//! handle before it has been reaped, so its pid cannot have been reused; no
//! helper here panics on a failure of the child, it returns or reports it.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` with stdin closed and captured output; kills it once `timeout`
/// has passed. Never panics.
pub fn output_with_timeout(cmd: Command, timeout: Duration) -> Result<Output, String> {
    run_bounded(cmd, None, timeout)
}

/// [`output_with_timeout`] with `input` written to the child's stdin (then
/// closed). Never panics.
pub fn output_with_stdin(cmd: Command, input: &[u8], timeout: Duration) -> Result<Output, String> {
    run_bounded(cmd, Some(input.to_vec()), timeout)
}

fn run_bounded(
    mut cmd: Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Output, String> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&data);
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                // Our own, not yet reaped child: its pid cannot have been reused.
                let _ = child.kill();
                let _ = child.wait();
                let out = join_output(stdout);
                let err = join_output(stderr);
                return Err(format!(
                    "{cmd:?} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: join_output(stdout),
        stderr: join_output(stderr),
    })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

fn join_output(handle: std::thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    handle.join().unwrap_or_default()
}

/// stdout of `out` as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of `out` as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Everything about `out`, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

/// A child process killed (by its own handle) and reaped on drop, for
/// long-running `rsupctl logs -f` and the like.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
