//! `rsupctl wait`: block until containers stop and print their exit codes.

use std::process::ExitCode;

use clap::Args;
use rsup_client::Client;

use super::{Batch, say};
use crate::format;

/// Block until one or more containers stop, then print their exit codes
#[derive(Args)]
pub struct Wait {
    /// Container names or ids
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl Wait {
    /// Exits with the last container's code, or 1 if any wait failed.
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let mut batch = Batch::default();
        let mut last = ExitCode::SUCCESS;
        for name in &self.containers {
            if let Some(status) = batch.check(client.wait(name).await) {
                say(status.exit_code)?;
                if !status.error.is_empty() {
                    batch.fail(anyhow::anyhow!("{name}: {}", status.error));
                }
                last = ExitCode::from(format::exit_code(&status));
            }
        }
        Ok(if batch.failed() {
            batch.exit_code()
        } else {
            last
        })
    }
}
