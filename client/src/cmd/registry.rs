//! `rsupctl pull`, `push`, `tag`, `login` and `logout` (also under
//! `rsupctl image`). rsupd does the pulling and pushing; rsupctl shows the
//! progress it streams (a bar per layer on a terminal, plain lines
//! otherwise) and sends the credentials `login` stored for the reference's
//! registry.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rsup_client::auth::AuthFile;
use rsup_client::proto::image_progress::Event;
use rsup_client::{Client, ImageProgress, RegistryLogin, registry_of};

use super::say;

/// Pull an image from a registry
#[derive(Args)]
pub struct Pull {
    /// Print only the image id
    #[arg(short, long)]
    quiet: bool,

    /// [HOST[:PORT]/]NAME[:TAG|@sha256:DIGEST]
    #[arg(value_name = "NAME")]
    reference: String,
}

impl Pull {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let image = pull(client, &self.reference, !self.quiet, Output::Stdout).await?;
        if self.quiet {
            say(image.id)?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Where progress goes: `pull` and `push` print it on stdout, as Docker
/// does; `run` and `create` on stderr (stdout is the container's).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

/// Pulls with the stored login of the reference's registry, showing
/// progress when `show`.
pub async fn pull(
    client: &Client,
    reference: &str,
    show: bool,
    out: Output,
) -> anyhow::Result<rsup_client::proto::Image> {
    let login = stored_login(reference)?;
    let mut view = Progress::new(show, out);
    view.line(&format!("Pulling from {reference}"));
    let image = client
        .pull_image(reference, login.as_ref(), |p| view.update(p))
        .await
        .with_context(|| format!("pulling {reference}"))?;
    view.finish();
    if let Some(d) = &view.digest {
        view.line(&format!("Digest: {d}"));
    }
    view.line(&format!(
        "Status: image {} pulled as {reference}",
        short(&image.id)
    ));
    Ok(image)
}

/// Push an image to a registry
#[derive(Args)]
pub struct Push {
    /// Print only the manifest digest
    #[arg(short, long)]
    quiet: bool,

    /// HOST[:PORT]/NAME[:TAG]: a local image name, which says where it goes
    #[arg(value_name = "NAME")]
    reference: String,
}

impl Push {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let login = stored_login(&self.reference)?;
        let mut view = Progress::new(!self.quiet, Output::Stdout);
        view.line(&format!("Pushing {}", self.reference));
        let digest = client
            .push_image(&self.reference, login.as_ref(), |p| view.update(p))
            .await
            .with_context(|| format!("pushing {}", self.reference))?;
        view.finish();
        if self.quiet {
            say(&digest)?;
        } else {
            say(format!("{}: digest: {digest}", self.reference))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Give an image another name (SOURCE: name, id or id prefix)
#[derive(Args)]
pub struct Tag {
    #[arg(value_name = "SOURCE")]
    source: String,
    #[arg(value_name = "TARGET")]
    target: String,
}

impl Tag {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        client
            .tag_image(&self.source, &self.target)
            .await
            .with_context(|| format!("tagging {} as {}", self.source, self.target))?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Log in to a registry (rsupd checks the credentials; rsupctl keeps them
/// in a file only you can read)
#[derive(Args)]
pub struct Login {
    #[arg(short, long)]
    username: Option<String>,

    /// The password (visible to other users in the process list: prefer
    /// --password-stdin)
    #[arg(short, long)]
    password: Option<String>,

    /// Read the password from stdin
    #[arg(long)]
    password_stdin: bool,

    /// HOST[:PORT] of the registry
    #[arg(value_name = "SERVER", default_value = "docker.io")]
    server: String,
}

impl Login {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let Some(username) = self.username.filter(|u| !u.is_empty()) else {
            bail!("a user name is needed: --username NAME");
        };
        let password = match (self.password, self.password_stdin) {
            (Some(_), true) => bail!("--password and --password-stdin are exclusive"),
            (Some(p), false) => p,
            (None, true) => {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the password from stdin")?;
                s.trim_end_matches(['\n', '\r']).to_string()
            }
            (None, false) => bail!("a password is needed: --password-stdin (or --password)"),
        };
        if password.is_empty() {
            bail!("the password is empty");
        }
        let login = RegistryLogin { username, password };
        client
            .registry_login(&self.server, &login)
            .await
            .with_context(|| format!("logging in to {}", self.server))?;
        let path = AuthFile::default_path();
        let mut file = AuthFile::load(&path)?;
        file.set(&self.server, &login);
        file.save()?;
        say("Login Succeeded")?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Forget the login of a registry
#[derive(Args)]
pub struct Logout {
    /// HOST[:PORT] of the registry
    #[arg(value_name = "SERVER", default_value = "docker.io")]
    server: String,
}

impl Logout {
    pub async fn execute(self, _client: &Client) -> anyhow::Result<ExitCode> {
        let path = AuthFile::default_path();
        let mut file = AuthFile::load(&path)?;
        if file.remove(&self.server) {
            file.save()?;
            say(format!("Removing login credentials for {}", self.server))?;
        } else {
            say(format!("Not logged in to {}", self.server))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The login `rsupctl login` stored for `reference`'s registry.
fn stored_login(reference: &str) -> anyhow::Result<Option<RegistryLogin>> {
    let file = AuthFile::load(&AuthFile::default_path())?;
    file.get(registry_of(reference))
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

/// Shows a pull's or push's progress: on a terminal, a bar per layer; else
/// one line per layer each time its status changes.
struct Progress {
    show: bool,
    out: Output,
    bars: Option<MultiProgress>,
    layers: HashMap<String, ProgressBar>,
    last_status: HashMap<String, String>,
    digest: Option<String>,
}

impl Progress {
    fn new(show: bool, out: Output) -> Progress {
        let tty = match out {
            Output::Stdout => std::io::stdout().is_terminal(),
            Output::Stderr => std::io::stderr().is_terminal(),
        };
        let bars = (show && tty).then(|| {
            MultiProgress::with_draw_target(match out {
                Output::Stdout => ProgressDrawTarget::stdout(),
                Output::Stderr => ProgressDrawTarget::stderr(),
            })
        });
        Progress {
            show,
            out,
            bars,
            layers: HashMap::new(),
            last_status: HashMap::new(),
            digest: None,
        }
    }

    fn line(&self, s: &str) {
        if !self.show {
            return;
        }
        match (&self.bars, self.out) {
            (Some(b), _) => {
                let _ = b.println(s);
            }
            (None, Output::Stdout) => {
                let _ = say(s);
            }
            (None, Output::Stderr) => eprintln!("{s}"),
        }
    }

    fn update(&mut self, p: &ImageProgress) {
        match &p.event {
            Some(Event::Resolved(r)) => {
                self.digest = Some(r.digest.clone());
                if let Some(m) = &self.bars {
                    let style = ProgressStyle::with_template(
                        "{prefix}: {msg:<18} [{bar:30}] {bytes}/{total_bytes}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                    for l in &r.layers {
                        let bar = m.add(ProgressBar::new(l.size));
                        bar.set_style(style.clone());
                        bar.set_prefix(short(&l.digest).to_string());
                        bar.set_message("waiting");
                        self.layers.insert(l.digest.clone(), bar);
                    }
                }
            }
            Some(Event::Layer(l)) => {
                if let Some(bar) = self.layers.get(&l.digest) {
                    if l.total > 0 {
                        bar.set_length(l.total);
                        bar.set_position(l.current);
                    }
                    bar.set_message(l.status.clone());
                    if l.status == "pull complete"
                        || l.status == "already exists"
                        || l.status == "pushed"
                    {
                        bar.finish();
                    }
                } else if self.bars.is_none() && self.last_status.get(&l.digest) != Some(&l.status)
                {
                    self.last_status.insert(l.digest.clone(), l.status.clone());
                    let s = if l.status == "resuming" {
                        format!(
                            "{}: resuming at {} of {} bytes",
                            short(&l.digest),
                            l.current,
                            l.total
                        )
                    } else {
                        format!("{}: {}", short(&l.digest), l.status)
                    };
                    self.line(&s);
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        for bar in self.layers.values() {
            if !bar.is_finished() {
                bar.finish();
            }
        }
    }
}
