//! `rsupctl info`: facts about the daemon.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Args;
use rsup_client::Client;
use rsup_client::proto::InfoResponse;

/// Show the daemon's version, state directory and container counts
#[derive(Args)]
pub struct Info {}

impl Info {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        io::stdout()
            .lock()
            .write_all(render(&client.info().await?).as_bytes())?;
        Ok(ExitCode::SUCCESS)
    }
}

fn render(info: &InfoResponse) -> String {
    format!(
        "Server Version: {}\nState Dir: {}\nContainers: {}\n Running: {}\n Stopped: {}\nCgroup Driver: {}\n",
        info.version,
        info.state_dir,
        info.containers,
        info.running,
        info.containers.saturating_sub(info.running),
        info.cgroup_driver,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_docker_style_lines() {
        let info = InfoResponse {
            version: "0.1.0".to_owned(),
            state_dir: "/var/lib/rsup".to_owned(),
            containers: 3,
            running: 1,
            cgroup_driver: "v2".to_owned(),
        };
        assert_eq!(
            render(&info),
            "Server Version: 0.1.0\nState Dir: /var/lib/rsup\nContainers: 3\n Running: 1\n Stopped: 2\nCgroup Driver: v2\n"
        );
    }
}
