//! Docker's streams: the multiplexed framing of stdout and stderr (an
//! 8-byte header: stream, three zero bytes, the payload's length big-endian),
//! streaming bodies fed from a channel, and the hijacked connections of
//! `attach` and `exec start` (`Upgrade: tcp`, answered with 101 and then
//! raw frames on the connection).

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tracing::debug;

use super::Body;

pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

const RAW_STREAM: &str = "application/vnd.docker.raw-stream";

/// One frame of the multiplexed stream.
pub fn frame(stream: u8, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.push(stream);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A response whose body is what arrives on `rx` (ending when the sender
/// is dropped).
pub fn body_from(rx: mpsc::Receiver<Bytes>, content_type: &'static str) -> Response<Body> {
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
    let mut r = Response::new(BodyExt::boxed(http_body_util::StreamBody::new(stream)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A raw-stream response (logs): the frames sent on `rx`.
pub fn raw_body(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    body_from(rx, RAW_STREAM)
}

/// Answers a hijacking request (`attach`, `exec start`): with `Upgrade:
/// tcp`, 101 and then the frames on the upgraded connection; without it
/// (old clients), 200 and the frames as the body. Either way the stream
/// ends when `rx` does.
pub fn hijack<B: Send + 'static>(req: Request<B>, mut rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let wants_upgrade = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"));
    if !wants_upgrade {
        return raw_body(rx);
    }
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                debug!(error = %e, "docker API: the client did not take the upgraded stream");
                return;
            }
        };
        // The connection is the Docker socket's: taken back from hyper, its
        // hang-up is seen even while `rx` carries nothing (a quiet
        // container's attach, a long exec), so an abandoned hijack does not
        // keep its connection, its log follower and their descriptors.
        match upgraded.downcast::<hyper_util::rt::TokioIo<UnixStream>>() {
            Ok(parts) => until_hangup(parts.io.into_inner(), rx).await,
            Err(upgraded) => {
                let mut io = hyper_util::rt::TokioIo::new(upgraded);
                while let Some(b) = rx.recv().await {
                    if io.write_all(&b).await.is_err() {
                        return;
                    }
                    let _ = io.flush().await;
                }
                let _ = io.shutdown().await;
            }
        }
    });
    let mut r = Response::new(super::full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(RAW_STREAM));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("tcp"));
    r
}

/// How often a hijacked connection with nothing to write is checked for a
/// hang-up.
const HANGUP_CHECK: Duration = Duration::from_secs(1);

/// Writes what arrives on `rx` to the hijacked `io` until `rx` ends, a
/// write fails or the client hangs up.
async fn until_hangup(mut io: UnixStream, mut rx: mpsc::Receiver<Bytes>) {
    let mut tick = tokio::time::interval(HANGUP_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            b = rx.recv() => match b {
                Some(b) => if io.write_all(&b).await.is_err() {
                    return;
                },
                None => break,
            },
            _ = tick.tick() => if hung_up(&io) {
                debug!("docker API: the client of a hijacked stream hung up");
                return;
            },
        }
    }
    let _ = io.shutdown().await;
}

/// True when the client closed its end: `POLLHUP` (or an error) on the
/// socket. Not an EOF: the docker CLI shuts its write side at once when it
/// sends no stdin, and still reads.
fn hung_up(io: &UnixStream) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(io.as_fd(), PollFlags::empty())];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
}

/// A JSON-lines response (events, pull and push progress, stats).
pub fn json_lines(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    body_from(rx, "application/json")
}

/// One JSON value as a line of a JSON-lines stream.
pub fn json_line(v: &serde_json::Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hang_up_is_seen_and_a_half_close_is_not() {
        let (a, b) = UnixStream::pair().expect("pair");
        assert!(!hung_up(&a));
        // The docker CLI's CloseWrite when it sends no stdin.
        let mut b = b;
        b.shutdown().await.expect("shutdown");
        assert!(!hung_up(&a), "a half-close is not a hang-up");
        drop(b);
        assert!(hung_up(&a));
    }

    #[tokio::test]
    async fn an_abandoned_hijack_ends_though_nothing_is_written() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (_tx, rx) = mpsc::channel::<Bytes>(1);
        let task = tokio::spawn(until_hangup(a, rx));
        drop(b);
        tokio::time::timeout(HANGUP_CHECK * 5, task)
            .await
            .expect("it ended")
            .expect("no panic");
    }

    #[test]
    fn frames_carry_stream_and_length() {
        let f = frame(STDERR, b"hello");
        assert_eq!(&f[..8], &[2, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(&f[8..], b"hello");
        assert_eq!(frame(STDOUT, b"").len(), 8);
    }
}
