//! `rsupctl start`: start created or exited containers.

use std::process::ExitCode;

use clap::Args;
use rsup_client::Client;

use super::{Batch, say};

/// Start one or more stopped containers
#[derive(Args)]
pub struct Start {
    /// Container names or ids
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl Start {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let mut batch = Batch::default();
        for name in &self.containers {
            if batch.check(client.start(name).await).is_some() {
                say(name)?;
            }
        }
        Ok(batch.exit_code())
    }
}
