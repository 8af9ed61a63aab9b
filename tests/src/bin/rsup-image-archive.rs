//! rsup-image-archive: writes an image archive for benchmarks and manual
//! tries: a busybox root (every applet) plus, in a second layer, `--mb`
//! MiB of incompressible data (`/data/blob-NNN`, 1 MiB each). `docker save`
//! format by default (which podman loads too), or an OCI image layout.
//!
//!     rsup-image-archive /tmp/big.tar --mb 100 --name bench:latest

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use rsup_runtime::imagestore::ImageConfig;
use rsup_runtime::imagestore::build::{self, BuildOptions, EntryKind, TarEntry};

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Docker,
    Oci,
}

#[derive(Parser)]
struct Cli {
    /// Where to write the archive.
    out: PathBuf,
    /// MiB of random data in the second layer.
    #[arg(long, default_value_t = 100)]
    mb: usize,
    #[arg(long, value_enum, default_value_t = Format::Docker)]
    format: Format,
    /// The name recorded in the archive.
    #[arg(long, default_value = "rsup-bench:latest")]
    name: String,
    /// gzip the layers.
    #[arg(long)]
    gzip: bool,
    /// busybox-static binary for the base layer.
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
}

fn applets(busybox: &Path) -> Result<Vec<String>> {
    let out = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("{} --list", busybox.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_owned)
        .collect())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let names = applets(&cli.busybox)?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut base = build::busybox_rootfs(&cli.busybox, &refs);
    base.push(TarEntry::file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\n",
    ));
    base.push(TarEntry::file("etc/group", "root:x:0:\n"));

    // The data files are written next to the output and read when the
    // layer is built, so nothing big is held in memory.
    let scratch = cli.out.with_extension("data");
    fs::create_dir_all(&scratch).with_context(|| format!("mkdir {}", scratch.display()))?;
    let mut urandom = fs::File::open("/dev/urandom")?;
    let mut data = vec![TarEntry::dir("data")];
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..cli.mb {
        let path = scratch.join(format!("blob-{i:03}"));
        urandom.read_exact(&mut buf)?;
        fs::File::create(&path)?.write_all(&buf)?;
        data.push(TarEntry::new(
            &format!("data/blob-{i:03}"),
            EntryKind::HostFile(path),
            0o644,
        ));
    }
    let config = ImageConfig {
        cmd: vec!["sh".into()],
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    };
    let opts = BuildOptions {
        ref_name: Some(cli.name.clone()),
        gzip_layers: cli.gzip,
        ..Default::default()
    };
    let layers = vec![base, data];
    let built = match cli.format {
        Format::Docker => build::docker_save_tar(&cli.out, &layers, &config, &opts),
        Format::Oci => build::oci_layout_tar(&cli.out, &layers, &config, &opts),
    }
    .with_context(|| format!("writing {}", cli.out.display()))?;
    fs::remove_dir_all(&scratch)?;
    println!("{} {}", built.id, cli.out.display());
    Ok(())
}
