//! `rsupctl restart`: stop (if running), then start again.

use std::process::ExitCode;

use clap::Args;
use rsup_client::Client;
use rsup_client::proto::ContainerState;

use super::{Batch, say};

/// Restart one or more containers
#[derive(Args)]
pub struct Restart {
    /// Seconds to wait after SIGTERM before sending SIGKILL (default: 10)
    #[arg(
        short = 't',
        long = "time",
        visible_alias = "timeout",
        value_name = "SECS"
    )]
    time: Option<u32>,

    /// Container names or ids
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl Restart {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let mut batch = Batch::default();
        for name in &self.containers {
            if batch.check(self.restart(client, name).await).is_some() {
                say(name)?;
            }
        }
        Ok(batch.exit_code())
    }

    async fn restart(&self, client: &Client, name: &str) -> Result<(), rsup_client::Error> {
        // Like Docker, restarting a container that is not running just starts it.
        if client.inspect(name).await?.state() == ContainerState::Running {
            client.stop(name, self.time).await?;
        }
        client.start(name).await?;
        Ok(())
    }
}
