//! `rsupctl ps`: list containers, newest first, as a Docker-style table, one
//! JSON object per line, or ids only.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, ValueEnum};
use rsup_client::Client;
use rsup_client::proto::Container;
use serde_json::{Value, json};

use crate::{format, time};

/// List containers (only running ones unless --all)
#[derive(Args)]
pub struct Ps {
    /// Show every container, not only running ones
    #[arg(short, long)]
    all: bool,

    /// Only print container ids
    #[arg(short, long)]
    quiet: bool,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Aligned columns with a header
    Table,
    /// One JSON object per container and line
    Json,
}

impl Ps {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let mut containers = client.list(self.all).await?;
        containers.sort_by(|a, b| {
            let key = |c: &Container| c.created_at.map(|t| (t.seconds, t.nanos));
            key(b).cmp(&key(a))
        });
        let text = if self.quiet {
            containers
                .iter()
                .map(|c| format!("{}\n", format::short_id(&c.id)))
                .collect()
        } else {
            match self.format {
                Format::Table => table(&containers, SystemTime::now()),
                Format::Json => containers
                    .iter()
                    .map(|c| format!("{}\n", json_line(c)))
                    .collect(),
            }
        };
        io::stdout().lock().write_all(text.as_bytes())?;
        Ok(ExitCode::SUCCESS)
    }
}

fn table(containers: &[Container], now: SystemTime) -> String {
    let header = ["CONTAINER ID", "NAME", "COMMAND", "CREATED", "STATUS"];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    rows.extend(containers.iter().map(|c| {
        vec![
            format::short_id(&c.id).to_owned(),
            c.name.clone(),
            format::quoted_command(&format::command_line(c), format::COMMAND_WIDTH),
            time::ago(c.created_at.as_ref(), now),
            format::status(c, now),
        ]
    }));
    format::table(&rows)
}

/// `--format json`: exit_code is null until the container has exited once,
/// health ("starting", "healthy", "unhealthy") null without a health check
/// or while the container is not running, quarantine_reason null unless the
/// container is quarantined (state "unknown").
fn json_line(c: &Container) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "state": format::state_name(c.state()),
        "command": format::command_line(c),
        "exit_code": c.exit.as_ref().map(|e| e.exit_code),
        "pid": c.pid,
        "health": c.health.as_ref().map(|h| h.status.as_str()),
        "quarantine_reason": (!c.quarantine_reason.is_empty()).then_some(c.quarantine_reason.as_str()),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prost_types::Timestamp;
    use rsup_client::proto::{ContainerSpec, ContainerState, ExitStatus, Health};

    use super::*;

    fn web(now: u64) -> Container {
        let mut c = Container {
            id: "f00dfeedcafe0123456789".to_owned(),
            name: "web".to_owned(),
            spec: Some(ContainerSpec {
                command: vec!["sleep".to_owned(), "100".to_owned()],
                ..Default::default()
            }),
            pid: 42,
            created_at: Some(Timestamp {
                seconds: i64::try_from(now).expect("small") - 5,
                nanos: 0,
            }),
            started_at: Some(Timestamp {
                seconds: i64::try_from(now).expect("small") - 3,
                nanos: 0,
            }),
            ..Default::default()
        };
        c.set_state(ContainerState::Running);
        c
    }

    #[test]
    fn table_has_docker_columns() {
        let now = 1_700_000_000;
        let text = table(
            &[web(now)],
            SystemTime::UNIX_EPOCH + Duration::from_secs(now),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "CONTAINER ID   NAME   COMMAND       CREATED         STATUS",
                "f00dfeedcafe   web    \"sleep 100\"   5 seconds ago   Up 3 seconds",
            ]
        );
    }

    #[test]
    fn json_lines_have_fixed_keys() {
        let mut c = web(1_700_000_000);
        assert_eq!(
            json_line(&c),
            json!({"id": "f00dfeedcafe0123456789", "name": "web", "state": "running",
                   "command": "sleep 100", "exit_code": null, "pid": 42, "health": null,
                   "quarantine_reason": null})
        );
        c.health = Some(Health {
            status: "healthy".to_owned(),
            ..Default::default()
        });
        assert_eq!(json_line(&c)["health"], "healthy");
        c.set_state(ContainerState::Exited);
        c.exit = Some(ExitStatus {
            exit_code: 3,
            ..Default::default()
        });
        c.pid = 0;
        c.health = None;
        let line = json_line(&c);
        assert_eq!(line["state"], "exited");
        assert_eq!(line["exit_code"], 3);
        assert_eq!(line["health"], Value::Null);
        c.set_state(ContainerState::Unknown);
        c.quarantine_reason = "state.json is unreadable (EOF)".to_owned();
        let line = json_line(&c);
        assert_eq!(line["state"], "unknown");
        assert_eq!(line["quarantine_reason"], "state.json is unreadable (EOF)");
    }

    #[test]
    fn table_status_shows_health() {
        let now = 1_700_000_000;
        let mut c = web(now);
        c.health = Some(Health {
            status: "starting".to_owned(),
            ..Default::default()
        });
        let text = table(&[c], SystemTime::UNIX_EPOCH + Duration::from_secs(now));
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.ends_with("Up 3 seconds (health: starting)")),
            "{text}"
        );
    }
}
