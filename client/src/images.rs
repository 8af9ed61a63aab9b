//! The `Images` calls of [`Client`]: import streams a local archive file to
//! the daemon (so it works over TCP too), in chunks well under gRPC's
//! message size limit.

use std::path::Path;

use rsup_proto::v1 as proto;
use rsup_proto::v1::images_client::ImagesClient;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;

use crate::{Client, Error};

/// Bytes per import message.
const CHUNK: usize = 1 << 20;

impl Client {
    /// The generated stub of the `Images` service.
    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel())
    }

    /// Sends the archive at `path` (an OCI layout or `docker save` tarball,
    /// gzip or not) and returns the imported image. `name` tags it.
    pub async fn import_image(
        &self,
        path: &Path,
        name: Option<&str>,
    ) -> Result<proto::Image, Error> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|source| Error::File {
                path: path.to_path_buf(),
                source,
            })?;
        let size = file.metadata().await.ok().map(|m| m.len());
        let first = proto::ImportImageRequest {
            part: Some(proto::import_image_request::Part::Options(
                proto::ImportOptions {
                    name: name.unwrap_or_default().to_owned(),
                    size,
                },
            )),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let path_buf = path.to_path_buf();
        let reader = tokio::spawn(async move {
            if tx.send(first).await.is_err() {
                return Ok(());
            }
            loop {
                let mut buf = vec![0u8; CHUNK];
                let mut filled = 0;
                while filled < CHUNK {
                    let n = file.read(&mut buf[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    return Ok(());
                }
                buf.truncate(filled);
                let msg = proto::ImportImageRequest {
                    part: Some(proto::import_image_request::Part::Chunk(buf)),
                };
                if tx.send(msg).await.is_err() {
                    // The daemon ended the call; its status says why.
                    return Ok(());
                }
            }
        });
        let reply = self
            .images()
            .import(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let read: std::io::Result<()> = reader.await.unwrap_or(Ok(()));
        if let Err(source) = read {
            return Err(Error::File {
                path: path_buf,
                source,
            });
        }
        Ok(reply?.into_inner())
    }

    /// Every image, with the containers made from it.
    pub async fn list_images(&self) -> Result<Vec<proto::Image>, Error> {
        let reply = self
            .images()
            .list(proto::ListImagesRequest {})
            .await?
            .into_inner();
        Ok(reply.images)
    }

    /// One image by reference, id or unique id prefix.
    pub async fn inspect_image(&self, image: &str) -> Result<proto::Image, Error> {
        let request = proto::InspectImageRequest {
            image: image.to_owned(),
        };
        Ok(self.images().inspect(request).await?.into_inner())
    }

    /// Removes a name, or the image when it is its last name or an id;
    /// `force` removes an image even while containers use it.
    pub async fn remove_image(
        &self,
        image: &str,
        force: bool,
    ) -> Result<proto::RemoveImageResponse, Error> {
        let request = proto::RemoveImageRequest {
            image: image.to_owned(),
            force,
        };
        let reply = self.images().remove(request).await?.into_inner();
        if reply.image.is_none() {
            return Err(Error::Status(tonic::Status::internal(
                "the reply has no image",
            )));
        }
        Ok(reply)
    }
}

/// What a pull or push reports, as the daemon sends it.
pub use proto::ImageProgress;

impl Client {
    /// Pulls `reference` through rsupd (`auth`: user name and password for
    /// its registry), calling `on_progress` with each progress message;
    /// returns the image.
    pub async fn pull_image(
        &self,
        reference: &str,
        auth: Option<&RegistryLogin>,
        mut on_progress: impl FnMut(&ImageProgress),
    ) -> Result<proto::Image, Error> {
        let request = proto::PullImageRequest {
            reference: reference.to_owned(),
            auth: auth.map(RegistryLogin::to_proto),
        };
        let mut stream = self.images().pull(request).await?.into_inner();
        while let Some(msg) = stream.message().await? {
            if let Some(proto::image_progress::Event::Image(i)) = msg.event {
                return Ok(i);
            }
            on_progress(&msg);
        }
        Err(Error::Status(tonic::Status::unavailable(
            "the pull ended without an image",
        )))
    }

    /// Pushes the image named `reference` to its registry; returns the
    /// manifest digest.
    pub async fn push_image(
        &self,
        reference: &str,
        auth: Option<&RegistryLogin>,
        mut on_progress: impl FnMut(&ImageProgress),
    ) -> Result<String, Error> {
        let request = proto::PushImageRequest {
            reference: reference.to_owned(),
            auth: auth.map(RegistryLogin::to_proto),
        };
        let mut stream = self.images().push(request).await?.into_inner();
        while let Some(msg) = stream.message().await? {
            if let Some(proto::image_progress::Event::PushedDigest(d)) = msg.event {
                return Ok(d);
            }
            on_progress(&msg);
        }
        Err(Error::Status(tonic::Status::unavailable(
            "the push ended without a digest",
        )))
    }

    /// Gives the image `source` the name `target`.
    pub async fn tag_image(&self, source: &str, target: &str) -> Result<proto::Image, Error> {
        let request = proto::TagImageRequest {
            source: source.to_owned(),
            target: target.to_owned(),
        };
        Ok(self.images().tag(request).await?.into_inner())
    }

    /// Has rsupd check `login` against `registry` (`host[:port]`).
    pub async fn registry_login(&self, registry: &str, login: &RegistryLogin) -> Result<(), Error> {
        let request = proto::LoginRequest {
            registry: registry.to_owned(),
            auth: Some(login.to_proto()),
        };
        self.images().login(request).await?;
        Ok(())
    }
}

/// A user name and password for a registry. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl RegistryLogin {
    fn to_proto(&self) -> proto::RegistryAuth {
        proto::RegistryAuth {
            username: self.username.clone(),
            password: self.password.clone(),
        }
    }
}

/// The registry host of an image reference, by Docker's rule: the first
/// path component when it has a `.` or a `:` or is `localhost`, else
/// Docker Hub (`docker.io`).
pub fn registry_of(reference: &str) -> &str {
    let name = reference.split('@').next().unwrap_or(reference);
    match name.split_once('/') {
        Some(("index.docker.io" | "registry-1.docker.io", _)) => "docker.io",
        Some((h, _)) if h.contains('.') || h.contains(':') || h == "localhost" => h,
        _ => "docker.io",
    }
}
