//! rsupctl: Docker-style command line for rsupd.
//!
//! Parses the command line, connects to the daemon (its Unix socket, or TCP
//! with mutual TLS, Docker's `-H` and `--tls*` flags), and hands the
//! client to one subcommand handler (`cmd/<verb>.rs`). Every failure is
//! printed once, as `error: <message>` on stderr, and turns into a non-zero
//! exit: 1 in general, 125 when `run` fails on its own, or the container's
//! exit code for `run` and `wait`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use rsup_client::{Client, DEFAULT_SOCKET, Host, TlsFiles};

mod cmd;
mod duration;
mod format;
mod size;
mod time;

/// Run and manage containers supervised by rsupd.
#[derive(Parser)]
#[command(name = "rsupctl", version)]
struct Cli {
    /// Unix socket where rsupd listens [default: /run/rsup/rsupd.sock].
    #[arg(long, global = true, env = "RSUP_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Daemon to connect to: unix:///PATH or tcp://HOST:PORT (takes
    /// precedence over --socket). tcp:// uses TLS when --tlscacert is given
    /// (rsupd --tcp also needs --tlscert and --tlskey), plaintext (rsupd
    /// --insecure-tcp) when not.
    #[arg(
        short = 'H',
        long,
        global = true,
        env = "RSUP_HOST",
        value_name = "URL"
    )]
    host: Option<Host>,

    /// CA certificate (PEM) that rsupd's TLS certificate must chain to.
    #[arg(long, global = true, env = "RSUP_TLS_CA", value_name = "PATH")]
    tlscacert: Option<PathBuf>,

    /// Client certificate (PEM) signed by the CA rsupd trusts.
    #[arg(long, global = true, env = "RSUP_TLS_CERT", value_name = "PATH")]
    tlscert: Option<PathBuf>,

    /// Private key (PEM) of --tlscert.
    #[arg(long, global = true, env = "RSUP_TLS_KEY", value_name = "PATH")]
    tlskey: Option<PathBuf>,

    /// Name rsupd's certificate must carry, instead of the host part of -H.
    #[arg(long, global = true, env = "RSUP_TLS_SERVER_NAME", value_name = "NAME")]
    tls_server_name: Option<String>,

    /// Set after parsing: `--socket` was on the command line and `-H` only
    /// in the environment, so the explicit flag wins.
    #[arg(skip)]
    socket_over_env_host: bool,

    #[command(subcommand)]
    command: cmd::Command,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    cli.socket_over_env_host = matches.value_source("socket") == Some(ValueSource::CommandLine)
        && matches.value_source("host") == Some(ValueSource::EnvVariable);
    let failure = ExitCode::from(cli.command.failure_code());
    let client = match connect(&cli).await {
        Ok(client) => client,
        Err(err) => {
            cmd::report(&err);
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

/// Connects as the global flags say: `-H`, else `--socket`, else the default
/// socket (a `--socket` flag beats an `RSUP_HOST` variable); over TCP, TLS with `--tlscacert` (and the client certificate
/// when given) or plaintext without it.
async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let host = match (&cli.host, &cli.socket) {
        (Some(_), Some(socket)) if cli.socket_over_env_host => Host::Unix(socket.clone()),
        (Some(host), _) => host.clone(),
        (None, Some(socket)) => Host::Unix(socket.clone()),
        (None, None) => Host::Unix(PathBuf::from(DEFAULT_SOCKET)),
    };
    let tls = match (&cli.tlscacert, &cli.tlscert, &cli.tlskey) {
        _ if matches!(host, Host::Unix(_)) => None,
        (None, None, None) => None,
        (Some(ca), cert, key) if cert.is_some() == key.is_some() => Some(TlsFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
            server_name: cli.tls_server_name.clone(),
        }),
        (None, _, _) => {
            bail!("--tlscert and --tlskey need --tlscacert, the CA that signed rsupd's certificate")
        }
        _ => bail!("--tlscert and --tlskey go together: give both, or neither"),
    };
    Ok(Client::connect_host(&host, tls.as_ref()).await?)
}
