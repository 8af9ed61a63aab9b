//! `rsupctl network`: create, list, inspect and remove the bridge networks
//! that containers join with `run --network`. Each network has its own
//! subnet, gateway (the bridge's address) and DNS server answering the names
//! of its containers.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use rsup_client::Client;
use rsup_client::proto::{CreateNetworkRequest, Network};
use serde_json::{Map, Value, json};

use super::{each_name, inspect_each, say};
use crate::format;
use crate::time::{self, Fraction};

/// Manage networks (bridges with address pools and DNS)
#[derive(Args)]
pub struct Networks {
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

impl Networks {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        match self.command {
            Verb::Create(c) => c.execute(client).await,
            Verb::Ls(c) => c.execute(client).await,
            Verb::Rm(c) => c.execute(client).await,
            Verb::Inspect(c) => c.execute(client).await,
        }
    }
}

/// Create a network and print its name
#[derive(Args)]
struct Create {
    /// Name of the network (a DNS label)
    #[arg(value_name = "NAME")]
    name: String,

    /// Subnet in CIDR form, e.g. 10.90.0.0/24 (default: a free /24 in
    /// 10.89.0.0/16)
    #[arg(long, value_name = "CIDR")]
    subnet: Option<String>,

    /// Gateway address, the bridge's own (default: the subnet's first)
    #[arg(long, value_name = "IP")]
    gateway: Option<String>,

    /// No default route out of the network
    #[arg(long)]
    internal: bool,
}

impl Create {
    /// The request, with every value as given: the daemon judges them.
    fn request(self) -> CreateNetworkRequest {
        CreateNetworkRequest {
            name: self.name,
            subnet: self.subnet.unwrap_or_default(),
            gateway: self.gateway.unwrap_or_default(),
            internal: self.internal,
        }
    }

    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let network = client.create_network(self.request()).await?;
        say(network.name)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// List networks, in creation order
#[derive(Args)]
struct Ls {}

impl Ls {
    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let networks = client.list_networks().await?;
        io::stdout().lock().write_all(table(&networks).as_bytes())?;
        Ok(ExitCode::SUCCESS)
    }
}

fn table(networks: &[Network]) -> String {
    let header = [
        "NAME",
        "SUBNET",
        "GATEWAY",
        "BRIDGE",
        "INTERNAL",
        "CONTAINERS",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    rows.extend(networks.iter().map(|n| {
        vec![
            n.name.clone(),
            n.subnet.clone(),
            n.gateway.clone(),
            n.bridge.clone(),
            n.internal.to_string(),
            n.containers.len().to_string(),
        ]
    }));
    format::table(&rows)
}

/// Remove networks that no container uses
#[derive(Args)]
struct Rm {
    /// Network names
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
}

impl Rm {
    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        each_name(&self.names, async |name| client.remove_network(name).await).await
    }
}

/// Show networks and the addresses of their containers, as a JSON array
#[derive(Args)]
struct Inspect {
    /// Network names
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
}

impl Inspect {
    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        inspect_each(
            &self.names,
            async |name| client.inspect_network(name).await,
            to_json,
        )
        .await
    }
}

/// Docker-like keys: `Containers` maps each container's name to its
/// `IPv4Address` in CIDR form (address/prefix of the subnet), as
/// `docker network inspect` shows it; `DNS` is the server's address, "" when
/// it is not running.
fn to_json(n: &Network) -> Value {
    let prefix = n.subnet.split_once('/').map(|(_, p)| p);
    let containers: Map<String, Value> = n
        .containers
        .iter()
        .map(|lease| {
            let address = match prefix {
                Some(p) => format!("{}/{p}", lease.ip),
                None => lease.ip.clone(),
            };
            (lease.container.clone(), json!({"IPv4Address": address}))
        })
        .collect();
    json!({
        "Name": n.name,
        "Subnet": n.subnet,
        "Gateway": n.gateway,
        "Internal": n.internal,
        "Bridge": n.bridge,
        "Created": time::rfc3339(n.created_at.as_ref(), Fraction::Trimmed),
        "Containers": containers,
        "DNS": n.dns,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use prost_types::Timestamp;
    use rsup_client::proto::NetworkLease;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        networks: Networks,
    }

    fn create(args: &[&str]) -> CreateNetworkRequest {
        let argv = ["rsupctl", "create"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv)
            .expect("valid flags")
            .networks
            .command
        {
            Verb::Create(c) => c.request(),
            _ => panic!("not create"),
        }
    }

    fn back() -> Network {
        Network {
            name: "back".to_owned(),
            subnet: "10.90.0.0/24".to_owned(),
            gateway: "10.90.0.1".to_owned(),
            internal: true,
            bridge: "rsb1234abcd".to_owned(),
            created_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            containers: vec![
                NetworkLease {
                    container: "db".to_owned(),
                    ip: "10.90.0.2".to_owned(),
                },
                NetworkLease {
                    container: "app".to_owned(),
                    ip: "10.90.0.3".to_owned(),
                },
            ],
            dns: "10.90.0.1:53".to_owned(),
        }
    }

    #[test]
    fn create_passes_values_as_given() {
        assert_eq!(
            create(&["back"]),
            CreateNetworkRequest {
                name: "back".to_owned(),
                subnet: String::new(),
                gateway: String::new(),
                internal: false,
            }
        );
        assert_eq!(
            create(&[
                "--subnet",
                "10.0.0.0/33",
                "--gateway",
                "1.2.3.4",
                "--internal",
                "x_y"
            ]),
            CreateNetworkRequest {
                name: "x_y".to_owned(),
                subnet: "10.0.0.0/33".to_owned(),
                gateway: "1.2.3.4".to_owned(),
                internal: true,
            }
        );
        let argv = ["rsupctl", "create", "--subnet", "10.0.0.0/24"];
        assert!(Cli::try_parse_from(argv).is_err(), "a name is required");
    }

    #[test]
    fn table_and_json_show_every_field() {
        let mut default = back();
        default.name = "default".to_owned();
        default.subnet = "10.88.0.0/16".to_owned();
        default.gateway = "10.88.0.1".to_owned();
        default.internal = false;
        default.bridge = "rsb0000ffff".to_owned();
        default.containers.clear();
        assert_eq!(
            table(&[default, back()]),
            "NAME      SUBNET         GATEWAY     BRIDGE        INTERNAL   CONTAINERS\n\
             default   10.88.0.0/16   10.88.0.1   rsb0000ffff   false      0\n\
             back      10.90.0.0/24   10.90.0.1   rsb1234abcd   true       2\n"
        );
        assert_eq!(
            to_json(&back()),
            json!({"Name": "back", "Subnet": "10.90.0.0/24", "Gateway": "10.90.0.1",
                   "Internal": true, "Bridge": "rsb1234abcd",
                   "Created": "2023-11-14T22:13:20Z",
                   "Containers": {"db": {"IPv4Address": "10.90.0.2/24"},
                                  "app": {"IPv4Address": "10.90.0.3/24"}},
                   "DNS": "10.90.0.1:53"})
        );
    }

    #[test]
    fn an_empty_network_has_an_empty_containers_object() {
        let mut n = back();
        n.containers.clear();
        n.dns.clear();
        let v = to_json(&n);
        assert_eq!(v["Containers"], json!({}));
        assert_eq!(v["DNS"], "");
    }
}
