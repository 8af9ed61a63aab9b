//! `rsupctl logs`: print a container's stdout and stderr lines to our own
//! stdout and stderr, byte for byte, optionally prefixed with Docker's
//! fixed-width RFC 3339 timestamp. Shared with `run`, which follows the logs
//! of the container it started.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Args;
use rsup_client::Client;
use rsup_client::proto::{LogEntry, LogStream};

use crate::time::{self, Fraction};

/// Print the output of a container
#[derive(Args)]
pub struct Logs {
    /// Keep printing new output until the container stops
    #[arg(short, long)]
    follow: bool,

    /// Only the last N lines ("all" for every line)
    #[arg(long, value_name = "N", default_value = "all", value_parser = parse_tail)]
    tail: Tail,

    /// Prefix every line with the time it was written
    #[arg(short, long)]
    timestamps: bool,

    /// Container name or id
    container: String,
}

impl Logs {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        print(
            client,
            &self.container,
            self.follow,
            self.tail.0,
            self.timestamps,
        )
        .await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// `--tail`: a line count, or `None` for all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tail(Option<u64>);

fn parse_tail(value: &str) -> Result<Tail, String> {
    if value == "all" {
        return Ok(Tail(None));
    }
    value
        .parse()
        .map(|n| Tail(Some(n)))
        .map_err(|_| format!("expected a number of lines or \"all\", not {value:?}"))
}

/// Streams a container's log to stdout and stderr until the stream ends.
pub async fn print(
    client: &Client,
    container: &str,
    follow: bool,
    tail: Option<u64>,
    timestamps: bool,
) -> anyhow::Result<()> {
    let stream = client.logs(container, follow, tail).await?;
    print_stream(stream, timestamps).await
}

/// Prints an already opened log stream until it ends.
pub async fn print_stream(
    mut stream: tonic::Streaming<LogEntry>,
    timestamps: bool,
) -> anyhow::Result<()> {
    while let Some(entry) = stream.message().await.map_err(rsup_client::Error::from)? {
        match entry.stream() {
            LogStream::Stderr => write_entry(&mut io::stderr().lock(), &entry, timestamps)?,
            LogStream::Stdout | LogStream::Unspecified => {
                write_entry(&mut io::stdout().lock(), &entry, timestamps)?
            }
        }
    }
    Ok(())
}

/// One entry: `[time ]line[\n]`, flushed so partial lines show up at once.
fn write_entry(out: &mut impl Write, entry: &LogEntry, timestamps: bool) -> io::Result<()> {
    if timestamps {
        write!(
            out,
            "{} ",
            time::rfc3339(entry.time.as_ref(), Fraction::Fixed)
        )?;
    }
    out.write_all(&entry.line)?;
    if !entry.partial {
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    fn entry(line: &[u8], partial: bool) -> LogEntry {
        LogEntry {
            stream: LogStream::Stdout.into(),
            time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            line: line.to_vec(),
            partial,
        }
    }

    #[test]
    fn entries_are_raw_bytes_with_newlines_unless_partial() {
        let mut out = Vec::new();
        write_entry(&mut out, &entry(b"hello \xff", false), false).expect("write");
        write_entry(&mut out, &entry(b"prompt> ", true), false).expect("write");
        assert_eq!(out, b"hello \xff\nprompt> ");
    }

    #[test]
    fn timestamps_prefix_each_entry() {
        let mut out = Vec::new();
        write_entry(&mut out, &entry(b"hi", false), true).expect("write");
        assert_eq!(out, b"2023-11-14T22:13:20.000000005Z hi\n");
    }

    #[test]
    fn tail_is_a_count_or_all() {
        assert_eq!(parse_tail("all"), Ok(Tail(None)));
        assert_eq!(parse_tail("10"), Ok(Tail(Some(10))));
        assert!(parse_tail("-1").is_err());
    }
}
