//! The images service: import, pull, push, tag, list, inspect and remove,
//! and the resolution of an image into the lower layers of a new container.
//!
//! The layer store itself is [`crate::imagestore::ImageStore`]; this file adds
//! what needs the containers: an image used by a container is not removed
//! unless forced, a forced removal keeps the layers containers still mount
//! (they go with the last such container), and a create and a removal of
//! the same image never interleave (the image gate: creates take it shared,
//! removals exclusively).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use std::sync::Arc;

pub mod pull;
mod push;
pub mod registry;

pub use pull::{LayerStatus, PullProgress};
pub use registry::Credentials;

use crate::config::RegistryConfig;
use crate::error::Error;
use crate::imagestore::limits::UnpackLimits;
use crate::imagestore::{Image, ImageStore};
use crate::names::ImageRef;
use crate::names::RemoteRef;
use crate::spec::ImageSource;
use crate::store::io_err;

/// What `remove_image` did: the names it took away, and whether the image
/// itself is gone.
#[derive(Debug, Clone)]
pub struct RemovedImage {
    pub info: ImageInfo,
    pub untagged: Vec<String>,
    pub deleted: bool,
}

/// An image and the names of the containers made from it.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub image: Image,
    pub containers: Vec<String>,
}

/// Deletes the spooled upload however the import ends (an error, or the
/// client going away while rsupd still reads it: unlinking an open file is
/// fine for its reader).
struct Spool(PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %self.0.display(), error = %e, "cannot remove an uploaded archive");
        }
    }
}

fn blocking_failed(e: tokio::task::JoinError) -> Error {
    Error::FailedPrecondition(format!("image task failed: {e}"))
}

/// A read-only overlay of an image's layers, mounted in rsupd's own mount
/// namespace while a create looks the command and the user up in it;
/// unmounted on drop. A single-layer image needs no mount.
pub(crate) struct View {
    path: PathBuf,
    mounted: bool,
}

impl View {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Mounts the lower dirs (top first) under `views_dir`.
    fn mount(views_dir: &Path, lowerdirs: &[PathBuf]) -> Result<View, Error> {
        match lowerdirs {
            [] => Err(Error::FailedPrecondition("the image has no layers".into())),
            [only] => Ok(View {
                path: only.clone(),
                mounted: false,
            }),
            _ => {
                let opts = crate::spec::overlay_options(lowerdirs, None)
                    .map_err(Error::FailedPrecondition)?;
                crate::store::private_dir(views_dir)?;
                let path = views_dir.join(crate::store::random_id());
                std::fs::create_dir(&path).map_err(io_err("mkdir", &path))?;
                if let Err(e) = mount(
                    Some("overlay"),
                    &path,
                    Some("overlay"),
                    MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
                    Some(opts.as_str()),
                ) {
                    let _ = std::fs::remove_dir(&path);
                    return Err(Error::FailedPrecondition(format!(
                        "mounting the image's layers at {}: {e}",
                        path.display()
                    )));
                }
                Ok(View {
                    path,
                    mounted: true,
                })
            }
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = umount2(&self.path, MntFlags::MNT_DETACH) {
                warn!(path = %self.path.display(), error = %e, "cannot unmount an image view");
            }
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// Unmounts and removes views a killed rsupd left behind.
fn sweep_views(views_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(views_dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let _ = umount2(&p, MntFlags::MNT_DETACH);
        if let Err(e) = std::fs::remove_dir(&p) {
            warn!(path = %p.display(), error = %e, "cannot remove a leftover image view");
        }
    }
}

/// The images service: imports, lists and removes images in the layer
/// store ([`ImageStore`]), and resolves a create's image. It does not know
/// the containers: what uses an image comes in as `users` (names of the
/// containers made from an image id) and `in_use` (the layers they mount,
/// `None` when not known: then no layer is deleted).
#[derive(Clone)]
pub struct Images {
    inner: Arc<Inner>,
}

struct Inner {
    state_dir: PathBuf,
    store: Arc<ImageStore>,
    limits: UnpackLimits,
    registries: RegistryConfig,
    in_flight: pull::InFlight,
    /// Creates from an image and pulls hold it shared, image removals and
    /// layer collections exclusively.
    gate: tokio::sync::RwLock<()>,
}

impl Images {
    /// Opens the layer store under `state_dir` and removes what an
    /// interrupted rsupd left (views, uploads).
    pub fn open(
        state_dir: &Path,
        limits: UnpackLimits,
        registries: RegistryConfig,
    ) -> Result<Images, Error> {
        let store = Arc::new(ImageStore::open(&state_dir.join("images"))?.with_limits(limits));
        sweep_views(&state_dir.join("run").join("views"));
        let uploads = state_dir.join("uploads");
        if let Err(e) = std::fs::remove_dir_all(&uploads)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %uploads.display(), error = %e, "cannot remove old uploads");
        }
        Ok(Images {
            inner: Arc::new(Inner {
                state_dir: state_dir.to_path_buf(),
                store,
                limits,
                registries,
                in_flight: pull::InFlight::default(),
                gate: tokio::sync::RwLock::new(()),
            }),
        })
    }

    /// Held shared by a create from an image until the container is
    /// recorded (its image cannot go away in between), exclusively by a
    /// removal.
    pub fn gate(&self) -> &tokio::sync::RwLock<()> {
        &self.inner.gate
    }

    fn views_dir(&self) -> PathBuf {
        self.inner.state_dir.join("run").join("views")
    }

    fn uploads_dir(&self) -> PathBuf {
        self.inner.state_dir.join("uploads")
    }

    /// Imports an archive file on rsupd's host.
    pub async fn import_file(
        &self,
        archive: &Path,
        name: Option<&ImageRef>,
        users: &Users<'_>,
    ) -> Result<ImageInfo, Error> {
        let store = self.inner.store.clone();
        let archive = archive.to_path_buf();
        let name = name.cloned();
        let image = tokio::task::spawn_blocking(move || {
            store.import(&archive, name.as_ref().map(ImageRef::as_str))
        })
        .await
        .map_err(blocking_failed)??;
        info!(image = %image.id, names = ?image.names, "imported");
        Ok(info_of(image, users))
    }

    /// Imports an archive sent in chunks (the client's file): spooled to
    /// the state directory, imported, then deleted. `size`, when the client
    /// says it, must be what arrived (a client that failed to read its file
    /// must not get half an archive imported).
    pub async fn import<S>(
        &self,
        chunks: S,
        name: Option<&ImageRef>,
        size: Option<u64>,
        users: &Users<'_>,
    ) -> Result<ImageInfo, Error>
    where
        S: Stream<Item = Result<Vec<u8>, Error>> + Unpin,
    {
        // A bad name fails before anything is uploaded.
        if let Some(n) = name {
            crate::imagestore::normalize_reference(n.as_str())?;
        }
        let dir = self.uploads_dir();
        crate::store::private_dir(&dir)?;
        let spool = Spool(dir.join(format!("{}.tar", crate::store::random_id())));
        let path = spool.0.clone();
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::store::PRIVATE_FILE_MODE)
            .open(&path)
            .await
            .map_err(io_err("create", &path))?;
        let mut chunks = chunks;
        let mut total = 0u64;
        // The spool counts against the state device's free-space reserve
        // (the image maximum applies to what it unpacks to).
        let limits = crate::imagestore::limits::UnpackLimits {
            max_image_bytes: u64::MAX,
            ..self.inner.limits
        };
        let budget = crate::imagestore::limits::Budget::new("the upload", limits, &dir);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            total += chunk.len() as u64;
            budget.charge(chunk.len() as u64)?;
            file.write_all(&chunk)
                .await
                .map_err(io_err("write", &path))?;
        }
        file.flush().await.map_err(io_err("write", &path))?;
        drop(file);
        if total == 0 {
            return Err(Error::InvalidArgument {
                field: "archive",
                reason: "the archive is empty".into(),
            });
        }
        if let Some(size) = size
            && size != total
        {
            return Err(Error::InvalidArgument {
                field: "archive",
                reason: format!("the client announced {size} bytes but sent {total}"),
            });
        }
        let result = self.import_file(&path, name, users).await;
        drop(spool);
        result
    }

    /// Pulls `reference` from its registry (see [`pull`]), sending progress
    /// to `progress` if given. The image gate is held only while the image
    /// is installed (not during the transfer).
    pub async fn pull(
        &self,
        reference: &RemoteRef,
        creds: Option<&Credentials>,
        progress: Option<tokio::sync::mpsc::Sender<PullProgress>>,
        users: &Users<'_>,
    ) -> Result<ImageInfo, Error> {
        let image = pull::pull(
            &self.inner.store,
            &self.inner.registries,
            &self.inner.in_flight,
            &self.inner.gate,
            reference,
            creds,
            &pull::Reporter(progress),
        )
        .await?;
        Ok(info_of(image, users))
    }

    /// Pushes the local image named `reference` to its registry; returns
    /// the manifest's digest. The image gate is held only while its blobs
    /// are opened.
    pub async fn push(
        &self,
        reference: &RemoteRef,
        creds: Option<&Credentials>,
        progress: Option<tokio::sync::mpsc::Sender<PullProgress>>,
    ) -> Result<String, Error> {
        let gate = self.inner.gate.read().await;
        let local = reference.to_string();
        let store = self.inner.store.clone();
        let (image, parts) = tokio::task::spawn_blocking(move || {
            let image = store.get(&local)?;
            let parts = push::open_parts(&store, &image)?;
            Ok::<_, Error>((image, parts))
        })
        .await
        .map_err(blocking_failed)??;
        drop(gate);
        push::push(
            &self.inner.registries,
            &image,
            parts,
            reference,
            creds,
            &pull::Reporter(progress),
        )
        .await
    }

    /// Gives the image `source` the name `target` (`docker tag`).
    pub async fn tag(
        &self,
        source: &ImageRef,
        target: &ImageRef,
        users: &Users<'_>,
    ) -> Result<ImageInfo, Error> {
        if target.as_str().contains('@') {
            return Err(Error::InvalidArgument {
                field: "target",
                reason: format!(
                    "{}: a tag is name[:tag], not a digest",
                    crate::names::quote(target.as_str())
                ),
            });
        }
        let store = self.inner.store.clone();
        let (s, t) = (source.clone(), target.clone());
        let image = tokio::task::spawn_blocking(move || store.tag(s.as_str(), t.as_str()))
            .await
            .map_err(blocking_failed)??;
        info!(image = %image.id, name = %target, "tagged");
        Ok(info_of(image, users))
    }

    /// Checks `creds` against `registry` (`host[:port]`), as `docker login`
    /// does: reaches it, and has it accept them.
    pub async fn login(&self, registry: &str, creds: &Credentials) -> Result<(), Error> {
        let probe = RemoteRef::parse(&format!("{registry}/rsup-login:latest"))
            .ok()
            .filter(|r| r.registry() == registry)
            .ok_or_else(|| Error::InvalidArgument {
                field: "registry",
                reason: format!(
                    "{}: expected a registry host (host[:port])",
                    crate::names::quote(registry)
                ),
            })?;
        registry::Session::open(
            &self.inner.registries,
            &probe,
            Some(creds),
            registry::Purpose::Login,
        )
        .await?;
        info!(registry, user = %creds.username, "login succeeded");
        Ok(())
    }

    pub async fn list(&self, users: &Users<'_>) -> Result<Vec<ImageInfo>, Error> {
        let store = self.inner.store.clone();
        let images = tokio::task::spawn_blocking(move || store.list())
            .await
            .map_err(blocking_failed)??;
        Ok(images.into_iter().map(|i| info_of(i, users)).collect())
    }

    pub async fn inspect(
        &self,
        reference: &ImageRef,
        users: &Users<'_>,
    ) -> Result<ImageInfo, Error> {
        let store = self.inner.store.clone();
        let reference = reference.clone();
        let image = tokio::task::spawn_blocking(move || store.get(reference.as_str()))
            .await
            .map_err(blocking_failed)??;
        Ok(info_of(image, users))
    }

    /// Removes a name or an image, as `docker rmi` does: a name of an image
    /// that has other names is only taken away (untagged); the last name,
    /// or an id, deletes the image, which is refused while containers use
    /// it unless `force` (then the layers they mount stay until the last of
    /// them is removed).
    pub async fn remove(
        &self,
        reference: &ImageRef,
        force: bool,
        users: &Users<'_>,
        in_use: &(dyn Fn() -> Option<HashSet<String>> + Sync),
    ) -> Result<RemovedImage, Error> {
        let _gate = self.inner.gate.write().await;
        let store = self.inner.store.clone();
        let r = reference.clone();
        let (image, untagged) = tokio::task::spawn_blocking(move || {
            let image = store.get(r.as_str())?;
            let untagged = store.untag(r.as_str())?;
            Ok::<_, Error>((image, untagged))
        })
        .await
        .map_err(blocking_failed)??;
        if let Some(image) = untagged {
            let name = crate::imagestore::normalize_reference(reference.as_str())?;
            info!(image = %image.id, name = %name, "untagged");
            return Ok(RemovedImage {
                info: info_of(image, users),
                untagged: vec![name],
                deleted: false,
            });
        }
        let users = users(&image.id);
        if !users.is_empty() && !force {
            return Err(Error::FailedPrecondition(format!(
                "image {reference} is used by container(s) {}: remove them first or force the removal",
                users.join(", ")
            )));
        }
        // Unknown containers: keep this image's layers too.
        let in_use = in_use().unwrap_or_else(|| image.layers.iter().cloned().collect());
        let store = self.inner.store.clone();
        let id = image.id.clone();
        let removed = tokio::task::spawn_blocking(move || store.remove(&id, &in_use))
            .await
            .map_err(blocking_failed)??;
        info!(image = %removed.id, "removed");
        Ok(RemovedImage {
            untagged: removed.names.clone(),
            info: ImageInfo {
                image: removed,
                containers: users,
            },
            deleted: true,
        })
    }

    /// After a container made from an image is gone: deletes layers that
    /// only force-removed images had; `in_use` is read under the gate.
    pub async fn collect_layers(&self, in_use: impl FnOnce() -> Option<HashSet<String>>) {
        let _gate = self.inner.gate.write().await;
        let Some(in_use) = in_use() else {
            return;
        };
        let store = self.inner.store.clone();
        match tokio::task::spawn_blocking(move || store.gc(&in_use)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(layers = n, "removed layers no image or container uses"),
            Ok(Err(e)) => warn!(error = %e, "cannot collect unused layers"),
            Err(e) => warn!(error = %e, "layer collection failed"),
        }
    }

    /// Resolves an image reference for a create and mounts a view of its
    /// layers for the lookups of validation. The caller holds the image
    /// gate (shared) until the container is recorded.
    pub(crate) async fn resolve(&self, reference: &ImageRef) -> Result<(ImageSource, View), Error> {
        let store = self.inner.store.clone();
        let views = self.views_dir();
        let reference = reference.to_string();
        tokio::task::spawn_blocking(move || {
            let image = store.get(&reference).map_err(|e| match e {
                Error::NotFound(_) => Error::NotFound(format!("no such image: {reference}")),
                e => e,
            })?;
            let lowerdirs = store.layer_dirs(&image);
            let view = View::mount(&views, &lowerdirs)?;
            let source = ImageSource {
                reference,
                id: image.id,
                layers: image.layers,
                lowerdirs,
                config: image.config,
                view: view.path().to_path_buf(),
            };
            Ok((source, view))
        })
        .await
        .map_err(blocking_failed)?
    }
}

/// Names of the containers made from an image id.
pub type Users<'a> = dyn Fn(&str) -> Vec<String> + Sync + 'a;

fn info_of(image: Image, users: &Users<'_>) -> ImageInfo {
    let containers = users(&image.id);
    ImageInfo { image, containers }
}
