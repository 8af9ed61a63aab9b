//! The subcommands of rsupctl, one file each. A handler parses nothing itself
//! (clap did), makes its calls through [`rsup_client::Client`], prints its
//! result on stdout and returns the process exit code; errors go back up to
//! `main` (or to [`Batch`] for verbs over several containers) and are printed
//! exactly once by [`report`].

use std::fmt::Display;
use std::io::{self, Write};
use std::process::ExitCode;

use clap::Subcommand;
use rsup_client::Client;

pub mod create;
pub mod events;
pub mod exec;
pub mod image;
pub mod info;
pub mod inspect;
pub mod kill;
pub mod logs;
pub mod network;
pub mod ps;
pub mod registry;
pub mod restart;
pub mod rm;
pub mod run;
pub mod start;
pub mod stats;
pub mod stop;
pub mod supervisor;
pub mod tree;
pub mod update;
pub mod volume;
pub mod wait;

/// Exit code of a failed command.
const FAILURE: u8 = 1;
/// Exit code of `run` when the failure is rsupctl's or rsupd's, not the
/// container's (Docker's convention).
const RUN_FAILURE: u8 = 125;

#[derive(Subcommand)]
pub enum Command {
    Run(run::Run),
    Create(create::Create),
    Start(start::Start),
    Stop(stop::Stop),
    Kill(kill::Kill),
    Restart(restart::Restart),
    Rm(rm::Rm),
    Ps(ps::Ps),
    Inspect(inspect::Inspect),
    Logs(logs::Logs),
    Stats(stats::Stats),
    Update(update::Update),
    Wait(wait::Wait),
    Exec(exec::Exec),
    Events(events::Events),
    Supervisor(supervisor::Supervisors),
    Network(network::Networks),
    Volume(volume::Volumes),
    Image(image::Images),
    Tree(tree::Tree),
    Info(info::Info),
    Pull(registry::Pull),
    Push(registry::Push),
    Tag(registry::Tag),
    Login(registry::Login),
    Logout(registry::Logout),
}

impl Command {
    /// Runs the subcommand and returns the exit code it chose.
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        match self {
            Command::Run(c) => c.execute(client).await,
            Command::Create(c) => c.execute(client).await,
            Command::Start(c) => c.execute(client).await,
            Command::Stop(c) => c.execute(client).await,
            Command::Kill(c) => c.execute(client).await,
            Command::Restart(c) => c.execute(client).await,
            Command::Rm(c) => c.execute(client).await,
            Command::Ps(c) => c.execute(client).await,
            Command::Inspect(c) => c.execute(client).await,
            Command::Logs(c) => c.execute(client).await,
            Command::Stats(c) => c.execute(client).await,
            Command::Update(c) => c.execute(client).await,
            Command::Wait(c) => c.execute(client).await,
            Command::Exec(c) => c.execute(client).await,
            Command::Events(c) => c.execute(client).await,
            Command::Supervisor(c) => c.execute(client).await,
            Command::Network(c) => c.execute(client).await,
            Command::Volume(c) => c.execute(client).await,
            Command::Image(c) => c.execute(client).await,
            Command::Tree(c) => c.execute(client).await,
            Command::Info(c) => c.execute(client).await,
            Command::Pull(c) => c.execute(client).await,
            Command::Push(c) => c.execute(client).await,
            Command::Tag(c) => c.execute(client).await,
            Command::Login(c) => c.execute(client).await,
            Command::Logout(c) => c.execute(client).await,
        }
    }

    /// The exit code when `execute` fails (or the daemon cannot be reached).
    pub fn failure_code(&self) -> u8 {
        match self {
            Command::Run(_) => RUN_FAILURE,
            _ => FAILURE,
        }
    }
}

/// Writes one line to stdout; a closed pipe is an error to return, not a panic.
pub fn say(line: impl Display) -> io::Result<()> {
    writeln!(io::stdout().lock(), "{line}")
}

/// Prints each of the daemon's warnings as `warning: <message>` on stderr.
pub fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// Prints `error: <message>` on stderr. A closed stdout (`rsupctl ps | head`)
/// is not worth a message.
pub fn report(err: &anyhow::Error) {
    let broken_pipe = err
        .downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe);
    if !broken_pipe {
        eprintln!("error: {}", describe(err));
    }
}

/// One line for an error: the context chain joined by ": ", where a client
/// error contributes the daemon's status message (or, for a failed connect,
/// the OS reason at the bottom of the transport error).
pub fn describe(err: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in err.chain() {
        if let Some(client_err) = cause.downcast_ref::<rsup_client::Error>() {
            parts.push(describe_client_error(client_err));
            break;
        }
        parts.push(cause.to_string());
    }
    parts.join(": ")
}

fn describe_client_error(err: &rsup_client::Error) -> String {
    match err {
        rsup_client::Error::Connect { source, .. } => {
            let Some(mut root) = std::error::Error::source(source) else {
                return err.to_string();
            };
            while let Some(next) = root.source() {
                root = next;
            }
            format!("{err}: {root}")
        }
        rsup_client::Error::TlsFile { .. }
        | rsup_client::Error::Tls { .. }
        | rsup_client::Error::File { .. } => err.to_string(),
        rsup_client::Error::Status(status) => {
            let message = if status.message().is_empty() {
                status.code().description().to_owned()
            } else {
                err.to_string()
            };
            // A transport failure (a refused TLS handshake, a reset
            // connection) keeps its cause as the status' source.
            let Some(mut root) = std::error::Error::source(status) else {
                return message;
            };
            while let Some(next) = root.source() {
                root = next;
            }
            let cause = root.to_string();
            if message.contains(&cause) {
                message
            } else {
                format!("{message}: {cause}")
            }
        }
    }
}

/// The outcome of a verb applied to several containers. Like Docker, it keeps
/// going after a failure, reports each one, and exits 1 if any failed.
#[derive(Default)]
pub struct Batch {
    failed: bool,
}

impl Batch {
    /// Passes on a success; reports a failure and remembers it.
    pub fn check<T, E: Into<anyhow::Error>>(&mut self, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                self.fail(err.into());
                None
            }
        }
    }

    /// Reports a failure and remembers it.
    pub fn fail(&mut self, err: anyhow::Error) {
        report(&err);
        self.failed = true;
    }

    /// Whether any container failed so far.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Success, or 1 if anything failed.
    pub fn exit_code(&self) -> ExitCode {
        if self.failed {
            ExitCode::from(FAILURE)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Runs `op` on each name, printing the name when it succeeds and one
/// error line when it fails; exits 1 if any failed (`rm` of several things).
pub async fn each_name<T>(
    names: &[String],
    mut op: impl AsyncFnMut(&str) -> Result<T, rsup_client::Error>,
) -> anyhow::Result<ExitCode> {
    let mut batch = Batch::default();
    for name in names {
        if batch.check(op(name).await).is_some() {
            say(name)?;
        }
    }
    Ok(batch.exit_code())
}

/// Fetches each name and prints the ones found as one JSON array (`inspect`
/// of several things); exits 1 if any failed.
pub async fn inspect_each<T>(
    names: &[String],
    mut fetch: impl AsyncFnMut(&str) -> Result<T, rsup_client::Error>,
    to_json: impl Fn(&T) -> serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let mut batch = Batch::default();
    let mut found = Vec::new();
    for name in names {
        if let Some(item) = batch.check(fetch(name).await) {
            found.push(to_json(&item));
        }
    }
    let mut out = io::stdout().lock();
    out.write_all(inspect::pretty(&serde_json::Value::Array(found))?.as_bytes())?;
    out.write_all(b"\n")?;
    Ok(batch.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_show_the_daemon_message() {
        let err = anyhow::Error::from(rsup_client::Error::from(tonic::Status::not_found(
            "no such container: web",
        )));
        assert_eq!(describe(&err), "no such container: web");
        let ctx = err.context("stopping web");
        assert_eq!(describe(&ctx), "stopping web: no such container: web");
    }

    #[test]
    fn empty_status_messages_fall_back_to_the_code() {
        let err = anyhow::Error::from(rsup_client::Error::from(tonic::Status::unavailable("")));
        assert_eq!(describe(&err), tonic::Code::Unavailable.description());
    }

    #[tokio::test]
    async fn connect_errors_name_the_socket_and_the_os_reason() {
        let err = Client::connect("/nonexistent/rsupd.sock")
            .await
            .expect_err("no socket there");
        let text = describe(&err.into());
        assert!(
            text.starts_with("cannot connect to rsupd at /nonexistent/rsupd.sock: "),
            "{text}"
        );
        assert!(text.contains("No such file or directory"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn plain_errors_keep_their_context_chain() {
        let err = anyhow::anyhow!("bad value").context("--env");
        assert_eq!(describe(&err), "--env: bad value");
    }
}
