//! Images: import of OCI image-layout and `docker save` tarballs into a
//! content-addressed layer store, for containers to use as overlayfs lower
//! layers.
//!
//! Layout under the store's root (`<state>/images` in rsupd; see
//! `docs/images.md`):
//!
//! ```text
//! lock                    flock(2)ed (exclusive, blocking) while an import
//!                         commits, an image is removed or layers are gc'ed
//! images/<hex>.json       one record per image, <hex> = config digest (= id)
//! layers/<hex>/layer.json the layer's record, <hex> = its diff_id
//! layers/<hex>/diff/      the unpacked tree, with overlay whiteouts
//! layers/<hex>/blob       the layer's blob as it arrived (compressed or not),
//!                         kept for a push (a hard link where possible)
//! configs/<hex>           the image's config blob as it arrived (for a push)
//! downloads/<hex>[.partial] blobs a pull fetched (`.partial`: still coming;
//!                         a later pull resumes it); swept after a day
//! tmp/<unique>/           staging of one running import (plus <unique>.lock,
//!                         flock'ed by that import); leftovers are swept by
//!                         `ImageStore::open`
//! ```
//!
//! Invariants: a directory under `layers/` is complete (it was unpacked in
//! `tmp/` and renamed into place) and its content hashes to its name; an
//! image record is written last, after all its layers are in place; a layer
//! is removed only under the lock, when no image record names it and the
//! caller does not list it as mounted. Every digest in an archive is
//! verified before anything lands in `layers/` or `images/`.

mod archive;
pub mod build;
mod layer;
pub mod limits;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::store::{self, io_err};
use archive::bad;
pub(crate) use archive::{host_arch, sha256_hex};
pub(crate) use layer::{hex, sha256_digest};
use limits::{Budget, UnpackLimits};

/// An imported image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:<hex>` digest of the config blob (Docker's image id).
    pub id: String,
    /// Normalized references `name:tag`; may be empty.
    pub names: Vec<String>,
    /// `name@sha256:...` of the manifests it was pulled by (Docker's
    /// RepoDigests).
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// diff_ids (`sha256:<hex>` of the uncompressed layer tars), bottom first.
    pub layers: Vec<String>,
    /// Sum of the sizes of the regular files of the layers, in bytes.
    pub size: u64,
    /// From the config, RFC 3339.
    pub created: Option<String>,
    pub architecture: String,
    pub os: String,
    pub config: ImageConfig,
    /// When this image was (last) imported, RFC 3339 UTC.
    pub imported_at: String,
}

/// The parts of an image's config a container starts from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub labels: BTreeMap<String, String>,
    /// `"80/tcp"`-style, sorted.
    pub exposed_ports: Vec<String>,
}

impl ImageConfig {
    fn from_oci(c: Option<&oci_spec::image::Config>) -> ImageConfig {
        let Some(c) = c else {
            return ImageConfig::default();
        };
        let mut exposed_ports = c.exposed_ports().clone().unwrap_or_default();
        exposed_ports.sort();
        ImageConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
            labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
            exposed_ports,
        }
    }
}

/// On-disk form of an image record.
#[derive(Debug, Serialize, Deserialize)]
struct ImageRecord {
    version: u32,
    #[serde(flatten)]
    image: Image,
}

/// On-disk record of a layer, beside its `diff/`.
#[derive(Debug, Serialize, Deserialize)]
struct LayerRecord {
    version: u32,
    diff_id: String,
    /// Sum of the sizes of the regular files.
    size: u64,
    unpacked_at: String,
    /// The blob kept beside `diff/` (layers imported before rsup kept
    /// blobs have none).
    #[serde(default)]
    blob: Option<BlobRecord>,
}

/// A layer's blob as a push sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub digest: String,
    pub size: u64,
    /// OCI media type (`application/vnd.oci.image.layer.v1.tar+gzip`).
    pub media_type: String,
}

/// What a push sends: the config blob, and each layer's blob (its path in
/// the store and its record), bottom first.
pub type PushParts = (Vec<u8>, Vec<(PathBuf, BlobRecord)>);

/// One layer of a pull, in the image's order.
#[derive(Debug, Clone)]
pub struct PulledLayer {
    /// The downloaded, verified blob; `None` when the store had the layer.
    pub blob: Option<PathBuf>,
    /// The blob's digest (verified while it was written).
    pub digest: String,
}

const LAYER_BLOB: &str = "blob";
const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

const RECORD_VERSION: u32 = 1;
const LAYER_JSON: &str = "layer.json";

/// The image and layer store under one root directory. Cheap to share
/// between threads (`&self` everywhere); several processes may use one root.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    unpacked: AtomicU64,
    limits: UnpackLimits,
}

/// Holds the store's lock file flock'ed for as long as it lives.
struct StoreLock {
    _lock: nix::fcntl::Flock<File>,
}

/// The staging directory of one import, flock'ed so that a concurrent
/// `open` does not sweep it; removed on drop, whatever happened.
struct Staging {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

impl Staging {
    fn create(tmp: &Path) -> Result<Staging, Error> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let unique = format!(
            "import-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        // The lock file first: a staging dir without one is a leftover.
        let lock_path = tmp.join(format!("{unique}.lock"));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(store::PRIVATE_FILE_MODE)
            .open(&lock_path)
            .map_err(io_err("create", &lock_path))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| io_err("flock", &lock_path)(e.into()))?;
        let dir = tmp.join(unique);
        fs::DirBuilder::new()
            .mode(store::PRIVATE_DIR_MODE)
            .create(&dir)
            .map_err(io_err("mkdir", &dir))?;
        Ok(Staging {
            dir,
            lock_path,
            _lock: lock,
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing import staging");
        }
        let _ = fs::remove_file(&self.lock_path);
    }
}

impl ImageStore {
    /// Creates the layout if missing (`root/{layers,images,tmp}`); sweeps
    /// `root/tmp` leftovers of killed imports (staging dirs whose import no
    /// longer holds its lock).
    pub fn open(root: &Path) -> Result<ImageStore, Error> {
        // Layers keep their owners and modes (setuid binaries included).
        store::private_dir(root)?;
        for d in ["layers", "images", "tmp", "configs", "downloads"] {
            store::private_dir(&root.join(d))?;
        }
        let store = ImageStore {
            root: root.to_path_buf(),
            unpacked: AtomicU64::new(0),
            limits: UnpackLimits::default(),
        };
        let _lock = store.lock()?;
        store.sweep_tmp()?;
        store.sweep_downloads(&|_| false);
        Ok(store)
    }

    /// The same store with these unpack limits for its imports (the
    /// defaults otherwise).
    pub fn with_limits(mut self, limits: UnpackLimits) -> ImageStore {
        self.limits = limits;
        self
    }

    /// Where pulls put the blobs they download (`<hex>.partial` while one
    /// comes, `<hex>` once verified).
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// Whether the layer `diff_id` is in the store (complete).
    pub fn has_layer(&self, diff_id: &str) -> bool {
        sha256_hex(diff_id).is_ok() && self.layer_path(diff_id).join(LAYER_JSON).exists()
    }

    /// The store's limits (a pull's downloads are held to them too).
    pub fn limits(&self) -> UnpackLimits {
        self.limits
    }

    /// Removes downloads older than a day (a pull interrupted and never
    /// retried), but those `keep` names (a pull of this process uses them;
    /// a pull touches what it reuses, so an old file it takes is fresh).
    pub(crate) fn sweep_downloads(&self, keep: &dyn Fn(&str) -> bool) {
        let dir = self.downloads_dir();
        let Ok(rd) = fs::read_dir(&dir) else {
            return;
        };
        let day = std::time::Duration::from_secs(24 * 3600);
        for e in rd.flatten() {
            if keep(&e.file_name().to_string_lossy()) {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > day);
            if old && let Err(err) = fs::remove_file(e.path()) {
                tracing::warn!(path = %e.path().display(), error = %err, "sweeping an old download");
            }
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How many layers this `ImageStore` has unpacked since it was opened
    /// (a layer already in the store is not unpacked again).
    pub fn layers_unpacked(&self) -> u64 {
        self.unpacked.load(Ordering::Relaxed)
    }

    /// The directory of the layer `diff_id` (`root/layers/<hex>`); its tree
    /// is in `diff/`.
    pub fn layer_path(&self, diff_id: &str) -> PathBuf {
        let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
        self.root.join("layers").join(hex)
    }

    /// Host directories of the image's layers as overlay lowerdirs, top first
    /// (overlayfs order: `lowerdir=top:...:bottom`).
    pub fn layer_dirs(&self, image: &Image) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .rev()
            .map(|d| self.layer_path(d).join("diff"))
            .collect()
    }

    fn lock(&self) -> Result<StoreLock, Error> {
        let path = self.root.join("lock");
        let file = store::open_lock_file(&path)?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err("flock", &path)(e.into()))?;
        Ok(StoreLock { _lock: lock })
    }

    /// Removes what killed imports and interrupted removals left in `tmp/`.
    /// Called with the store lock held.
    fn sweep_tmp(&self) -> Result<(), Error> {
        let tmp = self.root.join("tmp");
        let entries: Vec<PathBuf> = fs::read_dir(&tmp)
            .map_err(io_err("read", &tmp))?
            .flatten()
            .map(|e| e.path())
            .collect();
        let live: HashSet<PathBuf> = entries
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "lock"))
            .filter(|p| {
                let Ok(f) = OpenOptions::new().write(true).open(p) else {
                    return false;
                };
                // Held by a running import; if we get it, nobody holds it: a
                // leftover.
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
            })
            .map(|p| p.with_extension(""))
            .collect();
        for p in entries {
            let base = if p.extension().is_some_and(|x| x == "lock") {
                p.with_extension("")
            } else {
                p.clone()
            };
            if live.contains(&base) {
                continue;
            }
            let r = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            if let Err(e) = r
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), error = %e, "sweeping image tmp");
            }
        }
        Ok(())
    }

    /// Imports an OCI image-layout tarball or a `docker save` tarball,
    /// gzip-compressed or not (detected by magic bytes). `name` is the
    /// reference to give the image; `None` takes the names found in the
    /// archive. Blocking: call it from `spawn_blocking`.
    ///
    /// Every digest is verified; on any error nothing this import created is
    /// left behind.
    #[tracing::instrument(skip_all, fields(archive = %archive.display()))]
    pub fn import(&self, archive: &Path, name: Option<&str>) -> Result<Image, Error> {
        let given = name.map(normalize_reference).transpose()?;
        let staging = Staging::create(&self.root.join("tmp"))?;
        let unpacked_archive = staging.dir.join("archive");
        // Two budgets: the unpacked archive (its blobs, mostly compressed)
        // and the unpacked layers. Both stop at the image maximum and at
        // the free-space reserve of the store's filesystem.
        let archive_budget = Budget::new("the archive", self.limits, &self.root);
        archive::extract(archive, &unpacked_archive, &archive_budget)
            .map_err(|e| archive_budget.explain(e))?;
        drop(archive_budget);
        let parsed = archive::parse(&unpacked_archive)?;
        let names = match given {
            Some(n) => vec![n],
            None => {
                let mut out = Vec::new();
                for n in &parsed.names {
                    match normalize_reference(n) {
                        Ok(n) if !out.contains(&n) => out.push(n),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(name = %n, error = %e, "ignoring a name in the archive")
                        }
                    }
                }
                out
            }
        };
        self.install(&staging, &parsed, names, Vec::new())
    }

    /// Installs a pulled image: `config` is its config blob (verified here
    /// against `config_digest`), `layers` its layers bottom first, in the
    /// manifest's order (downloaded and verified, or already in the store).
    /// Each new layer is unpacked under the unpack limits and its
    /// uncompressed content checked against the config's diff_id; on any
    /// error nothing this call created is left behind. Blocking.
    #[tracing::instrument(skip_all, fields(image = %config_digest))]
    pub fn install_pulled(
        &self,
        config: Vec<u8>,
        config_digest: &str,
        layers: &[PulledLayer],
        name: Option<String>,
        repo_digest: Option<String>,
    ) -> Result<Image, Error> {
        sha256_hex(config_digest)?;
        let got = sha256_digest(&config);
        if got != config_digest {
            return Err(bad(format!(
                "config digest mismatch: expected {config_digest}, got {got}"
            )));
        }
        let parsed_config = oci_spec::image::ImageConfiguration::from_reader(&config[..])
            .map_err(|e| bad(format!("config {config_digest}: {e}")))?;
        let diff_ids = parsed_config.rootfs().diff_ids().clone();
        if diff_ids.len() != layers.len() {
            return Err(bad(format!(
                "the manifest lists {} layers but the config {} diff_ids",
                layers.len(),
                diff_ids.len()
            )));
        }
        let mut refs = Vec::with_capacity(layers.len());
        for (l, diff_id) in layers.iter().zip(diff_ids) {
            sha256_hex(&diff_id)?;
            sha256_hex(&l.digest)?;
            refs.push(archive::LayerRef {
                path: l.blob.clone(),
                blob_digest: Some(l.digest.clone()),
                blob_verified: true,
                diff_id,
            });
        }
        let parsed = archive::Parsed {
            id: config_digest.to_string(),
            config: parsed_config,
            config_bytes: config,
            layers: refs,
            names: Vec::new(),
        };
        let staging = Staging::create(&self.root.join("tmp"))?;
        self.install(
            &staging,
            &parsed,
            name.into_iter().collect(),
            repo_digest.into_iter().collect(),
        )
    }

    /// Verifies the layers of `parsed`, unpacks those the store lacks into
    /// `staging` (outside the lock), then commits under the lock.
    fn install(
        &self,
        staging: &Staging,
        parsed: &archive::Parsed,
        names: Vec<String>,
        repo_digests: Vec<String>,
    ) -> Result<Image, Error> {
        let budget = Budget::new("the image", self.limits, &self.root);
        let mut staged: Vec<Option<PathBuf>> = Vec::new();
        let mut seen = HashSet::new();
        for l in &parsed.layers {
            let Some(path) = &l.path else {
                // A pulled layer the store had: nothing to verify or unpack.
                staged.push(None);
                continue;
            };
            if let Some(d) = &l.blob_digest
                && !l.blob_verified
            {
                let got = layer::file_digest(path).map_err(bad)?;
                if got != *d {
                    return Err(bad(format!(
                        "layer {d} digest mismatch: expected {d}, got {got}"
                    )));
                }
            }
            if !seen.insert(l.diff_id.clone()) {
                staged.push(None);
            } else if l.blob_verified && self.has_layer(&l.diff_id) {
                // A pulled layer another pull installed meanwhile: the
                // store's copy is the diff_id the config names.
                staged.push(None);
            } else if self.layer_path(&l.diff_id).join(LAYER_JSON).exists() {
                let s = layer::read_layer(path, None, &budget)
                    .map_err(|e| budget.explain(bad(format!("layer {}: {e}", l.diff_id))))?;
                check_diff_id(&l.diff_id, &s.diff_id)?;
                staged.push(None);
            } else {
                staged.push(Some(self.stage_layer(staging, l, &budget)?));
            }
        }
        if staged.iter().any(Option::is_some) {
            // The unpacked files reach the disk before they are renamed into
            // place, so a layer in layers/ is complete even after a power
            // loss.
            File::open(&staging.dir)
                .and_then(|d| nix::unistd::syncfs(&d).map_err(std::io::Error::from))
                .map_err(io_err("syncfs", &staging.dir))?;
        }
        let _lock = self.lock()?;
        let mut placed = Vec::new();
        let result = self.commit(
            staging,
            parsed,
            &staged,
            (names, repo_digests),
            &mut placed,
            &budget,
        );
        if result.is_err() {
            self.remove_unreferenced(&placed);
        }
        result
    }

    /// Unpacks `l` into the staging dir and checks its diff_id.
    fn stage_layer(
        &self,
        staging: &Staging,
        l: &archive::LayerRef,
        budget: &Budget,
    ) -> Result<PathBuf, Error> {
        let hex = sha256_hex(&l.diff_id)?;
        let Some(path) = &l.path else {
            return Err(Error::NotFound(format!(
                "layer {} was removed from the store during the pull; pull again",
                l.diff_id
            )));
        };
        let dir = staging.dir.join(format!("layer-{hex}"));
        let diff = dir.join("diff");
        store::private_dir(&dir)?;
        // The layer's root as overlayfs merges it: 0755 as before rsupd's
        // umask (the tar's "./" entry is not applied).
        store::visible_dir(&diff)?;
        let s = layer::read_layer(path, Some(&diff), budget)
            .map_err(|e| budget.explain(bad(format!("layer {}: {e}", l.diff_id))))?;
        check_diff_id(&l.diff_id, &s.diff_id)?;
        let blob = keep_blob(path, &dir.join(LAYER_BLOB), l, &s.diff_id)?;
        store::write_json(
            &dir.join(LAYER_JSON),
            &LayerRecord {
                version: RECORD_VERSION,
                diff_id: l.diff_id.clone(),
                size: s.size,
                unpacked_at: now(),
                blob: Some(blob),
            },
        )?;
        self.unpacked.fetch_add(1, Ordering::Relaxed);
        Ok(dir)
    }

    /// Places the staged layers and writes the image record. Called with the
    /// store lock held; records in `placed` the layers it moved into
    /// `layers/`.
    fn commit(
        &self,
        staging: &Staging,
        parsed: &archive::Parsed,
        staged: &[Option<PathBuf>],
        (names, repo_digests): (Vec<String>, Vec<String>),
        placed: &mut Vec<String>,
        budget: &Budget,
    ) -> Result<Image, Error> {
        let mut size = 0u64;
        for (l, st) in parsed.layers.iter().zip(staged) {
            let dest = self.layer_path(&l.diff_id);
            if !dest.join(LAYER_JSON).exists() {
                let src = match st {
                    Some(src) => src.clone(),
                    // Found in the store before, removed since by a gc.
                    None => self.stage_layer(staging, l, budget)?,
                };
                if dest.exists() {
                    // An incomplete leftover (no layer.json): replace it.
                    fs::remove_dir_all(&dest).map_err(io_err("remove", &dest))?;
                }
                fs::rename(&src, &dest).map_err(io_err("rename", &dest))?;
                placed.push(l.diff_id.clone());
            }
            let rec: LayerRecord = store::read_json(&dest.join(LAYER_JSON))?
                .ok_or_else(|| Error::NotFound(format!("layer {} vanished", l.diff_id)))?;
            size += rec.size;
        }
        let id_hex = sha256_hex(&parsed.id)?;
        // The config as it came, for a push (before the record names it).
        let config_path = self.root.join("configs").join(id_hex);
        if !config_path.exists() {
            store::write_atomic(&config_path, &parsed.config_bytes)?;
        }
        let path = self.record_path(&parsed.id)?;
        let (mut all_names, mut all_digests) = store::read_json::<ImageRecord>(&path)?
            .map(|r| (r.image.names, r.image.repo_digests))
            .unwrap_or_default();
        for n in names {
            if !all_names.contains(&n) {
                all_names.push(n);
            }
        }
        for d in repo_digests {
            if !all_digests.contains(&d) {
                all_digests.push(d);
            }
        }
        let c = &parsed.config;
        let image = Image {
            id: parsed.id.clone(),
            names: all_names,
            repo_digests: all_digests,
            layers: parsed.layers.iter().map(|l| l.diff_id.clone()).collect(),
            size,
            created: c.created().clone(),
            architecture: c.architecture().to_string(),
            os: c.os().to_string(),
            config: ImageConfig::from_oci(c.config().as_ref()),
            imported_at: now(),
        };
        write_record(&path, &image)?;
        self.take_names_from_others(&image)?;
        Ok(image)
    }

    /// A name belongs to one image: takes `image`'s names from any other
    /// (docker tag). Called with the store lock held.
    fn take_names_from_others(&self, image: &Image) -> Result<(), Error> {
        for (p, other) in self.records()? {
            if other.id == image.id || !other.names.iter().any(|n| image.names.contains(n)) {
                continue;
            }
            let mut other = other;
            other.names.retain(|n| !image.names.contains(n));
            write_record(&p, &other)?;
        }
        Ok(())
    }

    /// Gives the image `reference` names the name `target` (`docker tag`),
    /// taking it from the image that had it.
    pub fn tag(&self, reference: &str, target: &str) -> Result<Image, Error> {
        let name = normalize_reference(target)?;
        let _lock = self.lock()?;
        let mut image = self.get(reference)?;
        if !image.names.contains(&name) {
            image.names.push(name);
        }
        let path = self.record_path(&image.id)?;
        write_record(&path, &image)?;
        self.take_names_from_others(&image)?;
        Ok(image)
    }

    /// What a push sends of `image`: its config blob and each layer's blob
    /// with its record, bottom first. `FailedPrecondition` for an image
    /// imported before rsup kept blobs.
    pub fn push_parts(&self, image: &Image) -> Result<PushParts, Error> {
        let old = || {
            Error::FailedPrecondition(format!(
                "image {} was imported before rsup kept the blobs a push sends: import or pull it again",
                short_id(&image.id)
            ))
        };
        let config_path = self.root.join("configs").join(sha256_hex(&image.id)?);
        let config = match fs::read(&config_path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(old()),
            Err(e) => return Err(io_err("read", &config_path)(e).into()),
        };
        let mut layers = Vec::new();
        for d in &image.layers {
            let dir = self.layer_path(d);
            let rec: LayerRecord = store::read_json(&dir.join(LAYER_JSON))?
                .ok_or_else(|| Error::NotFound(format!("layer {d} is missing from the store")))?;
            let blob = rec.blob.ok_or_else(old)?;
            layers.push((dir.join(LAYER_BLOB), blob));
        }
        Ok((config, layers))
    }

    /// `images/<hex>.json` of the image `id`.
    fn record_path(&self, id: &str) -> Result<PathBuf, Error> {
        Ok(self
            .root
            .join("images")
            .join(format!("{}.json", sha256_hex(id)?)))
    }

    /// Every image record; fails if one cannot be read (a layer must never
    /// look unreferenced because its image's record is unreadable).
    fn records(&self) -> Result<Vec<(PathBuf, Image)>, Error> {
        let mut out = Vec::new();
        for (p, r) in store::read_json_dir::<ImageRecord>(&self.root.join("images"))? {
            out.push((p, r?.image));
        }
        Ok(out)
    }

    /// All images, newest import first.
    pub fn list(&self) -> Result<Vec<Image>, Error> {
        let mut out: Vec<Image> = Vec::new();
        for (p, r) in store::read_json_dir::<ImageRecord>(&self.root.join("images"))? {
            match r {
                Ok(r) => out.push(r.image),
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "unreadable image record")
                }
            }
        }
        out.sort_by(|a, b| {
            b.imported_at
                .cmp(&a.imported_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(out)
    }

    /// Finds an image by reference (a name; `name` means `name:latest`), by
    /// full id (`sha256:<64 hex>`) or by a unique hex prefix of the id of at
    /// least 4 characters, with or without `sha256:`. A name wins over an id
    /// prefix. `NotFound` if nothing matches, `InvalidArgument` for an
    /// ambiguous prefix.
    pub fn get(&self, reference: &str) -> Result<Image, Error> {
        let images = self.list()?;
        if reference.contains('@') {
            let want = crate::names::RemoteRef::parse(reference)?;
            let digest = want.digest().unwrap_or_default();
            let found = images.iter().find(|i| {
                i.repo_digests.iter().any(|d| {
                    crate::names::RemoteRef::parse(d).is_ok_and(|r| {
                        r.digest() == Some(digest)
                            && r.repository() == want.repository()
                            && r.registry() == want.registry()
                    })
                })
            });
            return match found {
                Some(i) => Ok(i.clone()),
                None => Err(Error::NotFound(format!(
                    "image {} not found",
                    crate::names::quote(reference)
                ))),
            };
        }
        if let Ok(n) = normalize_reference(reference)
            && let Some(i) = images.iter().find(|i| i.names.contains(&n))
        {
            return Ok(i.clone());
        }
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        let is_hex =
            hex.len() >= 4 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if is_hex {
            let hex = hex.to_ascii_lowercase();
            let found: Vec<&Image> = images
                .iter()
                .filter(|i| {
                    i.id.strip_prefix("sha256:")
                        .unwrap_or(&i.id)
                        .starts_with(&hex)
                })
                .collect();
            match found.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                many => {
                    return Err(Error::InvalidArgument {
                        field: "image",
                        reason: format!(
                            "{} is ambiguous: it matches {} images ({})",
                            crate::names::quote(reference),
                            many.len(),
                            many.iter()
                                .map(|i| short_id(&i.id))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
        }
        Err(Error::NotFound(format!(
            "image {} not found",
            crate::names::quote(reference)
        )))
    }

    /// Removes the name `reference` from its image (Docker's untag) when it
    /// is a name of an image that has other names too: returns the image
    /// with its remaining names. `None` when `reference` is an id, or the
    /// image's only name (then it is [`Self::remove`]'s to delete).
    pub fn untag(&self, reference: &str) -> Result<Option<Image>, Error> {
        let Ok(name) = normalize_reference(reference) else {
            return Ok(None);
        };
        let _lock = self.lock()?;
        for (p, image) in self.records()? {
            if !image.names.contains(&name) {
                continue;
            }
            if image.names.len() < 2 {
                return Ok(None);
            }
            let mut image = image;
            image.names.retain(|n| *n != name);
            write_record(&p, &image)?;
            return Ok(Some(image));
        }
        Ok(None)
    }

    /// Removes the image record, then every layer that no image references
    /// and whose diff_id is not in `layers_in_use` (layers containers still
    /// mount). Returns the removed image.
    #[tracing::instrument(skip_all, fields(image = %reference))]
    pub fn remove(&self, reference: &str, layers_in_use: &HashSet<String>) -> Result<Image, Error> {
        let _lock = self.lock()?;
        let image = self.get(reference)?;
        // Refuse before removing anything if a record is unreadable (the gc
        // below could not tell which layers it uses).
        self.records()?;
        let path = self.record_path(&image.id)?;
        fs::remove_file(&path).map_err(io_err("remove", &path))?;
        let config = self.root.join("configs").join(sha256_hex(&image.id)?);
        if let Err(e) = fs::remove_file(&config)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %config.display(), error = %e, "removing an image's config");
        }
        if let Some(parent) = path.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io_err("fsync", parent))?;
        }
        self.gc_locked(layers_in_use)?;
        Ok(image)
    }

    /// Deletes the layers referenced by no image and not in `layers_in_use`.
    /// Returns how many.
    pub fn gc(&self, layers_in_use: &HashSet<String>) -> Result<usize, Error> {
        let _lock = self.lock()?;
        self.gc_locked(layers_in_use)
    }

    fn gc_locked(&self, layers_in_use: &HashSet<String>) -> Result<usize, Error> {
        let referenced: HashSet<String> = self
            .records()?
            .into_iter()
            .flat_map(|(_, i)| i.layers)
            .collect();
        let dir = self.root.join("layers");
        let mut removed = 0;
        let mut errors = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("read", &dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let diff_id = format!("sha256:{name}");
            if sha256_hex(&diff_id).is_err()
                || referenced.contains(&diff_id)
                || layers_in_use.contains(&diff_id)
            {
                continue;
            }
            match self.delete_layer_dir(&e.path(), &name) {
                Ok(()) => removed += 1,
                Err(err) => errors.push(err),
            }
        }
        if let Some(first) = errors.into_iter().next() {
            return Err(first);
        }
        Ok(removed)
    }

    /// Moves a layer dir out of `layers/` (one rename: it is gone or still
    /// complete) and deletes it.
    fn delete_layer_dir(&self, path: &Path, hex: &str) -> Result<(), Error> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = self.root.join("tmp").join(format!(
            "gc-{hex}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::rename(path, &tmp).map_err(io_err("rename", path))?;
        fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
        Ok(())
    }

    /// After a failed commit: removes the layers it placed that no image
    /// references. Best effort (the error being returned is the import's).
    fn remove_unreferenced(&self, placed: &[String]) {
        let referenced: HashSet<String> = match self.records() {
            Ok(r) => r.into_iter().flat_map(|(_, i)| i.layers).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read image records; keeping the layers");
                return;
            }
        };
        for d in placed.iter().filter(|d| !referenced.contains(*d)) {
            let p = self.layer_path(d);
            let hex = d.strip_prefix("sha256:").unwrap_or(d);
            if let Err(e) = self.delete_layer_dir(&p, hex) {
                tracing::warn!(layer = %d, error = %e, "removing a layer of a failed import");
            }
        }
    }
}

/// Keeps a layer's blob beside its tree: a hard link to the verified blob
/// (a copy across filesystems), with its digest and media type.
fn keep_blob(
    src: &Path,
    dest: &Path,
    l: &archive::LayerRef,
    diff_id: &str,
) -> Result<BlobRecord, Error> {
    let compression = layer::detect(src).map_err(bad)?;
    let digest = match (&l.blob_digest, compression) {
        (Some(d), _) => d.clone(),
        // An uncompressed legacy layer.tar is its diff_id.
        (None, layer::Compression::None) => diff_id.to_string(),
        (None, _) => layer::file_digest(src).map_err(bad)?,
    };
    if fs::hard_link(src, dest).is_err() {
        fs::copy(src, dest).map_err(io_err("copy", dest))?;
    }
    let size = fs::metadata(dest).map_err(io_err("stat", dest))?.len();
    Ok(BlobRecord {
        digest,
        size,
        media_type: match compression {
            layer::Compression::None => MEDIA_LAYER_TAR,
            layer::Compression::Gzip => MEDIA_LAYER_GZIP,
        }
        .to_string(),
    })
}

/// Writes an image record (atomically) at `path`.
fn write_record(path: &Path, image: &Image) -> Result<(), Error> {
    store::write_json(
        path,
        &ImageRecord {
            version: RECORD_VERSION,
            image: image.clone(),
        },
    )?;
    Ok(())
}

fn check_diff_id(expected: &str, got: &str) -> Result<(), Error> {
    if expected != got {
        return Err(bad(format!(
            "layer {expected} digest mismatch: expected {expected}, got {got} (uncompressed content differs from the config's diff_id)"
        )));
    }
    Ok(())
}

fn now() -> String {
    crate::logs::format_rfc3339_nanos(SystemTime::now())
}

/// `sha256:` and the first 12 hex digits, as `docker images` shows ids.
pub fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(12).collect()
}

pub use crate::names::normalize_reference;
