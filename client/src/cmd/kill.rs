//! `rsupctl kill`: send a signal to the command of running containers.

use std::process::ExitCode;

use clap::Args;
use rsup_client::Client;

use super::{Batch, say, warn};

/// Send a signal to one or more running containers
#[derive(Args)]
pub struct Kill {
    /// Signal to send: a name ("TERM", "SIGTERM") or a number
    #[arg(short, long, default_value = "KILL", value_name = "SIG")]
    signal: String,

    /// Container names or ids
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl Kill {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let mut batch = Batch::default();
        for name in &self.containers {
            if let Some(warnings) = batch.check(client.kill_with_warnings(name, &self.signal).await)
            {
                warn(&warnings);
                say(name)?;
            }
        }
        Ok(batch.exit_code())
    }
}
