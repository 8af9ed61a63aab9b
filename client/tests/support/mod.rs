//! What the tests of the client library and rsupctl share: the scripted
//! fake of rsupd they run against, and rsupctl as a child process.

pub mod fake_daemon;

use std::path::Path;
use std::process::Output;

pub use fake_daemon::{ID, data_volume, serve, tree};

/// Runs rsupctl (the binary of this package) with `RSUP_SOCKET=socket`
/// and `args`; its whole output.
pub async fn rsupctl(socket: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_rsupctl"))
        .env("RSUP_SOCKET", socket)
        .args(args)
        .output()
        .await
        .expect("rsupctl runs")
}

/// Bytes as text, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
