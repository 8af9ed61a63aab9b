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
use archive::{bad, sha256_hex};
use limits::{Budget, UnpackLimits};

/// An imported image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:<hex>` digest of the config blob (Docker's image id).
    pub id: String,
    /// Normalized references `name:tag`; may be empty.
    pub names: Vec<String>,
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
}

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
        for d in ["layers", "images", "tmp"] {
            store::private_dir(&root.join(d))?;
        }
        let store = ImageStore {
            root: root.to_path_buf(),
            unpacked: AtomicU64::new(0),
            limits: UnpackLimits::default(),
        };
        let _lock = store.lock()?;
        store.sweep_tmp()?;
        Ok(store)
    }

    /// The same store with these unpack limits for its imports (the
    /// defaults otherwise).
    pub fn with_limits(mut self, limits: UnpackLimits) -> ImageStore {
        self.limits = limits;
        self
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
        let budget = Budget::new("the image", self.limits, &self.root);
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
        // Verify every layer and unpack the new ones, outside the lock.
        let mut staged: Vec<Option<PathBuf>> = Vec::new();
        let mut seen = HashSet::new();
        for l in &parsed.layers {
            if let Some(d) = &l.blob_digest {
                let got = layer::file_digest(&l.path).map_err(bad)?;
                if got != *d {
                    return Err(bad(format!(
                        "layer {d} digest mismatch: expected {d}, got {got}"
                    )));
                }
            }
            if !seen.insert(l.diff_id.clone()) {
                staged.push(None);
            } else if self.layer_path(&l.diff_id).join(LAYER_JSON).exists() {
                let s = layer::read_layer(&l.path, None, &budget)
                    .map_err(|e| budget.explain(bad(format!("layer {}: {e}", l.diff_id))))?;
                check_diff_id(&l.diff_id, &s.diff_id)?;
                staged.push(None);
            } else {
                staged.push(Some(self.stage_layer(&staging, l, &budget)?));
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
        let result = self.commit(&staging, &parsed, &staged, names, &mut placed, &budget);
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
        let dir = staging.dir.join(format!("layer-{hex}"));
        let diff = dir.join("diff");
        store::private_dir(&dir)?;
        // The layer's root as overlayfs merges it: 0755 as before rsupd's
        // umask (the tar's "./" entry is not applied).
        store::visible_dir(&diff)?;
        let s = layer::read_layer(&l.path, Some(&diff), budget)
            .map_err(|e| budget.explain(bad(format!("layer {}: {e}", l.diff_id))))?;
        check_diff_id(&l.diff_id, &s.diff_id)?;
        store::write_json(
            &dir.join(LAYER_JSON),
            &LayerRecord {
                version: RECORD_VERSION,
                diff_id: l.diff_id.clone(),
                size: s.size,
                unpacked_at: now(),
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
        names: Vec<String>,
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
        let path = self.root.join("images").join(format!("{id_hex}.json"));
        let mut all_names = store::read_json::<ImageRecord>(&path)?
            .map(|r| r.image.names)
            .unwrap_or_default();
        for n in names {
            if !all_names.contains(&n) {
                all_names.push(n);
            }
        }
        let c = &parsed.config;
        let image = Image {
            id: parsed.id.clone(),
            names: all_names,
            layers: parsed.layers.iter().map(|l| l.diff_id.clone()).collect(),
            size,
            created: c.created().clone(),
            architecture: c.architecture().to_string(),
            os: c.os().to_string(),
            config: ImageConfig::from_oci(c.config().as_ref()),
            imported_at: now(),
        };
        store::write_json(
            &path,
            &ImageRecord {
                version: RECORD_VERSION,
                image: image.clone(),
            },
        )?;
        // A name belongs to one image: take it from any other (docker tag).
        for (p, other) in self.records()? {
            if other.id == image.id || !other.names.iter().any(|n| image.names.contains(n)) {
                continue;
            }
            let mut other = other;
            other.names.retain(|n| !image.names.contains(n));
            store::write_json(
                &p,
                &ImageRecord {
                    version: RECORD_VERSION,
                    image: other,
                },
            )?;
        }
        Ok(image)
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
            store::write_json(
                &p,
                &ImageRecord {
                    version: RECORD_VERSION,
                    image: image.clone(),
                },
            )?;
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
        let path = self
            .root
            .join("images")
            .join(format!("{}.json", sha256_hex(&image.id)?));
        fs::remove_file(&path).map_err(io_err("remove", &path))?;
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
