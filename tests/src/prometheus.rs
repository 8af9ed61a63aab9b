//! A real Prometheus server for the observability tests, scraping a test
//! daemon's `/metrics` and evaluating alerting rules.
//!
//! Invariants: it listens on a free loopback port only, keeps its
//! configuration, storage and log in the test's directory, and is killed (by
//! its own child handle) and reaped when dropped, also when the test panics,
//! after which the end of its log is shown.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use crate::http::{free_loopback_addr, percent_encode};

/// A Prometheus server on loopback, killed (by its own child handle, so by
/// pid) and reaped on drop, also when the test panics; then the last lines
/// of its log are shown.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts `prometheus` scraping `target` (job `rsupd`) every second, and
    /// evaluating `rules` (if any) every second, with its configuration,
    /// storage and log in `dir`.
    pub fn start(dir: &Path, target: SocketAddr, rules: Option<&Path>) -> Prometheus {
        let addr = free_loopback_addr();
        let config = dir.join("prometheus.yml");
        let rule_files = rules
            .map(|r| format!("rule_files:\n  - '{}'\n", r.display()))
            .unwrap_or_default();
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 {rule_files}\
                 scrape_configs:\n  - job_name: rsupd\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .expect("writing prometheus.yml");
        let log = dir.join("prometheus.log");
        let log_file = fs::File::create(&log).expect("creating prometheus.log");
        let log_err = log_file.try_clone().expect("dup prometheus.log");
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("spawning prometheus: {e} (install Debian's `prometheus`; scripts/test.sh does)")
        });
        Prometheus { child, addr, log }
    }

    /// Where its HTTP API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `Some(status)` once the server has exited (reaping it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The path of an instant query of the HTTP API.
    pub fn query_path(query: &str) -> String {
        format!("/api/v1/query?query={}", percent_encode(query))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Our own, not yet reaped child: the pid is still ours.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- prometheus log, last lines ---\n{}\n--- end ---",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}
