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
use tokio::io::AsyncWriteExt;
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
        let mut io = hyper_util::rt::TokioIo::new(upgraded);
        while let Some(b) = rx.recv().await {
            if io.write_all(&b).await.is_err() {
                return;
            }
            let _ = io.flush().await;
        }
        let _ = io.shutdown().await;
    });
    let mut r = Response::new(super::full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(RAW_STREAM));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("tcp"));
    r
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

    #[test]
    fn frames_carry_stream_and_length() {
        let f = frame(STDERR, b"hello");
        assert_eq!(&f[..8], &[2, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(&f[8..], b"hello");
        assert_eq!(frame(STDOUT, b"").len(), 8);
    }
}
