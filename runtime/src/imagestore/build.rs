//! Builds OCI image-layout and `docker save` tarballs from lists of entries
//! or host directories; used by tests and benchmarks.
//!
//! The archives are the real formats (content-addressed blobs, descriptors
//! with digests and sizes, a config whose `rootfs.diff_ids` are the sha256
//! of the uncompressed layer tars), so what [`super::ImageStore::import`]
//! verifies is computed here independently, with `tar`, `flate2` and `sha2`.
//! [`BuildOptions::diff_ids`] lets a test build a config that lies.
//!
//! Whiteouts and opaque markers are ordinary empty files with the AUFS names
//! (`.wh.NAME`, `.wh..wh..opq`), as in any image. Entry paths are written
//! as given, even absolute or with `..`, so hostile archives can be built.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::ImageConfig;
use super::archive::host_arch;
use super::layer::hex;

/// What an entry of a layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with this content.
    File(Vec<u8>),
    /// A regular file whose content is read from this host file when the
    /// layer is built (for big trees: nothing is loaded up front).
    HostFile(PathBuf),
    Dir,
    /// A symlink to this target (kept as is, absolute or not).
    Symlink(String),
    /// A hard link to this path of the same layer.
    Hardlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One entry of a layer tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Path in the layer, relative (`etc/passwd`); written verbatim.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: u64,
}

/// The mtime the constructors give (2023-11-14T22:13:20Z).
pub const DEFAULT_MTIME: u64 = 1_700_000_000;

impl TarEntry {
    pub fn new(path: &str, kind: EntryKind, mode: u32) -> TarEntry {
        TarEntry {
            path: path.to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
        }
    }

    /// A regular file, mode 0644.
    pub fn file(path: &str, data: impl Into<Vec<u8>>) -> TarEntry {
        TarEntry::new(path, EntryKind::File(data.into()), 0o644)
    }

    /// A directory, mode 0755.
    pub fn dir(path: &str) -> TarEntry {
        TarEntry::new(path, EntryKind::Dir, 0o755)
    }

    pub fn symlink(path: &str, target: &str) -> TarEntry {
        TarEntry::new(path, EntryKind::Symlink(target.to_string()), 0o777)
    }

    pub fn hardlink(path: &str, target: &str) -> TarEntry {
        TarEntry::new(path, EntryKind::Hardlink(target.to_string()), 0o644)
    }

    /// The whiteout that removes `path` of the layers below
    /// (`dir/.wh.name`).
    pub fn whiteout(path: &str) -> TarEntry {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        TarEntry::file(&format!("{dir}.wh.{name}"), Vec::new())
    }

    /// The marker that makes `dir` opaque (hides the layers below's content
    /// of it): `dir/.wh..wh..opq`.
    pub fn opaque(dir: &str) -> TarEntry {
        TarEntry::file(
            &format!("{}/.wh..wh..opq", dir.trim_end_matches('/')),
            Vec::new(),
        )
    }

    pub fn with_mode(mut self, mode: u32) -> TarEntry {
        self.mode = mode;
        self
    }

    pub fn with_owner(mut self, uid: u64, gid: u64) -> TarEntry {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn with_mtime(mut self, mtime: u64) -> TarEntry {
        self.mtime = mtime;
        self
    }
}

/// The entries of a host directory tree, under `prefix` in the layer (""
/// for the root): directories, regular files (read when the layer is built),
/// symlinks; modes, owners and mtimes as on the host. Sorted, parents first.
pub fn entries_from_dir(dir: &Path, prefix: &str) -> io::Result<Vec<TarEntry>> {
    let mut out = Vec::new();
    walk(dir, prefix.trim_matches('/'), &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<TarEntry>) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let host = dir.join(&name);
        let name = name.to_string_lossy();
        let path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let m = fs::symlink_metadata(&host)?;
        let kind = if m.is_dir() {
            EntryKind::Dir
        } else if m.file_type().is_symlink() {
            EntryKind::Symlink(fs::read_link(&host)?.to_string_lossy().into_owned())
        } else if m.is_file() {
            EntryKind::HostFile(host.clone())
        } else {
            continue;
        };
        out.push(TarEntry {
            path: path.clone(),
            kind: kind.clone(),
            mode: m.permissions().mode() & 0o7777,
            uid: u64::from(m.uid()),
            gid: u64::from(m.gid()),
            mtime: u64::try_from(m.mtime()).unwrap_or(0),
        });
        if kind == EntryKind::Dir {
            walk(&host, &path, out)?;
        }
    }
    Ok(())
}

/// A busybox root: `bin/busybox` (the host binary at `busybox`) and a
/// symlink `bin/<applet> -> busybox` for each applet, plus `etc/`, `tmp/`
/// (1777) and `data/`.
pub fn busybox_rootfs(busybox: &Path, applets: &[&str]) -> Vec<TarEntry> {
    let mut out = vec![
        TarEntry::dir("bin"),
        TarEntry::new(
            "bin/busybox",
            EntryKind::HostFile(busybox.to_path_buf()),
            0o755,
        ),
    ];
    for a in applets {
        out.push(TarEntry::symlink(&format!("bin/{a}"), "busybox"));
    }
    out.push(TarEntry::dir("etc"));
    out.push(TarEntry::dir("tmp").with_mode(0o1777));
    out.push(TarEntry::dir("data"));
    out
}

/// The two-layer image tests and benchmarks use: layer 1 = `base` (e.g.
/// [`busybox_rootfs`] or [`entries_from_dir`]) plus `etc/removed.txt` and
/// `data/a.txt`; layer 2 = `data/b.txt` and a whiteout of
/// `etc/removed.txt`. In the merged view `removed.txt` is gone and both
/// `a.txt` and `b.txt` are there.
pub fn two_layers(base: Vec<TarEntry>) -> Vec<Vec<TarEntry>> {
    let mut l1 = base;
    for d in ["etc", "data"] {
        if !l1.iter().any(|e| e.path.trim_end_matches('/') == d) {
            l1.push(TarEntry::dir(d));
        }
    }
    l1.push(TarEntry::file("etc/removed.txt", "removed in layer 2\n"));
    l1.push(TarEntry::file("data/a.txt", "a from layer 1\n"));
    let l2 = vec![
        TarEntry::dir("data"),
        TarEntry::file("data/b.txt", "b from layer 2\n"),
        TarEntry::dir("etc"),
        TarEntry::whiteout("etc/removed.txt"),
    ];
    vec![l1, l2]
}

/// The uncompressed tar of `entries`, in order, ending with the two zero
/// blocks.
pub fn layer_tar(entries: &[TarEntry]) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        append_entry(&mut b, e)?;
    }
    b.into_inner()
}

fn append_entry(b: &mut tar::Builder<Vec<u8>>, e: &TarEntry) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mode(e.mode);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mtime(e.mtime);
    h.set_size(0);
    let mut data: Box<dyn Read> = Box::new(io::empty());
    match &e.kind {
        EntryKind::File(d) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(d.len() as u64);
            data = Box::new(io::Cursor::new(d.clone()));
        }
        EntryKind::HostFile(p) => {
            let f = File::open(p)?;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(f.metadata()?.len());
            data = Box::new(f);
        }
        EntryKind::Dir => h.set_entry_type(tar::EntryType::Directory),
        EntryKind::Symlink(t) | EntryKind::Hardlink(t) => {
            h.set_entry_type(if matches!(e.kind, EntryKind::Symlink(_)) {
                tar::EntryType::Symlink
            } else {
                tar::EntryType::Link
            });
            if t.len() > 100 {
                return b.append_link(&mut h, &e.path, t);
            }
            h.set_link_name_literal(t)?;
        }
        EntryKind::CharDevice { major, minor } => {
            h.set_entry_type(tar::EntryType::Char);
            h.set_device_major(*major)?;
            h.set_device_minor(*minor)?;
        }
        EntryKind::Fifo => {
            h.set_entry_type(tar::EntryType::Fifo);
            h.set_device_major(0)?;
            h.set_device_minor(0)?;
        }
    }
    let name = e.path.as_bytes();
    if name.len() <= 100 {
        // Verbatim, bypassing the checks of set_path, so tests can build
        // hostile archives (absolute paths, `..`).
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, data)
    } else {
        b.append_data(&mut h, &e.path, data)
    }
}

/// How to build an image archive.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The name recorded in the archive (OCI: `io.containerd.image.name`
    /// plus the tag as `org.opencontainers.image.ref.name`, as Docker
    /// writes them; docker-save: `RepoTags`).
    pub ref_name: Option<String>,
    pub gzip_layers: bool,
    pub gzip_outer: bool,
    /// Written into the config instead of the real diff_ids (to test that
    /// a lying config is refused).
    pub diff_ids: Option<Vec<String>>,
    /// Default: this machine's, as OCI spells it (`amd64`, `arm64`).
    pub architecture: String,
    pub created: Option<String>,
    /// OCI only: index.json points to a nested multi-platform index with a
    /// manifest for another architecture before this one's.
    pub multi_platform: bool,
    /// docker-save only: the pre-Docker-25 layout (`<n>/layer.tar`,
    /// `<hex>.json`, manifest.json only) instead of the current one (blobs
    /// under `blobs/sha256`, manifest.json and index.json).
    pub legacy_docker_layout: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            ref_name: None,
            gzip_layers: false,
            gzip_outer: false,
            diff_ids: None,
            architecture: host_arch().to_string(),
            created: Some("2024-01-02T03:04:05Z".to_string()),
            multi_platform: false,
            legacy_docker_layout: false,
        }
    }
}

/// What was built: the digests an import must find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// `sha256:` of the config blob: the image id.
    pub id: String,
    /// The real diff_ids, bottom first.
    pub diff_ids: Vec<String>,
    /// Digests of the layer blobs as stored (compressed if gzip_layers).
    pub layer_digests: Vec<String>,
    /// The config blob (to find and corrupt in tests).
    pub config: Vec<u8>,
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data)?;
    enc.finish()
}

struct Blobs {
    diff_ids: Vec<String>,
    layers: Vec<(String, Vec<u8>)>,
}

fn build_layers(layers: &[Vec<TarEntry>], gzip_layers: bool) -> io::Result<Blobs> {
    let mut out = Blobs {
        diff_ids: Vec::new(),
        layers: Vec::new(),
    };
    for entries in layers {
        let tar = layer_tar(entries)?;
        out.diff_ids.push(sha256(&tar));
        let blob = if gzip_layers { gzip(&tar)? } else { tar };
        out.layers.push((sha256(&blob), blob));
    }
    Ok(out)
}

fn config_json(
    config: &ImageConfig,
    diff_ids: &[String],
    arch: &str,
    created: Option<&str>,
) -> Vec<u8> {
    let ports: BTreeMap<&str, serde_json::Value> = config
        .exposed_ports
        .iter()
        .map(|p| (p.as_str(), json!({})))
        .collect();
    let mut c = json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Entrypoint": config.entrypoint,
            "Cmd": config.cmd,
            "Env": config.env,
            "WorkingDir": config.working_dir,
            "User": config.user,
            "Labels": config.labels,
            "ExposedPorts": ports,
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    if let (Some(t), Some(obj)) = (created, c.as_object_mut()) {
        obj.insert("created".into(), json!(t));
    }
    // serde_json's to_vec of a Value cannot fail.
    serde_json::to_vec(&c).unwrap_or_default()
}

/// Writes the outer tar: `files` in order, with the directories they need.
fn write_outer(out: &Path, files: &[(String, &[u8])], gzip_outer: bool) -> io::Result<()> {
    let f = File::create(out)?;
    let w: Box<dyn Write> = if gzip_outer {
        Box::new(GzEncoder::new(f, Compression::fast()))
    } else {
        Box::new(io::BufWriter::new(f))
    };
    let mut b = tar::Builder::new(w);
    let mut dirs = std::collections::BTreeSet::new();
    for (path, data) in files {
        let mut parent = String::new();
        for comp in path
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            parent = if parent.is_empty() {
                comp.to_string()
            } else {
                format!("{parent}/{comp}")
            };
            if dirs.insert(parent.clone()) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_mtime(DEFAULT_MTIME);
                h.set_size(0);
                b.append_data(&mut h, format!("{parent}/"), io::empty())?;
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(DEFAULT_MTIME);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, *data)?;
    }
    let mut w = b.into_inner()?;
    w.flush()?;
    Ok(())
}

fn layer_media_type(gz: bool) -> &'static str {
    if gz {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    }
}

fn manifest_json(config: &[u8], layers: &[(String, Vec<u8>)], gz: bool) -> Vec<u8> {
    let m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config),
            "size": config.len(),
        },
        "layers": layers.iter().map(|(d, b)| json!({
            "mediaType": layer_media_type(gz),
            "digest": d,
            "size": b.len(),
        })).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&m).unwrap_or_default()
}

fn ref_annotations(ref_name: Option<&str>) -> serde_json::Value {
    match ref_name {
        Some(r) => {
            let slash = r.rfind('/').map_or(0, |i| i + 1);
            let tag = r[slash..].rsplit_once(':').map_or("latest", |(_, t)| t);
            json!({
                "io.containerd.image.name": r,
                "org.opencontainers.image.ref.name": tag,
            })
        }
        None => json!({}),
    }
}

/// The layer blobs, the diff_ids the config states (the real ones unless
/// `opts` gives others) and the config blob: what both formats start from.
fn layers_and_config(
    layers: &[Vec<TarEntry>],
    config: &ImageConfig,
    opts: &BuildOptions,
) -> io::Result<(Blobs, Vec<String>, Vec<u8>)> {
    let blobs = build_layers(layers, opts.gzip_layers)?;
    let diff_ids = opts
        .diff_ids
        .clone()
        .unwrap_or_else(|| blobs.diff_ids.clone());
    let cfg = config_json(
        config,
        &diff_ids,
        &opts.architecture,
        opts.created.as_deref(),
    );
    Ok((blobs, diff_ids, cfg))
}

/// Writes an OCI image layout tarball of `layers` (bottom first) to `out`.
pub fn oci_layout_tar(
    out: &Path,
    layers: &[Vec<TarEntry>],
    config: &ImageConfig,
    opts: &BuildOptions,
) -> io::Result<BuiltImage> {
    let (blobs, diff_ids, cfg) = layers_and_config(layers, config, opts)?;
    let manifest = manifest_json(&cfg, &blobs.layers, opts.gzip_layers);
    let mut files: Vec<(String, Vec<u8>)> = vec![(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let blob = |data: &[u8]| {
        (
            format!("blobs/sha256/{}", &sha256(data)[7..]),
            data.to_vec(),
        )
    };
    let annotations = ref_annotations(opts.ref_name.as_deref());
    let top = if opts.multi_platform {
        let other_arch = if opts.architecture == "s390x" {
            "amd64"
        } else {
            "s390x"
        };
        let other_cfg = config_json(config, &diff_ids, other_arch, opts.created.as_deref());
        let other_manifest = manifest_json(&other_cfg, &blobs.layers, opts.gzip_layers);
        let nested = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha256(&other_manifest), "size": other_manifest.len(),
                    "platform": { "architecture": other_arch, "os": "linux" },
                },
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha256(&manifest), "size": manifest.len(),
                    "platform": { "architecture": opts.architecture, "os": "linux" },
                },
            ],
        });
        let nested = serde_json::to_vec(&nested).unwrap_or_default();
        files.push(blob(&other_cfg));
        files.push(blob(&other_manifest));
        files.push(blob(&nested));
        json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": sha256(&nested), "size": nested.len(),
            "annotations": annotations,
        })
    } else {
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest), "size": manifest.len(),
            "annotations": annotations,
        })
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [top],
    });
    files.push((
        "index.json".into(),
        serde_json::to_vec(&index).unwrap_or_default(),
    ));
    files.push(blob(&cfg));
    files.push(blob(&manifest));
    for (d, data) in &blobs.layers {
        files.push((format!("blobs/sha256/{}", &d[7..]), data.clone()));
    }
    let refs: Vec<(String, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.clone(), d.as_slice()))
        .collect();
    write_outer(out, &refs, opts.gzip_outer)?;
    Ok(BuiltImage {
        id: sha256(&cfg),
        diff_ids: blobs.diff_ids,
        layer_digests: blobs.layers.iter().map(|(d, _)| d.clone()).collect(),
        config: cfg,
    })
}

/// Writes a `docker save` tarball of `layers` (bottom first) to `out`, in
/// the current layout (blobs/sha256, manifest.json and index.json) or the
/// legacy one (see [`BuildOptions::legacy_docker_layout`]).
pub fn docker_save_tar(
    out: &Path,
    layers: &[Vec<TarEntry>],
    config: &ImageConfig,
    opts: &BuildOptions,
) -> io::Result<BuiltImage> {
    let (blobs, _, cfg) = layers_and_config(layers, config, opts)?;
    let cfg_hex = sha256(&cfg)[7..].to_string();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let (config_path, layer_paths): (String, Vec<String>) = if opts.legacy_docker_layout {
        (
            format!("{cfg_hex}.json"),
            (0..blobs.layers.len())
                .map(|i| format!("{:064x}/layer.tar", i + 1))
                .collect(),
        )
    } else {
        (
            format!("blobs/sha256/{cfg_hex}"),
            blobs
                .layers
                .iter()
                .map(|(d, _)| format!("blobs/sha256/{}", &d[7..]))
                .collect(),
        )
    };
    let manifest = json!([{
        "Config": config_path,
        "RepoTags": opts.ref_name.as_ref().map(|r| vec![r.clone()]),
        "Layers": layer_paths,
    }]);
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap_or_default(),
    ));
    if !opts.legacy_docker_layout {
        let oci_manifest = manifest_json(&cfg, &blobs.layers, opts.gzip_layers);
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256(&oci_manifest), "size": oci_manifest.len(),
                "annotations": ref_annotations(opts.ref_name.as_deref()),
            }],
        });
        files.push((
            "index.json".into(),
            serde_json::to_vec(&index).unwrap_or_default(),
        ));
        files.push((
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ));
        files.push((
            format!("blobs/sha256/{}", &sha256(&oci_manifest)[7..]),
            oci_manifest,
        ));
    }
    files.push((config_path, cfg.clone()));
    for (p, (_, data)) in layer_paths.iter().zip(&blobs.layers) {
        files.push((p.clone(), data.clone()));
    }
    let refs: Vec<(String, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.clone(), d.as_slice()))
        .collect();
    write_outer(out, &refs, opts.gzip_outer)?;
    Ok(BuiltImage {
        id: sha256(&cfg),
        diff_ids: blobs.diff_ids,
        layer_digests: blobs.layers.iter().map(|(d, _)| d.clone()).collect(),
        config: cfg,
    })
}
