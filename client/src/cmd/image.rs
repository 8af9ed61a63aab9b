//! `rsupctl image`: pull, push and tag (see `registry.rs`), import image
//! archives (OCI layout or `docker save` tarballs, gzip or not), list,
//! inspect and remove them.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use rsup_client::Client;
use rsup_client::proto::Image;
use serde_json::{Value, json};

use super::{Batch, inspect_each, say};
use crate::{format, size};

/// Manage images
#[derive(Args)]
pub struct Images {
    #[command(subcommand)]
    command: Verb,
}

#[derive(Subcommand)]
enum Verb {
    #[command(alias = "load")]
    Import(Import),
    #[command(alias = "list")]
    Ls(Ls),
    #[command(alias = "remove")]
    Rm(Rm),
    Inspect(Inspect),
    Pull(super::registry::Pull),
    Push(super::registry::Push),
    Tag(super::registry::Tag),
}

impl Images {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        match self.command {
            Verb::Import(c) => c.execute(client).await,
            Verb::Ls(c) => c.execute(client).await,
            Verb::Rm(c) => c.execute(client).await,
            Verb::Inspect(c) => c.execute(client).await,
            Verb::Pull(c) => c.execute(client).await,
            Verb::Push(c) => c.execute(client).await,
            Verb::Tag(c) => c.execute(client).await,
        }
    }
}

/// Import an OCI image layout or `docker save` tarball and print its id
#[derive(Args)]
struct Import {
    /// The archive (gzip-compressed or not)
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Name the image (NAME[:TAG]; default: the names in the archive)
    #[arg(long, value_name = "REF")]
    name: Option<String>,
}

impl Import {
    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let image = client
            .import_image(&self.file, self.name.as_deref())
            .await
            .with_context(|| format!("importing {}", self.file.display()))?;
        say(image.id)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// List images
#[derive(Args)]
struct Ls {
    /// Show full image ids
    #[arg(long)]
    no_trunc: bool,
}

impl Ls {
    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let images = client.list_images().await?;
        io::stdout()
            .lock()
            .write_all(table(&images, self.no_trunc).as_bytes())?;
        Ok(ExitCode::SUCCESS)
    }
}

/// `sha256:<hex>` shortened to 12 hex digits, as Docker shows ids.
fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

fn table(images: &[Image], no_trunc: bool) -> String {
    let header = [
        "REPOSITORY",
        "TAG",
        "IMAGE ID",
        "LAYERS",
        "SIZE",
        "CONTAINERS",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    for i in images {
        let id = if no_trunc {
            i.id.clone()
        } else {
            short_id(&i.id).to_owned()
        };
        let names: Vec<(String, String)> = if i.names.is_empty() {
            vec![("<none>".to_owned(), "<none>".to_owned())]
        } else {
            i.names
                .iter()
                .map(|n| match n.rsplit_once(':') {
                    Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), tag.to_owned()),
                    _ => (n.clone(), "<none>".to_owned()),
                })
                .collect()
        };
        for (repo, tag) in names {
            rows.push(vec![
                repo,
                tag,
                id.clone(),
                i.layers.len().to_string(),
                size::human(i.size_bytes),
                i.containers.len().to_string(),
            ]);
        }
    }
    format::table(&rows)
}

/// Remove images (refused while containers use them, unless --force)
#[derive(Args)]
struct Rm {
    /// Remove even if containers use the image (they keep their layers)
    #[arg(short, long)]
    force: bool,

    /// Image references, ids or id prefixes
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

impl Rm {
    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let mut batch = Batch::default();
        for name in &self.images {
            if let Some(reply) = batch.check(client.remove_image(name, self.force).await) {
                for n in &reply.untagged {
                    say(format!("Untagged: {n}"))?;
                }
                if reply.deleted
                    && let Some(image) = reply.image
                {
                    say(format!("Deleted: {}", image.id))?;
                }
            }
        }
        Ok(batch.exit_code())
    }
}

/// Show images as a JSON array
#[derive(Args)]
struct Inspect {
    /// Image references, ids or id prefixes
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

impl Inspect {
    async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        inspect_each(
            &self.images,
            async |name| client.inspect_image(name).await,
            to_json,
        )
        .await
    }
}

/// Docker-like keys, plus `Containers`: the containers made from the image.
fn to_json(i: &Image) -> Value {
    let c = i.config.clone().unwrap_or_default();
    json!({
        "Id": i.id,
        "RepoTags": i.names,
        "RepoDigests": i.repo_digests,
        "Created": i.created,
        "Architecture": i.architecture,
        "Os": i.os,
        "Size": i.size_bytes,
        "Config": {
            "Entrypoint": c.entrypoint,
            "Cmd": c.cmd,
            "Env": c.env,
            "WorkingDir": c.working_dir,
            "User": c.user,
            "Labels": c.labels,
            "ExposedPorts": c.exposed_ports,
        },
        "RootFS": {"Type": "layers", "Layers": i.layers},
        "ImportedAt": i.imported_at,
        "Containers": i.containers,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use rsup_client::proto::ImageConfig;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        images: Images,
    }

    fn image() -> Image {
        Image {
            id: format!("sha256:{}", "ab".repeat(32)),
            names: vec!["busybox:latest".to_owned(), "reg:5000/a/b:1.0".to_owned()],
            layers: vec!["sha256:11".to_owned(), "sha256:22".to_owned()],
            size_bytes: 2 << 20,
            created: "2026-01-01T00:00:00Z".to_owned(),
            architecture: "amd64".to_owned(),
            os: "linux".to_owned(),
            config: Some(ImageConfig {
                cmd: vec!["sh".to_owned()],
                ..Default::default()
            }),
            imported_at: "2026-11-29T08:00:00Z".to_owned(),
            containers: vec!["web".to_owned()],
            repo_digests: vec![],
        }
    }

    #[test]
    fn table_splits_repository_and_tag() {
        let mut unnamed = image();
        unnamed.names.clear();
        unnamed.containers.clear();
        let t = table(&[image(), unnamed], false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[1].starts_with("busybox "), "{t}");
        assert!(lines[1].contains(" latest "), "{t}");
        assert!(lines[1].contains(" abababababab "), "{t}");
        assert!(lines[2].starts_with("reg:5000/a/b "), "{t}");
        assert!(lines[2].contains(" 1.0 "), "{t}");
        assert!(lines[3].starts_with("<none> "), "{t}");
        assert!(table(&[image()], true).contains(&image().id));
    }

    #[test]
    fn json_has_docker_keys() {
        let v = to_json(&image());
        assert_eq!(v["RepoTags"][0], "busybox:latest");
        assert_eq!(v["Config"]["Cmd"][0], "sh");
        assert_eq!(v["RootFS"]["Layers"][1], "sha256:22");
        assert_eq!(v["Containers"][0], "web");
    }

    #[test]
    fn arguments_are_required() {
        for verb in ["import", "rm", "inspect"] {
            assert!(Cli::try_parse_from(["rsupctl", verb]).is_err(), "{verb}");
        }
        assert!(Cli::try_parse_from(["rsupctl", "ls"]).is_ok());
        assert!(Cli::try_parse_from(["rsupctl", "rm", "-f", "x"]).is_ok());
    }
}
