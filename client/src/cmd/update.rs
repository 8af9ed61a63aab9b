//! `rsupctl update`: change the resource limits of containers, running or not.

use std::process::ExitCode;

use clap::{ArgGroup, Args};
use rsup_client::Client;

use super::create::ResourceArgs;
use super::{Batch, say};

/// Update the resource limits of one or more containers
#[derive(Args)]
#[command(group(
    ArgGroup::new("limits")
        .args(["memory", "memory_swap", "cpus", "cpu_shares", "pids_limit"])
        .required(true)
        .multiple(true)
))]
pub struct Update {
    #[command(flatten)]
    resources: ResourceArgs,

    /// Container names or ids
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl Update {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        // clap insists on at least one flag, so there is always something to send.
        let resources = self.resources.to_resources().unwrap_or_default();
        let mut batch = Batch::default();
        for name in &self.containers {
            if batch.check(client.update(name, resources).await).is_some() {
                say(name)?;
            }
        }
        Ok(batch.exit_code())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use rsup_client::proto::Resources;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        update: Update,
    }

    fn parse(args: &[&str]) -> Result<Update, clap::Error> {
        let argv = std::iter::once("rsupctl").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.update)
    }

    #[test]
    fn limits_apply_to_every_container() {
        let update = parse(&["-m", "1g", "--pids-limit", "-5", "a", "b"]).expect("valid");
        assert_eq!(update.containers, ["a", "b"]);
        assert_eq!(
            update.resources.to_resources(),
            Some(Resources {
                memory_bytes: Some(1 << 30),
                pids_limit: Some(-5),
                ..Default::default()
            })
        );
    }

    #[test]
    fn a_flag_and_a_container_are_required() {
        let err = parse(&["a"]).err().expect("no flag");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(parse(&["--cpus", "1"]).is_err());
        assert!(parse(&["--cpus", "0", "a"]).is_ok());
    }
}
