//! `rsupctl supervisor`: create, list, remove and inspect the Erlang/OTP-style
//! supervisors that containers join with `run --supervisor`.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use rsup_client::Client;
use rsup_client::proto::{CreateSupervisorRequest, Supervisor};
use serde_json::{Value, json};

use super::{Batch, each_name, inspect, say};
use crate::{duration, format};

/// Manage supervisors (trees of restarting containers)
#[derive(Args)]
pub struct Supervisors {
    #[command(subcommand)]
    command: Verb,
}

#[derive(Subcommand)]
enum Verb {
    Create(Create),
    #[command(alias = "list")]
    Ls(Ls),
    #[command(alias = "remove")]
    Rm(Rm),
    Inspect(Inspect),
}

impl Supervisors {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        match self.command {
            Verb::Create(c) => c.execute(client).await,
            Verb::Ls(c) => c.execute(client).await,
            Verb::Rm(c) => c.execute(client).await,
            Verb::Inspect(c) => c.execute(client).await,
        }
    }
}

/// Create a supervisor and print its name
///
/// More than INTENSITY restarts within PERIOD make it stop its children and
/// fail, escalating to its parent (OTP's defaults: 1 in 5s).
#[derive(Args)]
struct Create {
    /// Name of the supervisor (a DNS label)
    #[arg(value_name = "NAME")]
    name: String,

    /// Restart strategy: one_for_one, one_for_all or rest_for_one
    #[arg(long, value_name = "STRATEGY", default_value = "one_for_one")]
    strategy: String,

    /// Restarts allowed within the period
    #[arg(long, value_name = "N", default_value_t = 1)]
    intensity: u32,

    /// Window in which restarts are counted (e.g. 5s, 1m)
    #[arg(
        long,
        value_name = "DUR",
        value_parser = duration::parse,
        default_value = "5s",
        allow_hyphen_values = true
    )]
    period: Duration,

    /// Parent supervisor (default: none, a root)
    #[arg(long, value_name = "NAME")]
    parent: Option<String>,
}

impl Create {
    /// The request, with every value as given: the daemon judges them.
    fn request(self) -> CreateSupervisorRequest {
        CreateSupervisorRequest {
            name: self.name,
            strategy: self.strategy,
            intensity: self.intensity,
            period_ms: duration::millis(self.period),
            parent: self.parent.unwrap_or_default(),
        }
    }

    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let supervisor = client.create_supervisor(self.request()).await?;
        say(supervisor.name)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// List supervisors, in creation order
#[derive(Args)]
struct Ls {}

impl Ls {
    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let supervisors = client.list_supervisors().await?;
        io::stdout()
            .lock()
            .write_all(table(&supervisors).as_bytes())?;
        Ok(ExitCode::SUCCESS)
    }
}

fn table(supervisors: &[Supervisor]) -> String {
    let header = [
        "NAME",
        "STRATEGY",
        "INTENSITY",
        "PERIOD",
        "PARENT",
        "STATE",
        "RESTARTS",
        "CHILDREN",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    rows.extend(supervisors.iter().map(|s| {
        vec![
            s.name.clone(),
            s.strategy.clone(),
            s.intensity.to_string(),
            duration::format_millis(s.period_ms),
            if s.parent.is_empty() {
                "-".to_owned()
            } else {
                s.parent.clone()
            },
            s.state.clone(),
            s.restarts.to_string(),
            s.children.len().to_string(),
        ]
    }));
    format::table(&rows)
}

/// Remove supervisors that have no children
#[derive(Args)]
struct Rm {
    /// Supervisor names
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
}

impl Rm {
    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        each_name(&self.names, async |name| {
            client.remove_supervisor(name).await
        })
        .await
    }
}

/// Show supervisors and their children, as a JSON array
#[derive(Args)]
struct Inspect {
    /// Supervisor names
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
}

impl Inspect {
    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let supervisors = client.list_supervisors().await?;
        let mut batch = Batch::default();
        let mut found = Vec::new();
        for name in &self.names {
            match supervisors.iter().find(|s| s.name == *name) {
                Some(s) => found.push(to_json(s)),
                None => batch.fail(anyhow!("no such supervisor: {name}")),
            }
        }
        let mut out = io::stdout().lock();
        out.write_all(inspect::pretty(&Value::Array(found))?.as_bytes())?;
        out.write_all(b"\n")?;
        Ok(batch.exit_code())
    }
}

/// The supervisor as the wire has it; `parent` is null for a root.
fn to_json(s: &Supervisor) -> Value {
    let children: Vec<Value> = s
        .children
        .iter()
        .map(|c| json!({"kind": c.kind, "name": c.name, "state": c.state}))
        .collect();
    json!({
        "name": s.name,
        "strategy": s.strategy,
        "intensity": s.intensity,
        "period_ms": s.period_ms,
        "parent": (!s.parent.is_empty()).then_some(&s.parent),
        "state": s.state,
        "restarts": s.restarts,
        "children": children,
    })
}

/// One line about a supervisor, as `tree` shows it:
/// `app (one_for_all, 3 in 10s) running, 2 restarts`.
pub fn summary(s: &Supervisor) -> String {
    let restarts = if s.restarts == 1 {
        "restart"
    } else {
        "restarts"
    };
    format!(
        "{} ({}, {} in {}) {}, {} {restarts}",
        s.name,
        s.strategy,
        s.intensity,
        duration::format_millis(s.period_ms),
        s.state,
        s.restarts
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use rsup_client::proto::SupervisorChild;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        supervisors: Supervisors,
    }

    fn create(args: &[&str]) -> CreateSupervisorRequest {
        let argv = ["rsupctl", "create"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv)
            .expect("valid flags")
            .supervisors
            .command
        {
            Verb::Create(c) => c.request(),
            _ => panic!("not create"),
        }
    }

    fn app() -> Supervisor {
        Supervisor {
            name: "app".to_owned(),
            strategy: "one_for_all".to_owned(),
            intensity: 3,
            period_ms: 10_000,
            parent: String::new(),
            state: "running".to_owned(),
            restarts: 2,
            children: vec![SupervisorChild {
                kind: "container".to_owned(),
                name: "db".to_owned(),
                state: "running".to_owned(),
            }],
        }
    }

    #[test]
    fn create_defaults_are_otps() {
        assert_eq!(
            create(&["app"]),
            CreateSupervisorRequest {
                name: "app".to_owned(),
                strategy: "one_for_one".to_owned(),
                intensity: 1,
                period_ms: 5000,
                parent: String::new(),
            }
        );
    }

    #[test]
    fn create_passes_values_as_given() {
        assert_eq!(
            create(&[
                "w",
                "--strategy",
                "rest_for_one",
                "--intensity",
                "0",
                "--period",
                "1m30s",
                "--parent",
                "app"
            ]),
            CreateSupervisorRequest {
                name: "w".to_owned(),
                strategy: "rest_for_one".to_owned(),
                intensity: 0,
                period_ms: 90_000,
                parent: "app".to_owned(),
            }
        );
        assert_eq!(create(&["w", "--strategy", "odd"]).strategy, "odd");
        for bad in [
            &["w", "--period", "-1s"][..],
            &["w", "--period", "soon"],
            &["w", "--intensity", "-1"],
            &[],
        ] {
            let argv = ["rsupctl", "create"].into_iter().chain(bad.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn summary_reads_like_the_tree() {
        let mut s = app();
        assert_eq!(
            summary(&s),
            "app (one_for_all, 3 in 10s) running, 2 restarts"
        );
        s.restarts = 1;
        s.state = "failed".to_owned();
        s.period_ms = 1500;
        assert_eq!(
            summary(&s),
            "app (one_for_all, 3 in 1.5s) failed, 1 restart"
        );
    }

    #[test]
    fn table_and_json_show_every_field() {
        let mut w = app();
        w.name = "workers".to_owned();
        w.parent = "app".to_owned();
        w.period_ms = 30_000;
        w.children.clear();
        assert_eq!(
            table(&[app(), w.clone()]),
            "NAME      STRATEGY      INTENSITY   PERIOD   PARENT   STATE     RESTARTS   CHILDREN\n\
             app       one_for_all   3           10s      -        running   2          1\n\
             workers   one_for_all   3           30s      app      running   2          0\n"
        );
        assert_eq!(
            to_json(&app()),
            json!({"name": "app", "strategy": "one_for_all", "intensity": 3,
                   "period_ms": 10000, "parent": null, "state": "running", "restarts": 2,
                   "children": [{"kind": "container", "name": "db", "state": "running"}]})
        );
        assert_eq!(to_json(&w)["parent"], "app");
    }
}
