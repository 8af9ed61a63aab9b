//! `rsupctl volume`: create, list, inspect and remove the named volumes that
//! containers mount with `run -v NAME:/path`. A volume is a directory on the
//! host that outlives the containers using it.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use rsup_client::Client;
use rsup_client::proto::Volume;
use serde_json::{Value, json};

use super::{each_name, inspect_each, say};
use crate::format;
use crate::time::{self, Fraction};

/// Manage named volumes
#[derive(Args)]
pub struct Volumes {
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

impl Volumes {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        match self.command {
            Verb::Create(c) => c.execute(client).await,
            Verb::Ls(c) => c.execute(client).await,
            Verb::Rm(c) => c.execute(client).await,
            Verb::Inspect(c) => c.execute(client).await,
        }
    }
}

/// Create a volume and print its name
#[derive(Args)]
struct Create {
    /// Name of the volume
    #[arg(value_name = "NAME")]
    name: String,
}

impl Create {
    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let volume = client.create_volume(&self.name).await?;
        say(volume.name)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// List volumes
#[derive(Args)]
struct Ls {}

impl Ls {
    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let volumes = client.list_volumes().await?;
        io::stdout().lock().write_all(table(&volumes).as_bytes())?;
        Ok(ExitCode::SUCCESS)
    }
}

fn table(volumes: &[Volume]) -> String {
    let header = ["NAME", "MOUNTPOINT", "CONTAINERS"];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    rows.extend(volumes.iter().map(|v| {
        vec![
            v.name.clone(),
            v.mountpoint.clone(),
            v.containers.len().to_string(),
        ]
    }));
    format::table(&rows)
}

/// Remove volumes that no container uses
#[derive(Args)]
struct Rm {
    /// Volume names
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
}

impl Rm {
    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        each_name(&self.names, async |name| client.remove_volume(name).await).await
    }
}

/// Show volumes and the containers that mount them, as a JSON array
#[derive(Args)]
struct Inspect {
    /// Volume names
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
}

impl Inspect {
    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        inspect_each(
            &self.names,
            async |name| client.inspect_volume(name).await,
            to_json,
        )
        .await
    }
}

/// Docker-like keys, plus `Containers`: the names of the containers that
/// mount the volume.
fn to_json(v: &Volume) -> Value {
    json!({
        "Name": v.name,
        "Mountpoint": v.mountpoint,
        "CreatedAt": time::rfc3339(v.created_at.as_ref(), Fraction::Trimmed),
        "Containers": v.containers,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use prost_types::Timestamp;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        volumes: Volumes,
    }

    fn data() -> Volume {
        Volume {
            name: "data".to_owned(),
            mountpoint: "/var/lib/rsup/volumes/data".to_owned(),
            created_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            containers: vec!["db".to_owned(), "app".to_owned()],
        }
    }

    #[test]
    fn table_and_json_show_every_field() {
        let mut empty = data();
        empty.name = "cache".to_owned();
        empty.mountpoint = "/v/cache".to_owned();
        empty.containers.clear();
        assert_eq!(
            table(&[data(), empty]),
            "NAME    MOUNTPOINT                   CONTAINERS\n\
             data    /var/lib/rsup/volumes/data   2\n\
             cache   /v/cache                     0\n"
        );
        assert_eq!(
            to_json(&data()),
            json!({"Name": "data", "Mountpoint": "/var/lib/rsup/volumes/data",
                   "CreatedAt": "2023-11-14T22:13:20Z", "Containers": ["db", "app"]})
        );
    }

    #[test]
    fn names_are_required() {
        for verb in ["create", "rm", "inspect"] {
            assert!(Cli::try_parse_from(["rsupctl", verb]).is_err(), "{verb}");
        }
        assert!(Cli::try_parse_from(["rsupctl", "ls"]).is_ok());
        assert!(Cli::try_parse_from(["rsupctl", "list"]).is_ok());
    }
}
