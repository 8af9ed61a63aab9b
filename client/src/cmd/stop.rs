//! `rsupctl stop`: SIGTERM, then SIGKILL after a grace period.

use std::process::ExitCode;

use clap::Args;
use rsup_client::Client;

use super::{Batch, say, warn};

/// Stop one or more running containers
#[derive(Args)]
pub struct Stop {
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

impl Stop {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let mut batch = Batch::default();
        for name in &self.containers {
            if let Some((_, warnings)) =
                batch.check(client.stop_with_warnings(name, self.time).await)
            {
                warn(&warnings);
                say(name)?;
            }
        }
        Ok(batch.exit_code())
    }
}
