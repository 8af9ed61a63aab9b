//! A pull: resolve a reference to one image manifest (following an index
//! to linux/<this arch>), fetch its config, download the layers the store
//! does not have (several at once, each verified against its digest while
//! it is written, resumable), then install them through the layer store,
//! which unpacks under the host-boundary limits and checks every diff_id.
//!
//! Downloads go to the store's `downloads/` as `<hex>.partial`; a pull cut
//! off by the registry or the network keeps what came, and the next pull
//! of the same blob asks for the rest (an HTTP range). Content that does
//! not match its digest or size is deleted at once: nothing of a corrupt
//! pull stays.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use oci_spec::image::{ImageIndex, ImageManifest, MediaType, Os};
use sha2::{Digest, Sha256};
use std::io::Read as _;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::registry::{Blob, Credentials, Purpose, Session};
use crate::config::RegistryConfig;
use crate::error::{Error, RegistryError};
use crate::imagestore::limits::Budget;
use crate::imagestore::{Image, ImageStore, PulledLayer};
use crate::names::RemoteRef;
use crate::store::io_err;

/// What a pull reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum PullProgress {
    /// The manifest is known: its digest, and each layer's blob digest and
    /// size, bottom first.
    Resolved {
        digest: String,
        layers: Vec<(String, u64)>,
    },
    /// One layer's progress (`digest` of its blob).
    Layer {
        digest: String,
        status: LayerStatus,
        /// Bytes of the blob on disk so far.
        current: u64,
        total: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerStatus {
    /// The store has the layer (by diff_id): not downloaded.
    Exists,
    Waiting,
    Downloading,
    /// A download that continues one cut off earlier (`current` is where
    /// it starts).
    Resuming,
    /// Downloaded and verified.
    Downloaded,
    /// The layer's tree is being unpacked into the store.
    Unpacking,
    Done,
    /// A push sends the blob.
    Pushing,
    Pushed,
}

impl LayerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LayerStatus::Exists => "already exists",
            LayerStatus::Waiting => "waiting",
            LayerStatus::Downloading => "downloading",
            LayerStatus::Resuming => "resuming",
            LayerStatus::Downloaded => "download complete",
            LayerStatus::Unpacking => "extracting",
            LayerStatus::Done => "pull complete",
            LayerStatus::Pushing => "pushing",
            LayerStatus::Pushed => "pushed",
        }
    }
}

/// Where progress goes, best effort: a client that does not read its
/// progress loses some of it, and never holds the pull up.
#[derive(Clone)]
pub(crate) struct Reporter(pub Option<mpsc::Sender<PullProgress>>);

impl Reporter {
    pub(crate) fn send(&self, p: PullProgress) {
        if let Some(tx) = &self.0 {
            let _ = tx.try_send(p);
        }
    }
}

/// How many layers download at once (Docker's default is 3).
const CONCURRENT_DOWNLOADS: usize = 3;
/// Largest config a pull reads into memory.
const MAX_JSON: u64 = 16 << 20;
/// Most layers an image may have (overlayfs mounts far fewer; a manifest
/// of thousands is an attack on the pull).
const MAX_LAYERS: usize = 128;
/// A blob must come at least this fast on the whole (after a grace of
/// [`BLOB_GRACE`]): a registry that trickles a byte a minute does not
/// hold a pull forever.
const MIN_RATE: u64 = 16 << 10;
const BLOB_GRACE: Duration = Duration::from_secs(600);
/// Bound of a config's whole transfer.
const SMALL_BLOB_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest manifest or index a pull reads (Docker's limit is 4 MiB).
const MAX_MANIFEST: usize = 4 << 20;
const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Blobs being downloaded in this process: two pulls of one blob take
/// turns (the second finds it complete).
#[derive(Default)]
pub(crate) struct InFlight(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl InFlight {
    /// Whether a pull of this process is downloading the blob `<hex>`.
    fn has(&self, hex: &str) -> bool {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .any(|(d, v)| Arc::strong_count(v) > 1 && d.strip_prefix("sha256:") == Some(hex))
    }

    fn lock_for(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, v| Arc::strong_count(v) > 1);
        m.entry(digest.to_string()).or_default().clone()
    }
}

/// Pulls `r` into `store`. `gate` (the images service's) is held shared
/// only while the image is installed, not during the transfer.
pub(crate) async fn pull(
    store: &Arc<ImageStore>,
    config: &RegistryConfig,
    in_flight: &InFlight,
    gate: &tokio::sync::RwLock<()>,
    r: &RemoteRef,
    creds: Option<&Credentials>,
    report: &Reporter,
) -> Result<Image, Error> {
    store.sweep_downloads(&|name: &str| in_flight.has(name.split('.').next().unwrap_or(name)));
    let session = Session::open(config, r, creds, Purpose::Pull).await?;
    let registry = session.registry.clone();
    let bytes = session
        .manifest(&session.reference, ACCEPT, MAX_MANIFEST)
        .await
        .map_err(|e| match e {
            Error::NotFound(m) => Error::NotFound(format!("manifest for {r} not found: {m}")),
            e => e,
        })?;
    let top_digest = sha256_of(&bytes);
    if let Some(want) = r.digest()
        && want != top_digest
    {
        return Err(corrupt(
            &registry,
            format!("manifest digest mismatch: asked for {want}, got {top_digest}"),
        ));
    }
    let manifest = resolve(&session, bytes, 0).await?;
    let config_desc = manifest.config();
    let config = small_blob(&session, config_desc.digest().as_ref(), config_desc.size()).await?;
    let parsed = oci_spec::image::ImageConfiguration::from_reader(&config[..])
        .map_err(|e| corrupt(&registry, format!("config: {e}")))?;
    let diff_ids = parsed.rootfs().diff_ids().clone();
    let layers = manifest.layers();
    if layers.len() > MAX_LAYERS {
        return Err(Error::Registry(RegistryError::Unsupported {
            registry: registry.clone(),
            reason: format!(
                "the image has {} layers; rsup takes at most {MAX_LAYERS}",
                layers.len()
            ),
        }));
    }
    if diff_ids.len() != layers.len() {
        return Err(corrupt(
            &registry,
            format!(
                "the manifest lists {} layers but the config {} diff_ids",
                layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let max = store.limits().max_image_bytes;
    let mut declared = 0u64;
    for l in layers {
        check_layer_type(&registry, l)?;
        declared = declared.saturating_add(l.size());
    }
    if declared > max {
        return Err(Error::InvalidArgument {
            field: "reference",
            reason: format!(
                "{r}: its layers are {declared} bytes, more than rsupd's --image-max-size ({max} bytes)"
            ),
        });
    }
    report.send(PullProgress::Resolved {
        digest: top_digest.clone(),
        layers: layers
            .iter()
            .map(|l| (l.digest().to_string(), l.size()))
            .collect(),
    });

    // Download what the store lacks, a few at once.
    // Budget is not Sync: the downloads take turns charging it.
    let budget = Mutex::new(Budget::new("the pull", store.limits(), store.root()));
    let downloads = store.downloads_dir();
    let wanted: Vec<(String, u64, String)> = layers
        .iter()
        .zip(&diff_ids)
        .map(|(l, diff_id)| (l.digest().to_string(), l.size(), diff_id.clone()))
        .collect();
    let session_ref = &session;
    let budget_ref = &budget;
    let downloads_ref = &downloads;
    let jobs: Vec<_> = wanted
        .into_iter()
        .map(|(digest, size, diff_id)| async move {
            let exists = || {
                report.send(PullProgress::Layer {
                    digest: digest.clone(),
                    status: LayerStatus::Exists,
                    current: size,
                    total: size,
                });
            };
            if store.has_layer(&diff_id) {
                exists();
                return Ok(Fetched::InStore(digest.clone()));
            }
            let turn = in_flight.lock_for(&digest);
            let _turn = turn.lock().await;
            // Another pull may have installed it meanwhile.
            if store.has_layer(&diff_id) {
                exists();
                return Ok(Fetched::InStore(digest.clone()));
            }
            // This pull's own name for the download, made while it holds
            // the turn: another pull that removes the shared name cannot
            // take it. The link is the test that the download is still
            // there (one more download if another pull removed it).
            let own = downloads_ref.join(format!(
                "{}.pull-{}",
                crate::imagestore::sha256_hex(&digest)?,
                crate::store::random_id()
            ));
            let mut tries = 0;
            let shared = loop {
                tries += 1;
                let shared = download(
                    session_ref,
                    downloads_ref,
                    &digest,
                    size,
                    budget_ref,
                    report,
                )
                .await?;
                match link_or_copy(&shared, &own) {
                    Ok(()) => break shared,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 2 => {}
                    Err(e) => return Err(io_err("link", &own)(e).into()),
                }
            };
            touch(&own);
            let own = OwnLink(own);
            Ok::<_, Error>(Fetched::Downloaded {
                digest: digest.clone(),
                shared,
                own,
            })
        })
        .collect();
    // The first failure that a retry would not mend stops the others (a
    // failure that cut one download off lets the others finish: they are
    // what the next pull resumes).
    let mut stream = futures::stream::iter(jobs).buffered(CONCURRENT_DOWNLOADS);
    let mut fetched = Vec::with_capacity(layers.len());
    let mut first_err = None;
    while let Some(r) = stream.next().await {
        match r {
            Ok(f) => fetched.push(f),
            Err(e) => {
                let stop = !resumable(&e);
                first_err.get_or_insert(e);
                if stop {
                    break;
                }
            }
        }
    }
    drop(stream);
    let shared: Vec<PathBuf> = fetched
        .iter()
        .filter_map(|f| match f {
            Fetched::Downloaded { shared, .. } => Some(shared.clone()),
            Fetched::InStore(_) => None,
        })
        .collect();
    if let Some(e) = first_err {
        // Cut off: complete and partial downloads stay for the next try
        // (this pull's own links go with `fetched`). Anything else (corrupt
        // content, a limit): trying again gets the same, and nothing of
        // this pull stays.
        if !resumable(&e) {
            remove_downloads(&shared);
        }
        return Err(e);
    }
    let pulled: Vec<PulledLayer> = fetched
        .iter()
        .map(|f| match f {
            Fetched::InStore(digest) => PulledLayer {
                blob: None,
                digest: digest.clone(),
            },
            Fetched::Downloaded { digest, own, .. } => PulledLayer {
                blob: Some(own.0.clone()),
                digest: digest.clone(),
            },
        })
        .collect();
    for l in pulled.iter().filter(|l| l.blob.is_some()) {
        report.send(PullProgress::Layer {
            digest: l.digest.clone(),
            status: LayerStatus::Unpacking,
            current: 0,
            total: 0,
        });
    }
    let store2 = store.clone();
    let config_digest = config_desc.digest().to_string();
    let name = r.local_name();
    let repo_digest = Some(r.repo_digest(&top_digest));
    let layers_for_install = pulled.clone();
    // No image removal or layer collection while the image goes in.
    let gated = gate.read().await;
    // Installed (the store hard-linked the blobs it keeps) or refused
    // (content that does not match the config): the downloads go, in the
    // same task (it runs to its end even if the pull is cancelled).
    let result = tokio::task::spawn_blocking(move || {
        let r = store2.install_pulled(
            config,
            &config_digest,
            &layers_for_install,
            name,
            repo_digest,
        );
        drop(fetched);
        remove_downloads(&shared);
        r
    })
    .await
    .map_err(|e| Error::FailedPrecondition(format!("pull task failed: {e}")))?;
    drop(gated);
    let image = result.map_err(|e| match e {
        // Content that does not match the config: the registry's doing.
        Error::InvalidArgument {
            field: "archive",
            reason,
        } if !reason.contains("image-max-size") => corrupt(&registry, reason),
        e => e,
    })?;
    for l in pulled.iter().filter(|l| l.blob.is_some()) {
        report.send(PullProgress::Layer {
            digest: l.digest.clone(),
            status: LayerStatus::Done,
            current: 0,
            total: 0,
        });
    }
    info!(reference = %r, image = %image.id, digest = %top_digest, scheme = session.scheme, "pulled");
    Ok(image)
}

/// One layer of a pull, once its turn is over.
enum Fetched {
    /// The store has it (by diff_id).
    InStore(String),
    /// Downloaded: the shared `downloads/<hex>` and this pull's own link.
    Downloaded {
        digest: String,
        shared: PathBuf,
        own: OwnLink,
    },
}

/// A pull's own hard link to a download, removed when it is dropped:
/// whatever way the pull ends, a cancellation included.
struct OwnLink(PathBuf);

impl Drop for OwnLink {
    fn drop(&mut self) {
        remove_downloads(std::slice::from_ref(&self.0));
    }
}

/// A blob small enough for memory (a config): at most `size` bytes, which
/// must also be what it has, and its digest.
async fn small_blob(session: &Session, digest: &str, size: u64) -> Result<Vec<u8>, Error> {
    let registry = &session.registry;
    crate::imagestore::sha256_hex(digest).map_err(|_| {
        corrupt(
            registry,
            format!("config digest {}", crate::names::quote(digest)),
        )
    })?;
    if size > MAX_JSON {
        return Err(corrupt(
            registry,
            format!("config of {size} bytes is too large"),
        ));
    }
    let slow = || {
        Error::Registry(RegistryError::Unreachable {
            registry: registry.clone(),
            reason: format!("config {digest}: no answer in time"),
        })
    };
    let deadline = tokio::time::Instant::now() + SMALL_BLOB_TIMEOUT;
    let mut res = match tokio::time::timeout_at(deadline, session.blob(digest, 0))
        .await
        .map_err(|_| slow())??
    {
        Blob::Full(res) | Blob::Partial(res) => res,
    };
    let mut buf = Vec::new();
    while let Some(c) = tokio::time::timeout_at(deadline, res.chunk())
        .await
        .map_err(|_| slow())?
        .map_err(|e| {
            Error::Registry(RegistryError::Unreachable {
                registry: registry.clone(),
                reason: format!("config: {e}"),
            })
        })?
    {
        if buf.len() + c.len() > size as usize {
            return Err(corrupt(
                registry,
                format!("config {digest}: more than the {size} bytes its descriptor says"),
            ));
        }
        buf.extend_from_slice(&c);
    }
    if buf.len() as u64 != size {
        return Err(corrupt(
            registry,
            format!(
                "config size mismatch: the manifest says {size} bytes, got {}",
                buf.len()
            ),
        ));
    }
    let got = sha256_of(&buf);
    if got != digest {
        return Err(corrupt(
            registry,
            format!("config digest mismatch: expected {digest}, got {got}"),
        ));
    }
    Ok(buf)
}

/// A hard link of `src` at `dest`, or a copy where links do not work.
fn link_or_copy(src: &Path, dest: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(src, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(e),
        Err(_) => std::fs::copy(src, dest).map(drop),
    }
}

fn remove_downloads(paths: &[PathBuf]) {
    for p in paths {
        if let Err(e) = std::fs::remove_file(p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %p.display(), error = %e, "removing a download");
        }
    }
}

/// Follows an index to the manifest for linux/<this arch>.
fn resolve<'a>(
    session: &'a Session,
    bytes: Vec<u8>,
    depth: usize,
) -> futures::future::BoxFuture<'a, Result<ImageManifest, Error>> {
    Box::pin(async move {
        let registry = &session.registry;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(registry, format!("manifest: {e}")))?;
        let schema = v.get("schemaVersion").and_then(|s| s.as_i64()).unwrap_or(0);
        if schema != 2 {
            return Err(Error::Registry(RegistryError::Unsupported {
                registry: registry.clone(),
                reason: format!("manifest schema version {schema} is not supported (only 2)"),
            }));
        }
        let media = v.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
        let is_index = media == DOCKER_LIST
            || media == "application/vnd.oci.image.index.v1+json"
            || (media.is_empty() && v.get("manifests").is_some());
        if !is_index {
            return ImageManifest::from_reader(&bytes[..])
                .map_err(|e| corrupt(registry, format!("manifest: {e}")));
        }
        if depth > 2 {
            return Err(corrupt(registry, "image indexes nested too deep".into()));
        }
        let index = ImageIndex::from_reader(&bytes[..])
            .map_err(|e| corrupt(registry, format!("index: {e}")))?;
        let arch = crate::imagestore::host_arch();
        let chosen = index
            .manifests()
            .iter()
            .find(|d| {
                d.platform()
                    .as_ref()
                    .is_some_and(|p| *p.os() == Os::Linux && p.architecture().to_string() == arch)
            })
            .ok_or_else(|| {
                let found: Vec<String> = index
                    .manifests()
                    .iter()
                    .filter_map(|d| d.platform().as_ref())
                    .map(|p| format!("{}/{}", p.os(), p.architecture()))
                    .collect();
                Error::Registry(RegistryError::Unsupported {
                    registry: registry.clone(),
                    reason: format!(
                        "no image for linux/{arch} in the index (found: {})",
                        if found.is_empty() {
                            "none".to_string()
                        } else {
                            crate::names::quote(&found.join(", "))
                        }
                    ),
                })
            })?;
        let digest = chosen.digest().to_string();
        let bytes = session
            .manifest(&session.with_digest(&digest), ACCEPT, MAX_MANIFEST)
            .await?;
        let got = sha256_of(&bytes);
        if got != digest {
            return Err(corrupt(
                registry,
                format!("manifest digest mismatch: expected {digest}, got {got}"),
            ));
        }
        if bytes.len() as u64 != chosen.size() {
            return Err(corrupt(
                registry,
                format!(
                    "manifest size mismatch: the index says {} bytes, got {}",
                    chosen.size(),
                    bytes.len()
                ),
            ));
        }
        resolve(session, bytes.to_vec(), depth + 1).await
    })
}

/// Layers rsup can unpack: tar, gzip'ed or not (zstd is refused by name).
fn check_layer_type(registry: &str, l: &oci_spec::image::Descriptor) -> Result<(), Error> {
    let ok = match l.media_type() {
        MediaType::ImageLayer | MediaType::ImageLayerGzip => true,
        MediaType::Other(s) => s == DOCKER_LAYER_GZIP || s == DOCKER_LAYER_TAR,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(Error::Registry(RegistryError::Unsupported {
        registry: registry.to_string(),
        reason: format!(
            "layer {}: unsupported media type {}",
            l.digest(),
            crate::names::quote(l.media_type().as_ref())
        ),
    }))
}

/// Whether a failed pull keeps its downloads for the next one: only when
/// the registry or the network cut it off.
fn resumable(e: &Error) -> bool {
    matches!(e, Error::Registry(RegistryError::Unreachable { .. }))
}

/// Downloads one blob into `dir` (resuming a `.partial` left by an earlier
/// pull), verifying its size and digest; returns the complete file. A
/// resumed download that does not verify, or whose range the registry
/// refuses, starts over once from the beginning (the partial file may not
/// have come from this registry). A failure that a retry would not mend
/// deletes the partial file.
async fn download(
    session: &Session,
    dir: &Path,
    digest: &str,
    size: u64,
    budget: &Mutex<Budget>,
    report: &Reporter,
) -> Result<PathBuf, Error> {
    let hex = crate::imagestore::sha256_hex(digest)?.to_string();
    let partial = dir.join(format!("{hex}.partial"));
    let mut r = download_resuming(session, dir, digest, size, budget, report).await;
    let retry = match &r {
        Err(Error::Registry(RegistryError::RangeRefused { .. })) => true,
        Err(Error::Registry(RegistryError::Corrupt { reason, .. })) => reason.contains(RESUMED),
        _ => false,
    };
    if retry {
        if let Err(e) = &r {
            warn!(digest, error = %e, "a resumed download failed; starting it over");
        }
        let _ = tokio::fs::remove_file(&partial).await;
        r = download_resuming(session, dir, digest, size, budget, report).await;
    }
    if let Err(e) = &r
        && !resumable(e)
    {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    r
}

/// Marks a digest mismatch of a download that resumed a partial file.
const RESUMED: &str = "(resumed download)";

async fn download_resuming(
    session: &Session,
    dir: &Path,
    digest: &str,
    size: u64,
    budget: &Mutex<Budget>,
    report: &Reporter,
) -> Result<PathBuf, Error> {
    let registry = &session.registry;
    let hex = crate::imagestore::sha256_hex(digest)?.to_string();
    let done = dir.join(&hex);
    if done.exists() {
        // Fresh again for the sweep (it may be an old download).
        touch(&done);
        report.send(PullProgress::Layer {
            digest: digest.to_string(),
            status: LayerStatus::Downloaded,
            current: size,
            total: size,
        });
        return Ok(done);
    }
    let partial = dir.join(format!("{hex}.partial"));
    // One descriptor for what is there and what comes: what is there is
    // hashed again (it is rsupd's own file, but a digest covers every
    // byte), and the rest is written after it.
    let p = partial.clone();
    let (std_file, hasher, offset) =
        tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, Sha256, u64)> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(crate::store::PRIVATE_FILE_MODE)
                .open(&p)?;
            f.set_modified(std::time::SystemTime::now())?;
            let mut h = Sha256::new();
            let n = std::io::copy(&mut (&f).take(size), &mut h)?;
            if n == size && f.metadata()?.len() > size {
                // More than the blob: not a resumable piece of it.
                f.set_len(0)?;
                return Ok((f, Sha256::new(), 0));
            }
            let _ = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(n))?;
            Ok((f, h, n))
        })
        .await
        .map_err(|e| Error::FailedPrecondition(format!("hashing a partial download: {e}")))?
        .map_err(io_err("open", &partial))?;
    let mut hasher = hasher;
    let mut file = tokio::fs::File::from_std(std_file);
    if offset == size && size > 0 {
        // Complete but not yet renamed (cut off between the two).
        drop(file);
        let got = format!("sha256:{}", crate::imagestore::hex(&hasher.finalize()));
        return finish(&partial, &done, digest, &got, registry, true).await;
    }
    let deadline = tokio::time::Instant::now()
        + BLOB_GRACE
        + Duration::from_secs(size.saturating_sub(offset) / MIN_RATE);
    let answer = tokio::time::timeout_at(deadline, session.blob(digest, offset))
        .await
        .map_err(|_| {
            Error::Registry(RegistryError::Unreachable {
                registry: registry.clone(),
                reason: format!("layer {digest}: no answer in time; pull again to resume"),
            })
        })??;
    let (res, start) = match answer {
        Blob::Partial(res) => (res, offset),
        // The registry ignored the range (or none was asked): from the
        // start.
        Blob::Full(res) => {
            hasher = Sha256::new();
            file.set_len(0)
                .await
                .map_err(io_err("truncate", &partial))?;
            file.seek(std::io::SeekFrom::Start(0))
                .await
                .map_err(io_err("seek", &partial))?;
            (res, 0)
        }
    };
    let resumed = start > 0;
    report.send(PullProgress::Layer {
        digest: digest.to_string(),
        status: if resumed {
            LayerStatus::Resuming
        } else {
            LayerStatus::Downloading
        },
        current: start,
        total: size,
    });
    if resumed {
        info!(digest, offset = start, "resuming a download");
    }
    let deadline =
        tokio::time::Instant::now() + BLOB_GRACE + Duration::from_secs((size - start) / MIN_RATE);
    let mut written = start;
    let mut last = Instant::now();
    let mut res = res;
    loop {
        let next = tokio::time::timeout_at(deadline, res.chunk()).await;
        let chunk = match next {
            Ok(Ok(Some(c))) => c,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                let _ = file.flush().await;
                return Err(Error::Registry(RegistryError::Unreachable {
                    registry: registry.clone(),
                    reason: format!(
                        "layer {digest}: the download broke off after {written} of {size} bytes ({e}); pull again to resume"
                    ),
                }));
            }
            Err(_) => {
                let _ = file.flush().await;
                return Err(Error::Registry(RegistryError::Unreachable {
                    registry: registry.clone(),
                    reason: format!(
                        "layer {digest}: too slow ({written} of {size} bytes, below {} KiB/s); pull again to resume",
                        MIN_RATE >> 10
                    ),
                }));
            }
        };
        written += chunk.len() as u64;
        if written > size {
            drop(file);
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(corrupt(
                registry,
                format!(
                    "layer {digest}: the registry sent more than the {size} bytes the manifest says"
                ),
            ));
        }
        {
            let b = budget.lock().unwrap_or_else(|e| e.into_inner());
            b.charge(chunk.len() as u64)
                .map_err(|e| b.explain(e.into()))?;
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(io_err("write", &partial))?;
        if last.elapsed() >= Duration::from_millis(100) {
            last = Instant::now();
            report.send(PullProgress::Layer {
                digest: digest.to_string(),
                status: LayerStatus::Downloading,
                current: written,
                total: size,
            });
        }
    }
    file.flush().await.map_err(io_err("write", &partial))?;
    file.sync_all().await.map_err(io_err("fsync", &partial))?;
    drop(file);
    if written < size {
        return Err(Error::Registry(RegistryError::Unreachable {
            registry: registry.clone(),
            reason: format!(
                "layer {digest}: the download broke off after {written} of {size} bytes; pull again to resume"
            ),
        }));
    }
    let got = format!("sha256:{}", crate::imagestore::hex(&hasher.finalize()));
    let path = finish(&partial, &done, digest, &got, registry, resumed).await?;
    report.send(PullProgress::Layer {
        digest: digest.to_string(),
        status: LayerStatus::Downloaded,
        current: size,
        total: size,
    });
    Ok(path)
}

/// Sets a download's mtime to now (the sweep removes what is a day old).
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// A whole blob: renamed into place if its digest is right, deleted if not.
async fn finish(
    partial: &Path,
    done: &Path,
    digest: &str,
    got: &str,
    registry: &str,
    resumed: bool,
) -> Result<PathBuf, Error> {
    if got != digest {
        let _ = tokio::fs::remove_file(partial).await;
        return Err(corrupt(
            registry,
            format!(
                "layer {digest}: digest mismatch: got {got}; the download was deleted{}",
                if resumed {
                    format!(" {RESUMED}")
                } else {
                    String::new()
                }
            ),
        ));
    }
    tokio::fs::rename(partial, done)
        .await
        .map_err(io_err("rename", partial))?;
    Ok(done.to_path_buf())
}

fn corrupt(registry: &str, reason: String) -> Error {
    Error::Registry(RegistryError::Corrupt {
        registry: registry.to_string(),
        reason,
    })
}

use crate::imagestore::sha256_digest as sha256_of;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tar_layers_are_taken() {
        let d = |m: MediaType| {
            oci_spec::image::DescriptorBuilder::default()
                .media_type(m)
                .digest(
                    format!("sha256:{}", "0".repeat(64))
                        .parse::<oci_spec::image::Digest>()
                        .expect("digest"),
                )
                .size(1u64)
                .build()
                .expect("descriptor")
        };
        for ok in [
            MediaType::ImageLayer,
            MediaType::ImageLayerGzip,
            MediaType::Other(DOCKER_LAYER_GZIP.into()),
            MediaType::Other(DOCKER_LAYER_TAR.into()),
        ] {
            assert!(check_layer_type("r", &d(ok)).is_ok());
        }
        for bad in [
            MediaType::ImageLayerZstd,
            MediaType::Other("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip".into()),
            MediaType::ImageConfig,
        ] {
            assert!(matches!(
                check_layer_type("r", &d(bad)),
                Err(Error::Registry(RegistryError::Unsupported { .. }))
            ));
        }
    }
}
