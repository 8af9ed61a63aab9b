//! The outer archive: an OCI image layout or a `docker save` tarball, either
//! possibly gzip-compressed (detected by magic bytes).
//!
//! The archive is unpacked into a staging directory (only directories,
//! regular files and symlinks; paths that are absolute or contain `..` are
//! refused), then read from there. Every file this module opens is resolved
//! inside the staging directory; a symlink pointing out of it is refused.
//!
//! When an archive holds both `index.json` and `manifest.json` (what `docker
//! save` writes since Docker 25), `index.json` is used: it is the OCI format,
//! and every hop from it (index, manifest, config, layers) is a descriptor
//! with a digest to verify. `manifest.json` is read only when there is no
//! `index.json`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os};
use serde::Deserialize;

use super::layer::{self, clean_path};
use super::limits::{Budget, Metered};
use crate::error::Error;

pub(crate) fn bad(reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field: "archive",
        reason: reason.into(),
    }
}

/// Unpacks the archive at `archive` into `dest` (created), charging its
/// uncompressed bytes to `budget` (see [`Budget::explain`] for the error
/// when it stops the read).
pub(crate) fn extract(archive: &Path, dest: &Path, budget: &Budget) -> Result<(), Error> {
    match fs::metadata(archive) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(bad(format!("{} is not a regular file", archive.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound(format!(
                "archive {}: no such file",
                archive.display()
            )));
        }
        Err(e) => return Err(bad(format!("{}: {e}", archive.display()))),
    }
    fs::create_dir_all(dest).map_err(crate::store::io_err("mkdir", dest))?;
    let gzip = layer::detect(archive).map_err(bad)? == layer::Compression::Gzip;
    let corrupt = |e: std::io::Error| {
        bad(if gzip {
            format!(
                "reading {}: truncated/corrupt gzip or tar: {e}",
                archive.display()
            )
        } else {
            format!("reading {}: truncated/corrupt tar: {e}", archive.display())
        })
    };
    let mut ar = tar::Archive::new(Metered::new(
        layer::open_decompressed(archive).map_err(bad)?,
        budget,
    ));
    ar.set_preserve_permissions(false);
    ar.set_preserve_ownerships(false);
    ar.set_overwrite(true);
    let mut entries = 0usize;
    for entry in ar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        clean_path(&raw).map_err(|r| bad(format!("archive entry {shown:?}: {r}")))?;
        let kind = entry.header().entry_type();
        if !(kind.is_dir() || kind.is_file() || kind.is_symlink() || kind.is_hard_link()) {
            continue;
        }
        // Each entry unpacked takes an inode.
        budget.charge_entry()?;
        if !entry.unpack_in(dest).map_err(corrupt)? {
            return Err(bad(format!(
                "archive entry {shown:?}: refused (outside the archive)"
            )));
        }
        entries += 1;
    }
    if entries == 0 {
        return Err(bad(format!(
            "{}: empty or not a tar archive",
            archive.display()
        )));
    }
    Ok(())
}

/// One layer of the image, to verify and unpack.
#[derive(Debug, Clone)]
pub(crate) struct LayerRef {
    /// The blob inside the staging directory; `None` for a pulled layer the
    /// store already had (it was not downloaded).
    pub path: Option<PathBuf>,
    /// The digest the blob must have (`None` for the legacy docker-save
    /// `<id>/layer.tar`, checked only by diff_id).
    pub blob_digest: Option<String>,
    /// The blob's digest was verified as it was written (a pull): not
    /// hashed again.
    pub blob_verified: bool,
    /// What the config says the uncompressed layer hashes to.
    pub diff_id: String,
}

/// What an archive describes, with the config verified.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// `sha256:<hex>` of the config blob: the image id.
    pub id: String,
    pub config: ImageConfiguration,
    /// The config blob as it is (what a push sends).
    pub config_bytes: Vec<u8>,
    pub layers: Vec<LayerRef>,
    /// References found in the archive, not yet normalized.
    pub names: Vec<String>,
}

/// Reads the layout unpacked in `dir`.
pub(crate) fn parse(dir: &Path) -> Result<Parsed, Error> {
    if dir.join("index.json").exists() {
        parse_oci(dir)
    } else if dir.join("manifest.json").exists() {
        parse_docker(dir)
    } else {
        Err(bad(
            "not an OCI layout or docker-save archive: no index.json or manifest.json",
        ))
    }
}

/// `dir/rel` if it resolves to a regular file inside `dir`.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf, Error> {
    let parts = clean_path(rel.as_bytes()).map_err(|r| bad(format!("{rel:?}: {r}")))?;
    let p = dir.join(parts.iter().collect::<PathBuf>());
    let canon_dir = dir
        .canonicalize()
        .map_err(crate::store::io_err("canonicalize", dir))?;
    let canon = p
        .canonicalize()
        .map_err(|e| bad(format!("{rel}: missing from the archive ({e})")))?;
    if !canon.starts_with(&canon_dir) {
        return Err(bad(format!("{rel}: points outside the archive")));
    }
    if !canon.is_file() {
        return Err(bad(format!("{rel}: not a regular file")));
    }
    Ok(canon)
}

/// The hex part of a `sha256:<64 hex>` digest.
pub(crate) fn sha256_hex(digest: &str) -> Result<&str, Error> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| bad(format!("unsupported digest {digest:?} (only sha256)")))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad(format!("malformed digest {digest:?}")));
    }
    Ok(hex)
}

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, Error> {
    let hex = sha256_hex(digest)?;
    inside(dir, &format!("blobs/sha256/{hex}"))
}

/// Reads a small JSON blob and checks its digest (and its size, when a
/// descriptor gives one).
fn read_verified(
    path: &Path,
    what: &str,
    digest: &str,
    size: Option<u64>,
) -> Result<Vec<u8>, Error> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|f| BufReader::new(f).take(64 << 20).read_to_end(&mut data))
        .map_err(|e| bad(format!("{what}: {e}")))?;
    check_size(what, size, data.len() as u64)?;
    let got = super::layer::sha256_digest(&data);
    if got != digest {
        return Err(bad(format!(
            "{what} digest mismatch: expected {digest}, got {got}"
        )));
    }
    Ok(data)
}

/// A descriptor's size must be the blob's.
pub(crate) fn check_size(what: &str, expected: Option<u64>, got: u64) -> Result<(), Error> {
    match expected {
        Some(e) if e != got => Err(bad(format!(
            "{what} size mismatch: the descriptor says {e} bytes, the blob has {got}"
        ))),
        _ => Ok(()),
    }
}

/// Architecture name of this machine as OCI spells it.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Index,
    Manifest,
}

fn kind_of(d: &Descriptor) -> Option<Kind> {
    match d.media_type() {
        MediaType::ImageIndex => Some(Kind::Index),
        MediaType::ImageManifest => Some(Kind::Manifest),
        MediaType::Other(s) if s == DOCKER_LIST => Some(Kind::Index),
        MediaType::Other(s) if s == DOCKER_MANIFEST => Some(Kind::Manifest),
        _ => None,
    }
}

fn parse_oci(dir: &Path) -> Result<Parsed, Error> {
    let index_path = inside(dir, "index.json")?;
    let index = ImageIndex::from_reader(
        File::open(&index_path).map_err(|e| bad(format!("index.json: {e}")))?,
    )
    .map_err(|e| bad(format!("index.json: {e}")))?;
    let mut names = Vec::new();
    let manifest = pick(dir, index.manifests(), &mut names, 0)?;
    let config_digest = manifest.config().digest().to_string();
    let config_bytes = read_verified(
        &blob_path(dir, &config_digest)?,
        &format!("config {config_digest}"),
        &config_digest,
        Some(manifest.config().size()),
    )?;
    let config = ImageConfiguration::from_reader(&config_bytes[..])
        .map_err(|e| bad(format!("config {config_digest}: {e}")))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(bad(format!(
            "the manifest lists {} layers but the config {} diff_ids",
            manifest.layers().len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (d, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let digest = d.digest().to_string();
        if let MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd =
            d.media_type()
        {
            return Err(bad(format!(
                "layer {digest}: unsupported layer compression: zstd"
            )));
        }
        sha256_hex(diff_id)?;
        let path = blob_path(dir, &digest)?;
        let len = fs::metadata(&path)
            .map_err(|e| bad(format!("layer {digest}: {e}")))?
            .len();
        check_size(&format!("layer {digest}"), Some(d.size()), len)?;
        layers.push(LayerRef {
            path: Some(path),
            blob_digest: Some(digest),
            blob_verified: false,
            diff_id: diff_id.clone(),
        });
    }
    Ok(Parsed {
        id: config_digest,
        config,
        config_bytes,
        layers,
        names,
    })
}

/// Follows index entries to the one image manifest for linux/<this arch>,
/// collecting the names annotated on the way.
fn pick(
    dir: &Path,
    descs: &[Descriptor],
    names: &mut Vec<String>,
    depth: usize,
) -> Result<ImageManifest, Error> {
    if depth > 4 {
        return Err(bad("image indexes nested too deep"));
    }
    let arch = host_arch();
    let usable: Vec<&Descriptor> = descs.iter().filter(|d| kind_of(d).is_some()).collect();
    let matching: Vec<&Descriptor> = usable
        .iter()
        .copied()
        .filter(|d| {
            d.platform()
                .as_ref()
                .is_some_and(|p| *p.os() == Os::Linux && p.architecture().to_string() == arch)
        })
        .collect();
    let candidates = if matching.is_empty() {
        usable
            .iter()
            .copied()
            .filter(|d| d.platform().is_none())
            .collect()
    } else {
        matching
    };
    let digests: BTreeSet<String> = candidates.iter().map(|d| d.digest().to_string()).collect();
    let chosen = match digests.len() {
        0 => {
            let platforms: Vec<String> = usable
                .iter()
                .filter_map(|d| d.platform().as_ref())
                .map(|p| format!("{}/{}", p.os(), p.architecture()))
                .collect();
            return Err(bad(format!(
                "no image manifest for linux/{arch} (found: {})",
                if platforms.is_empty() {
                    "none".to_string()
                } else {
                    platforms.join(", ")
                }
            )));
        }
        1 => digests.into_iter().next().unwrap_or_default(),
        n => {
            return Err(bad(format!(
                "the archive holds {n} different images for linux/{arch}; import one per archive"
            )));
        }
    };
    let mut kind = Kind::Manifest;
    let mut size = None;
    for d in candidates
        .iter()
        .filter(|d| d.digest().to_string() == chosen)
    {
        kind = kind_of(d).unwrap_or(Kind::Manifest);
        size = Some(d.size());
        if let Some(a) = d.annotations() {
            if let Some(n) = a.get(CONTAINERD_NAME) {
                names.push(n.clone());
            } else if let Some(n) = a.get(oci_spec::image::ANNOTATION_REF_NAME) {
                // Often only a tag ("latest", "1.36"): a name needs a
                // repository, so a bare word without '/' or ':' is left out.
                if n.contains('/') || n.contains(':') {
                    names.push(n.clone());
                }
            }
        }
    }
    let bytes = read_verified(
        &blob_path(dir, &chosen)?,
        &format!("manifest {chosen}"),
        &chosen,
        size,
    )?;
    match kind {
        Kind::Index => {
            let idx = ImageIndex::from_reader(&bytes[..])
                .map_err(|e| bad(format!("index {chosen}: {e}")))?;
            pick(dir, idx.manifests(), names, depth + 1)
        }
        Kind::Manifest => ImageManifest::from_reader(&bytes[..])
            .map_err(|e| bad(format!("manifest {chosen}: {e}"))),
    }
}

/// One image of a docker-save `manifest.json`.
#[derive(Debug, Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// The sha256 hex a docker-save file name carries (`blobs/sha256/<hex>` or
/// `<hex>.json`), if any.
fn hex_in_name(rel: &str) -> Option<String> {
    let base = rel.rsplit('/').next()?;
    let base = base.strip_suffix(".json").unwrap_or(base);
    let d = format!("sha256:{base}");
    if sha256_hex(&d).is_ok() {
        Some(d)
    } else {
        None
    }
}

fn parse_docker(dir: &Path) -> Result<Parsed, Error> {
    let path = inside(dir, "manifest.json")?;
    let data = fs::read(&path).map_err(|e| bad(format!("manifest.json: {e}")))?;
    let manifests: Vec<DockerManifest> =
        serde_json::from_slice(&data).map_err(|e| bad(format!("manifest.json: {e}")))?;
    let first = manifests
        .first()
        .ok_or_else(|| bad("manifest.json lists no image"))?;
    if manifests.iter().any(|m| m.config != first.config) {
        return Err(bad(format!(
            "manifest.json lists {} different images; import one per archive",
            manifests.len()
        )));
    }
    let config_digest = hex_in_name(&first.config).ok_or_else(|| {
        bad(format!(
            "config {:?}: the file name carries no sha256 digest to verify",
            first.config
        ))
    })?;
    let config_bytes = read_verified(
        &inside(dir, &first.config)?,
        &format!("config {config_digest}"),
        &config_digest,
        None,
    )?;
    let config = ImageConfiguration::from_reader(&config_bytes[..])
        .map_err(|e| bad(format!("config {config_digest}: {e}")))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != first.layers.len() {
        return Err(bad(format!(
            "manifest.json lists {} layers but the config {} diff_ids",
            first.layers.len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (rel, diff_id) in first.layers.iter().zip(diff_ids) {
        sha256_hex(diff_id)?;
        // `blobs/sha256/<hex>` is content-addressed; the legacy
        // `<id>/layer.tar` is not, and is checked by its diff_id only.
        let blob_digest = if rel.starts_with("blobs/") {
            hex_in_name(rel)
        } else {
            None
        };
        layers.push(LayerRef {
            path: Some(inside(dir, rel)?),
            blob_digest,
            blob_verified: false,
            diff_id: diff_id.clone(),
        });
    }
    let names = manifests
        .iter()
        .flat_map(|m| m.repo_tags.iter().flatten().cloned())
        .collect();
    Ok(Parsed {
        id: config_digest,
        config,
        config_bytes,
        layers,
        names,
    })
}
