//! HTTP over loopback, as the tests speak it to rsupd's `/metrics` endpoint
//! and to Prometheus: one request per fresh connection, the whole reply read,
//! every exchange bounded in time; and loopback ports nobody listens on.
//!
//! Invariant: requests are HTTP/1.0, so a reply's body is never chunked and
//! ends with the connection; no call waits longer than 20 s.

use std::net::SocketAddr;
use std::time::Duration;

/// A loopback address nothing listens on right now (the kernel's pick).
pub fn free_loopback_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr")
}

/// What [`http_get_reply`] got: the status code, the header block (status
/// line included) and the body.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// `GET http://ADDR/PATH` over a fresh HTTP/1.0 connection (so the body is
/// never chunked), bounded by 20 s; returns the whole reply, or why not.
pub async fn http_get_reply(addr: SocketAddr, path: &str) -> Result<HttpReply, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        Ok::<_, String>(String::from_utf8_lossy(&raw).into_owned())
    };
    let raw = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| format!("GET {path} from {addr} timed out"))??;
    parse_reply(&raw)
}

/// A whole HTTP/1.x reply (read to the end of its connection) split into
/// status, head and body.
pub fn parse_reply(raw: &str) -> Result<HttpReply, String> {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {raw:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok(HttpReply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// [`http_get_reply`] reduced to the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let reply = http_get_reply(addr, path).await?;
    Ok((reply.status, reply.body))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
