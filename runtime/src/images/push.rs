//! A push: the image's blobs as the store keeps them (each layer's blob as
//! it was pulled or imported, the config as it came), so the registry gets
//! the same digests and the pushed image has the same id; blobs the
//! registry has are not sent again. The manifest is an OCI image manifest.

use std::sync::Arc;

use futures::StreamExt;
use serde_json::json;
use tracing::info;

use super::pull::{LayerStatus, PullProgress, Reporter};
use super::registry::{Credentials, Purpose, Session, map_err};
use crate::config::RegistryConfig;
use crate::error::Error;
use crate::imagestore::{BlobRecord, Image, ImageStore};
use crate::names::RemoteRef;

const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// What a push sends, taken from the store under the image gate: the
/// config blob and each layer's blob, already open (a removal of the image
/// meanwhile does not take them away).
pub(crate) struct Parts {
    pub config: Vec<u8>,
    pub layers: Vec<(tokio::fs::File, BlobRecord)>,
}

/// Opens what a push of `image` sends. Blocking.
pub(crate) fn open_parts(store: &ImageStore, image: &Image) -> Result<Parts, Error> {
    let (config, blobs) = store.push_parts(image)?;
    let mut layers = Vec::with_capacity(blobs.len());
    for (path, blob) in blobs {
        let f = std::fs::File::open(&path).map_err(crate::store::io_err("open", &path))?;
        layers.push((tokio::fs::File::from_std(f), blob));
    }
    Ok(Parts { config, layers })
}

/// Pushes `image` (its `parts`) as `target`; returns the manifest's digest.
pub(crate) async fn push(
    config: &RegistryConfig,
    image: &Image,
    parts: Parts,
    target: &RemoteRef,
    creds: Option<&Credentials>,
    report: &Reporter,
) -> Result<String, Error> {
    if target.digest().is_some() {
        return Err(Error::InvalidArgument {
            field: "reference",
            reason: format!("{target}: push a name:tag, not a digest"),
        });
    }
    let Parts {
        config: config_blob,
        layers,
    } = parts;
    let session = Session::open(config, target, creds, Purpose::Push).await?;
    let registry = session.registry.clone();
    let reference = &session.reference;
    let client = session.pusher()?;
    report.send(PullProgress::Resolved {
        digest: image.id.clone(),
        layers: layers
            .iter()
            .map(|(_, b)| (b.digest.clone(), b.size))
            .collect(),
    });
    for (file, blob) in layers.iter() {
        let exists = client
            .blob_exists(reference, &blob.digest)
            .await
            .map_err(|e| map_err(&registry, e))?;
        if exists {
            report.send(PullProgress::Layer {
                digest: blob.digest.clone(),
                status: LayerStatus::Exists,
                current: blob.size,
                total: blob.size,
            });
            continue;
        }
        report.send(PullProgress::Layer {
            digest: blob.digest.clone(),
            status: LayerStatus::Pushing,
            current: 0,
            total: blob.size,
        });
        let file = file
            .try_clone()
            .await
            .map_err(|e| Error::FailedPrecondition(format!("layer blob: {e}")))?;
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        let r2 = report.clone();
        let digest = blob.digest.clone();
        let total = blob.size;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).map(move |c| {
            let c = c.map_err(oci_client::errors::OciDistributionError::IoError)?;
            let n = counter.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed)
                + c.len() as u64;
            r2.send(PullProgress::Layer {
                digest: digest.clone(),
                status: LayerStatus::Pushing,
                current: n,
                total,
            });
            Ok(c)
        });
        client
            .push_blob_stream(reference, stream, &blob.digest, Some(blob.size))
            .await
            .map_err(|e| map_err(&registry, e))?;
        report.send(PullProgress::Layer {
            digest: blob.digest.clone(),
            status: LayerStatus::Pushed,
            current: blob.size,
            total: blob.size,
        });
    }
    let config_exists = client
        .blob_exists(reference, &image.id)
        .await
        .map_err(|e| map_err(&registry, e))?;
    if !config_exists {
        client
            .push_blob(reference, config_blob.clone(), &image.id)
            .await
            .map_err(|e| map_err(&registry, e))?;
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {
            "mediaType": MEDIA_CONFIG,
            "digest": image.id,
            "size": config_blob.len(),
        },
        "layers": layers.iter().map(|(_, b)| json!({
            "mediaType": b.media_type,
            "digest": b.digest,
            "size": b.size,
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest)
        .map_err(|e| Error::FailedPrecondition(format!("manifest: {e}")))?;
    let digest = crate::imagestore::sha256_digest(&bytes);
    client
        .push_manifest_raw(
            reference,
            bytes,
            reqwest::header::HeaderValue::from_static(MEDIA_MANIFEST),
        )
        .await
        .map_err(|e| map_err(&registry, e))?;
    info!(image = %image.id, target = %target, digest = %digest, "pushed");
    Ok(digest)
}
