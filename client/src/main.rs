//! rsupctl: Docker-style command line for rsupd.
//!
//! Parses the command line, connects to the daemon's socket, and hands the
//! client to one subcommand handler (`cmd/<verb>.rs`). Every failure is
//! printed once, as `error: <message>` on stderr, and turns into a non-zero
//! exit: 1 in general, 125 when `run` fails on its own, or the container's
//! exit code for `run` and `wait`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rsup_client::{Client, DEFAULT_SOCKET};

mod cmd;
mod duration;
mod format;
mod size;
mod time;

/// Run and manage containers supervised by rsupd.
#[derive(Parser)]
#[command(name = "rsupctl", version)]
struct Cli {
    /// Unix socket where rsupd listens.
    #[arg(
        long,
        global = true,
        env = "RSUP_SOCKET",
        default_value = DEFAULT_SOCKET,
        value_name = "PATH"
    )]
    socket: PathBuf,

    #[command(subcommand)]
    command: cmd::Command,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let failure = ExitCode::from(cli.command.failure_code());
    let client = match Client::connect(&cli.socket).await {
        Ok(client) => client,
        Err(err) => {
            cmd::report(&err.into());
            return failure;
        }
    };
    match cli.command.execute(&client).await {
        Ok(code) => code,
        Err(err) => {
            cmd::report(&err);
            failure
        }
    }
}
