//! Container logs: CRI-format lines in `container.log`, `logs --tail`,
//! `logs -f` streaming live output (through `rsupctl` and the library), and
//! size-based rotation keeping a bounded number of files.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rsup_client::proto::{self, LogStream};
use rsup_tests::{Daemon, KillOnDrop, describe, eventually, stdout, unique_name};

/// Prints `tick<n>` every 200 ms, forever.
const TICKER: &str = "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.2; done";
/// Enough time to receive lines that were not yet written when following began.
const LIVE_SPAN: Duration = Duration::from_millis(400);

/// Splits a CRI log line `<RFC3339Nano> <stream> <F|P> <text>`.
fn parse_cri(line: &str) -> (&str, &str, &str, &str) {
    let mut parts = line.splitn(4, ' ');
    let mut next = || {
        parts
            .next()
            .unwrap_or_else(|| panic!("not a CRI log line: {line:?}"))
    };
    let (time, stream, tag) = (next(), next(), next());
    let text = parts.next().unwrap_or("");
    assert!(
        time.len() >= 20
            && time.as_bytes()[10] == b'T'
            && (time.ends_with('Z') || time.contains('+')),
        "not an RFC 3339 time in {line:?}"
    );
    assert!(
        ["stdout", "stderr"].contains(&stream),
        "bad stream in {line:?}"
    );
    assert!(["F", "P"].contains(&tag), "bad tag in {line:?}");
    (time, stream, tag, text)
}

async fn log_path(d: &Daemon, name: &str) -> PathBuf {
    let c = d.client().inspect(name).await.expect("inspect");
    assert!(!c.log_path.is_empty(), "no log path: {c:?}");
    let path = PathBuf::from(&c.log_path);
    assert!(
        path.starts_with(d.container_dir(&c.id)),
        "log {} is not in the container's state dir",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_tail_returns_the_last_lines() {
    let d = Daemon::start().await;
    let name = unique_name("tail");
    let out = d.run(
        &["--name", &name],
        &["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let all = d.ctl_ok(["logs", &name]);
    assert_eq!(all, "line1\nline2\nline3\nline4\nline5\n");
    let tail = d.ctl_ok(["logs", "--tail", "2", &name]);
    assert_eq!(tail, "line4\nline5\n");
    let stamped = d.ctl_ok(["logs", "-t", "--tail", "1", &name]);
    assert!(
        stamped.trim_end().ends_with("line5") && stamped.trim_end() != "line5",
        "logs -t printed no timestamp: {stamped:?}"
    );

    let mut stream = d.client().logs(&name, false, Some(2)).await.expect("logs");
    let mut lines = Vec::new();
    while let Some(entry) = stream.message().await.expect("log entry") {
        assert_eq!(entry.stream, LogStream::Stdout as i32, "{entry:?}");
        lines.push(String::from_utf8_lossy(&entry.line).into_owned());
    }
    assert_eq!(lines, ["line4", "line5"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn log_file_is_in_cri_format() {
    let d = Daemon::start().await;
    let name = unique_name("cri");
    let out = d.run(
        &["--name", &name],
        &["sh", "-c", "echo out1; echo err1 >&2"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let path = log_path(&d, &name).await;
    let text = fs::read_to_string(&path).expect("read container.log");
    assert_eq!(
        path.file_name().and_then(|f| f.to_str()),
        Some("container.log")
    );
    let lines: Vec<(&str, &str, &str, &str)> = text.lines().map(parse_cri).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.1 == "stdout" && l.2 == "F" && l.3 == "out1"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.1 == "stderr" && l.2 == "F" && l.3 == "err1"),
        "{text}"
    );
}

/// Checks that `received` (arrival time, line) are consecutive ticks that
/// arrived over at least [`LIVE_SPAN`].
fn assert_live_ticks(received: &[(Instant, String)]) {
    let ticks: Vec<u64> = received
        .iter()
        .map(|(_, l)| {
            l.strip_prefix("tick")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?}"))
        })
        .collect();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "lines lost or repeated: {ticks:?}"
    );
}

fn live_enough(received: &[(Instant, String)]) -> bool {
    received.len() >= 4
        && received
            .last()
            .zip(received.first())
            .is_some_and(|(last, first)| last.0.duration_since(first.0) >= LIVE_SPAN)
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_follow_streams_live_output() {
    let d = Daemon::start().await;
    let name = unique_name("follow");
    let out = d.run(&["-d", "--name", &name], &["sh", "-c", TICKER]);
    assert!(out.status.success(), "{}", describe(&out));

    let mut cmd = d.ctl_command();
    cmd.args(["logs", "-f", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut follower = KillOnDrop(cmd.spawn().expect("spawn rsupctl logs -f"));
    let pipe = follower.0.stdout.take().expect("stdout pipe");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut received = Vec::new();
    while !live_enough(&received) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => received.push(line),
            Err(e) => panic!("logs -f: {e} after {:?}", received),
        }
    }
    assert_live_ticks(&received);
    assert!(
        matches!(follower.0.try_wait(), Ok(None)),
        "logs -f exited while the container still runs"
    );
    drop(follower);

    // The library: the same, as a stream.
    let mut stream = d
        .client()
        .logs(&name, true, None)
        .await
        .expect("logs follow");
    let mut received = Vec::new();
    while !live_enough(&received) {
        let entry = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .unwrap_or_else(|_| panic!("no log entry within 5 s after {received:?}"))
            .expect("log entry")
            .unwrap_or_else(|| panic!("follow stream ended after {received:?}"));
        received.push((
            Instant::now(),
            String::from_utf8_lossy(&entry.line).into_owned(),
        ));
    }
    assert_live_ticks(&received);
}

/// Files in `dir` whose name starts with `container.log`, with their sizes.
fn log_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = fs::read_dir(dir)
        .expect("read container dir")
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_str()?.to_owned();
            name.starts_with("container.log")
                .then(|| (name, e.metadata().map(|m| m.len()).unwrap_or(0)))
        })
        .collect();
    files.sort();
    files
}

/// Prints 1000 lines of ~100 bytes (with `PAD` set to 90 characters).
const HUNDRED_KB: &str = "i=0; while [ $i -lt 1000 ]; do echo \"line-$i-$PAD\"; i=$((i+1)); done";

#[tokio::test(flavor = "multi_thread")]
async fn logs_rotate_at_the_size_limit() {
    const MAX: u64 = 4096;
    // One CRI line: ~36 bytes of time, stream and tag, plus the text.
    const SLACK: u64 = 512;
    let d = Daemon::start().await;
    let name = unique_name("rotate");
    let pad = "x".repeat(90);
    let env = format!("PAD={pad}");
    let out = d.run(
        &[
            "-d",
            "--name",
            &name,
            "--log-max-size",
            "4096",
            "--log-max-files",
            "2",
            "-e",
            &env,
        ],
        &["sh", "-c", HUNDRED_KB],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let out = d.ctl(["wait", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let last = format!("line-999-{pad}");
    let path = log_path(&d, &name).await;
    let dir = path.parent().expect("log dir").to_owned();
    eventually(
        "the last line in the log files",
        Duration::from_secs(10),
        async || {
            let text: String = ["container.log.1", "container.log"]
                .iter()
                .filter_map(|f| fs::read_to_string(dir.join(f)).ok())
                .collect();
            if text.lines().any(|l| l.ends_with(&last)) {
                Ok(())
            } else {
                Err(format!("{:?}", log_files(&dir)))
            }
        },
    )
    .await;

    let files = log_files(&dir);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["container.log", "container.log.1"], "{files:?}");
    for (file, size) in &files {
        assert!(*size <= MAX + SLACK, "{file} is {size} bytes, limit {MAX}");
        let text = fs::read_to_string(dir.join(file)).expect("read log");
        text.lines().for_each(|l| {
            parse_cri(l);
        });
    }

    let tail = d.ctl_ok(["logs", "--tail", "1", &name]);
    assert_eq!(tail.trim_end(), last);
    let entries: Vec<proto::LogEntry> = {
        let mut stream = d.client().logs(&name, false, None).await.expect("logs");
        let mut v = Vec::new();
        while let Some(e) = stream.message().await.expect("log entry") {
            v.push(e);
        }
        v
    };
    let kept = entries.len();
    assert!(
        (1..1000).contains(&kept),
        "after rotation to 2 files of {MAX} bytes, {kept} of 1000 lines are kept"
    );
    assert_eq!(
        entries
            .last()
            .map(|e| String::from_utf8_lossy(&e.line).into_owned()),
        Some(last)
    );
}

/// 300 lines of ~100 bytes, 10 lines per 50 ms (~20 KB/s): a follower that
/// reads every 50 ms stays well within the 4 KiB x 2 files it may fall behind
/// by (a reader further behind than the kept files loses lines, as with
/// Docker's json-file and local drivers; see docs/logs.md).
const PACED: &str = "i=0; while [ $i -lt 300 ]; do echo \"line-$i-$PAD\"; i=$((i+1)); [ $((i % 10)) = 0 ] && sleep 0.05; done; true";

#[tokio::test(flavor = "multi_thread")]
async fn run_streams_every_line_while_the_log_rotates() {
    let d = Daemon::start().await;
    let name = unique_name("rotrun");
    let env = format!("PAD={}", "x".repeat(90));
    let out = d.run(
        &[
            "--name",
            &name,
            "--log-max-size",
            "4096",
            "--log-max-files",
            "2",
            "-e",
            &env,
        ],
        &["sh", "-c", PACED],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        describe(&out)
            .lines()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let text = stdout(&out);
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(
        got.len(),
        300,
        "rsupctl run printed {} of 300 lines",
        got.len()
    );
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, l)| l.starts_with(&format!("line-{i}-"))),
        "lines out of order or lost"
    );
}
