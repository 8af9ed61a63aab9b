//! `rsupctl run`: create and start a container and, unless detached, stay
//! attached to its output and exit with its exit code.
//!
//! Attached, the log stream is opened before the start, then the stream and
//! `wait` run side by side: with `--rm` the daemon removes the container as
//! soon as it exits, but still answers `wait` with its exit status. Failures of rsupctl or rsupd exit 125,
//! as with Docker, so they stay distinct from the container's own codes; a
//! command that cannot be run exits 127 (not found) or 126 (not executable).

use std::process::ExitCode;

use anyhow::anyhow;
use clap::Args;
use rsup_client::Client;

use super::create::SpecArgs;
use super::{logs, report, say};
use crate::format;

/// Create and start a container, then follow its output until it exits
#[derive(Args)]
pub struct Run {
    /// Run in the background and print the container id
    #[arg(short, long)]
    detach: bool,

    #[command(flatten)]
    spec: SpecArgs,
}

impl Run {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let auto_remove = self.spec.rm;
        let pull = self.spec.pull;
        let container = super::create::create_pulling(client, self.spec.into_spec()?, pull).await?;
        let id = container.id;
        // Attach before the start, as `docker run` does: the daemon opens the
        // log file now, so even a container that exits (and, with --rm, is
        // removed) at once cannot lose its output.
        let stream = if self.detach {
            None
        } else {
            match client.logs(&id, true, None).await {
                Ok(s) => Some(s),
                Err(err) => {
                    if auto_remove {
                        discard(client, &id).await;
                    }
                    return Err(err.into());
                }
            }
        };
        if let Err(err) = client.start(&id).await {
            // A command that could not be run: the daemon recorded Docker's
            // exit code for it (127 not found, 126 not executable), and
            // `run` exits with it, as `docker run` does.
            let code = command_exit_code(client, &id).await;
            if auto_remove {
                discard(client, &id).await;
            }
            return match code {
                Some(code) => {
                    report(&err.into());
                    Ok(ExitCode::from(code))
                }
                None => Err(err.into()),
            };
        }
        let Some(stream) = stream else {
            say(&id)?;
            return Ok(ExitCode::SUCCESS);
        };

        let (streamed, waited) = tokio::join!(logs::print_stream(stream, false), client.wait(&id));
        if let Err(err) = streamed {
            report(&err);
        }
        let status = waited?;
        if !status.error.is_empty() {
            report(&anyhow!(
                "container {}: {}",
                format::short_id(&id),
                status.error
            ));
        }
        Ok(ExitCode::from(format::exit_code(&status)))
    }
}

/// The exit code the daemon recorded for a container whose start just
/// failed because its command could not be run (126 or 127), if any.
async fn command_exit_code(client: &Client, id: &str) -> Option<u8> {
    let c = client.inspect(id).await.ok()?;
    match c.exit?.exit_code {
        code @ (126 | 127) => u8::try_from(code).ok(),
        _ => None,
    }
}

/// Removes a container that failed to start, as `--rm` promised; a daemon that
/// already removed it is fine, any other failure is reported as well.
async fn discard(client: &Client, id: &str) {
    match client.remove_with_warnings(id, true).await {
        Ok(warnings) => super::warn(&warnings),
        Err(err) if err.code() == Some(tonic::Code::NotFound) => {}
        Err(err) => {
            report(&anyhow::Error::from(err).context(format!("removing {}", format::short_id(id))))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: Run,
    }

    #[test]
    fn detach_flag_comes_before_the_command() {
        let cli =
            Cli::try_parse_from(["rsupctl", "-d", "--rootfs", "r", "sh", "-d"]).expect("valid");
        assert!(cli.run.detach);
        assert_eq!(cli.run.spec.command, ["sh", "-d"]);
    }
}
