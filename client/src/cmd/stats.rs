//! `rsupctl stats`: resource usage of containers, as `docker stats` shows it:
//! a table redrawn on every sample (once with `--no-stream`), or one JSON
//! object per container and sample.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use rsup_client::Client;
use rsup_client::proto::{ContainerStats, StatsResponse};
use serde_json::{Value, json};

use crate::{format, size};

/// Clears the terminal and moves the cursor home before each redraw.
const CLEAR_SCREEN: &str = "\x1b[2J\x1b[H";

/// Display a live stream of resource usage of containers (running ones unless named)
#[derive(Args)]
pub struct Stats {
    /// Print one sample and exit
    #[arg(long)]
    no_stream: bool,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    /// Container names or ids (default: every running container)
    #[arg(value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Aligned columns with a header
    Table,
    /// One JSON object per container and sample, one per line
    Json,
}

impl Stats {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let mut samples = client.stats(&self.containers, !self.no_stream).await?;
        let redraw = self.format == Format::Table && io::stdout().is_terminal();
        while let Some(sample) = samples.message().await.map_err(rsup_client::Error::from)? {
            let mut text = String::new();
            if redraw {
                text.push_str(CLEAR_SCREEN);
            }
            text.push_str(&render(&sample, self.format));
            let mut out = io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            if self.no_stream {
                break;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn render(sample: &StatsResponse, format: Format) -> String {
    match format {
        Format::Table => table(&sample.stats),
        Format::Json => sample
            .stats
            .iter()
            .map(|s| format!("{}\n", json_line(s)))
            .collect(),
    }
}

fn table(stats: &[ContainerStats]) -> String {
    let header = [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "PIDS",
        "OOM KILLS",
        "RESTARTS",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    rows.extend(stats.iter().map(|s| {
        let limit = match s.memory_limit_bytes {
            0 => "unlimited".to_owned(),
            bytes => size::human(bytes),
        };
        vec![
            format::short_id(&s.id).to_owned(),
            s.name.clone(),
            format!("{:.2}%", s.cpu_percent),
            format!("{} / {limit}", size::human(s.memory_working_set_bytes)),
            format!("{:.2}%", s.memory_percent),
            s.pids.to_string(),
            s.oom_kills.to_string(),
            s.restarts.to_string(),
        ]
    }));
    format::table(&rows)
}

/// `--format json`: the raw numbers, limits 0 when unlimited.
fn json_line(s: &ContainerStats) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "cpu_percent": s.cpu_percent,
        "memory_usage_bytes": s.memory_usage_bytes,
        "memory_working_set_bytes": s.memory_working_set_bytes,
        "memory_limit_bytes": s.memory_limit_bytes,
        "memory_percent": s.memory_percent,
        "pids": s.pids,
        "pids_limit": s.pids_limit,
        "oom_kills": s.oom_kills,
        "restarts": s.restarts,
        "cpu_usage_ns": s.cpu_usage_ns,
        "cpu_throttled_periods": s.cpu_throttled_periods,
        "cpu_periods": s.cpu_periods,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> ContainerStats {
        ContainerStats {
            id: "f00dfeedcafe0123456789".to_owned(),
            name: "web".to_owned(),
            cpu_percent: 12.344,
            cpu_usage_ns: 5_000_000,
            memory_working_set_bytes: 1536 * 1024,
            memory_usage_bytes: 2 << 20,
            memory_limit_bytes: 32 << 20,
            memory_percent: 4.6875,
            pids: 3,
            pids_limit: 100,
            oom_kills: 1,
            restarts: 2,
            cpu_periods: 10,
            cpu_throttled_periods: 4,
            ..Default::default()
        }
    }

    #[test]
    fn table_has_docker_columns() {
        let unlimited = ContainerStats {
            id: "abc".to_owned(),
            name: "db".to_owned(),
            memory_working_set_bytes: 100,
            memory_percent: 0.001,
            ..Default::default()
        };
        let text = table(&[web(), unlimited]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "CONTAINER ID   NAME   CPU %    MEM USAGE / LIMIT   MEM %   PIDS   OOM KILLS   RESTARTS",
                "f00dfeedcafe   web    12.34%   1.5MiB / 32MiB      4.69%   3      1           2",
                "abc            db     0.00%    100B / unlimited    0.00%   0      0           0",
            ]
        );
    }

    #[test]
    fn json_lines_have_fixed_keys() {
        assert_eq!(
            json_line(&web()),
            json!({"id": "f00dfeedcafe0123456789", "name": "web", "cpu_percent": 12.344,
                   "memory_usage_bytes": 2097152, "memory_working_set_bytes": 1572864,
                   "memory_limit_bytes": 33554432, "memory_percent": 4.6875, "pids": 3,
                   "pids_limit": 100, "oom_kills": 1, "restarts": 2, "cpu_usage_ns": 5000000,
                   "cpu_throttled_periods": 4, "cpu_periods": 10})
        );
    }

    #[test]
    fn samples_render_per_format() {
        let sample = StatsResponse {
            stats: vec![web(), web()],
            time: None,
        };
        assert_eq!(render(&sample, Format::Json).lines().count(), 2);
        assert_eq!(render(&sample, Format::Table).lines().count(), 3);
        assert_eq!(render(&StatsResponse::default(), Format::Json), "");
    }
}
