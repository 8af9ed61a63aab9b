//! `rsupctl rm`: delete containers and their state.

use std::process::ExitCode;

use clap::Args;
use rsup_client::Client;

use super::{Batch, say, warn};

/// Remove one or more containers
#[derive(Args)]
pub struct Rm {
    /// Kill and remove running containers too
    #[arg(short, long)]
    force: bool,

    /// Container names or ids
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl Rm {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let mut batch = Batch::default();
        for name in &self.containers {
            if let Some(warnings) = batch.check(client.remove_with_warnings(name, self.force).await)
            {
                warn(&warnings);
                say(name)?;
            }
        }
        Ok(batch.exit_code())
    }
}
