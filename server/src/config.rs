//! rsupd's configuration: command-line flags with environment fallbacks,
//! resolved once into an immutable [`Config`].

use std::path::PathBuf;

use clap::Parser;
use rsup_runtime::spec::LogConfig;

/// rsupd: runs and supervises containers, driven over gRPC.
#[derive(Debug, Parser)]
#[command(name = "rsupd", version)]
pub struct Cli {
    /// Unix socket to serve gRPC on (created mode 0660).
    #[arg(long, env = "RSUP_SOCKET", default_value = "/run/rsup/rsupd.sock")]
    pub socket: PathBuf,
    /// Group (name or gid) that owns the socket; default: rsupd's own group.
    #[arg(long, env = "RSUP_SOCKET_GROUP")]
    pub socket_group: Option<String>,
    /// Directory for all persistent state.
    #[arg(long, env = "RSUP_STATE_DIR", default_value = "/var/lib/rsup")]
    pub state_dir: PathBuf,
    /// Log filter (tracing EnvFilter syntax, e.g. "info" or "rsup_runtime=debug").
    #[arg(long, env = "RSUP_LOG", default_value = "info")]
    pub log_level: String,
    /// Default size at which a container's log file is rotated, in bytes.
    #[arg(long, default_value_t = LogConfig::default().max_size)]
    pub log_max_size: u64,
    /// Default number of log files kept per container (current + rotated).
    #[arg(long, default_value_t = LogConfig::default().max_files)]
    pub log_max_files: u32,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub socket_gid: Option<u32>,
    pub state_dir: PathBuf,
    pub log_level: String,
    pub log: LogConfig,
}

impl Cli {
    pub fn resolve(self) -> anyhow::Result<Config> {
        let socket_gid = match &self.socket_group {
            None => None,
            Some(g) => Some(match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => nix::unistd::Group::from_name(g)?
                    .ok_or_else(|| anyhow::anyhow!("--socket-group: no group named {g:?}"))?
                    .gid
                    .as_raw(),
            }),
        };
        if self.log_max_size < 1024 {
            anyhow::bail!("--log-max-size must be at least 1024 bytes");
        }
        if self.log_max_files == 0 {
            anyhow::bail!("--log-max-files must be at least 1");
        }
        let state_dir = if self.state_dir.is_absolute() {
            self.state_dir
        } else {
            std::env::current_dir()?.join(self.state_dir)
        };
        Ok(Config {
            socket: self.socket,
            socket_gid,
            state_dir,
            log_level: self.log_level,
            log: LogConfig {
                max_size: self.log_max_size,
                max_files: self.log_max_files,
            },
        })
    }
}
