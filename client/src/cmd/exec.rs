//! `rsupctl exec`: run a command inside a running container, print what it
//! wrote (stdout to our stdout, stderr to our stderr, byte for byte) and exit
//! with its exit code, as `docker exec` does. There is no TTY and no stdin:
//! the daemon returns the output once the command has ended.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Args;
use rsup_client::Client;
use rsup_client::proto::{ExecRequest, ExecResponse};

use super::create::environment;

/// Exit code when the daemon gave up waiting for the command (Docker's code
/// for a command that could not be run).
const TIMED_OUT: u8 = 126;

/// Run a command in a running container
#[derive(Args)]
pub struct Exec {
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,

    /// User to run as: uid or uid:gid (default: the container's)
    #[arg(short, long, value_name = "USER")]
    user: Option<String>,

    /// Working directory inside the container (default: the container's)
    #[arg(short, long = "workdir", value_name = "DIR")]
    workdir: Option<String>,

    /// Container name or id
    #[arg(value_name = "CONTAINER")]
    container: String,

    /// Command to run, and its arguments
    #[arg(
        value_name = "COMMAND",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<String>,
}

impl Exec {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let request = self.request(|key| std::env::var(key).ok())?;
        let reply = client.exec(request).await?;
        io::stdout().lock().write_all(&reply.stdout)?;
        io::stdout().flush()?;
        io::stderr().lock().write_all(&reply.stderr)?;
        Ok(ExitCode::from(exit_code(&reply)))
    }

    /// The request; bare `-e KEY`s take their values from `lookup`.
    fn request(self, lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<ExecRequest> {
        Ok(ExecRequest {
            container: self.container,
            command: self.command,
            env: environment(self.env, lookup)?,
            user: self.user.unwrap_or_default(),
            working_dir: self.workdir.unwrap_or_default(),
            timeout_ms: None,
        })
    }
}

/// The command's exit code as a shell sees it (modulo 256); 126 when it
/// timed out.
fn exit_code(reply: &ExecResponse) -> u8 {
    if reply.timed_out {
        return TIMED_OUT;
    }
    u8::try_from(reply.exit_code.rem_euclid(256)).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        exec: Exec,
    }

    fn parse(args: &[&str]) -> Exec {
        let argv = std::iter::once("rsupctl").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect("valid arguments").exec
    }

    #[test]
    fn the_command_keeps_its_own_flags() {
        let exec = parse(&[
            "-e",
            "A=1",
            "-u",
            "1000:1000",
            "-w",
            "/tmp",
            "web",
            "sh",
            "-c",
            "exit 3",
            "-e",
        ]);
        assert_eq!(exec.container, "web");
        assert_eq!(exec.command, ["sh", "-c", "exit 3", "-e"]);
        let request = exec.request(|_| None).expect("valid request");
        assert_eq!(
            request,
            ExecRequest {
                container: "web".to_owned(),
                command: ["sh", "-c", "exit 3", "-e"].map(str::to_owned).to_vec(),
                env: vec!["A=1".to_owned()],
                user: "1000:1000".to_owned(),
                working_dir: "/tmp".to_owned(),
                timeout_ms: None,
            }
        );
        assert_eq!(parse(&["web", "--", "ls", "-l"]).command, ["ls", "-l"]);
        assert_eq!(parse(&["web", "-x", "--y"]).command, ["-x", "--y"]);
    }

    #[test]
    fn bare_env_keys_are_copied() {
        let lookup = |key: &str| (key == "HOME").then(|| "/root".to_owned());
        let request = parse(&["-e", "HOME", "-e", "UNSET", "web", "env"])
            .request(lookup)
            .expect("valid request");
        assert_eq!(request.env, ["HOME=/root"]);
        assert!(parse(&["-e", "=x", "web", "env"]).request(lookup).is_err());
    }

    #[test]
    fn a_container_and_a_command_are_required() {
        assert!(Cli::try_parse_from(["rsupctl"]).is_err());
        assert!(Cli::try_parse_from(["rsupctl", "web"]).is_err());
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        let reply = |exit_code, timed_out| ExecResponse {
            exit_code,
            timed_out,
            ..Default::default()
        };
        assert_eq!(exit_code(&reply(0, false)), 0);
        assert_eq!(exit_code(&reply(3, false)), 3);
        assert_eq!(exit_code(&reply(137, false)), 137);
        assert_eq!(exit_code(&reply(-1, false)), 255);
        assert_eq!(exit_code(&reply(-1, true)), 126);
    }
}
