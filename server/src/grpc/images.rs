//! `rsup.v1.Images`.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use rsup_proto::v1 as pb;
use rsup_proto::v1::images_server::Images;
use rsup_runtime::images::{Credentials, ImageInfo, PullProgress};
use rsup_runtime::names::{ImageRef, RemoteRef, quote};
use rsup_runtime::{Error, Runtime};
use tonic::{Request, Response, Status, Streaming};

use super::{parse, parse_opt, status};

pub struct Service {
    runtime: Runtime,
}

impl Service {
    pub fn new(runtime: Runtime) -> Self {
        Service { runtime }
    }
}

fn image(i: ImageInfo) -> pb::Image {
    let ImageInfo { image, containers } = i;
    let c = image.config;
    pb::Image {
        id: image.id,
        names: image.names,
        layers: image.layers,
        size_bytes: image.size,
        created: image.created.unwrap_or_default(),
        architecture: image.architecture,
        os: image.os,
        config: Some(pb::ImageConfig {
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            env: c.env,
            working_dir: c.working_dir,
            user: c.user,
            labels: c.labels.into_iter().collect(),
            exposed_ports: c.exposed_ports,
        }),
        imported_at: image.imported_at,
        containers,
        repo_digests: image.repo_digests,
    }
}

fn progress(p: PullProgress) -> pb::ImageProgress {
    use pb::image_progress::{Event, Layer, LayerSize, Resolved};
    let event = match p {
        PullProgress::Resolved { digest, layers } => Event::Resolved(Resolved {
            digest,
            layers: layers
                .into_iter()
                .map(|(digest, size)| LayerSize { digest, size })
                .collect(),
        }),
        PullProgress::Layer {
            digest,
            status,
            current,
            total,
        } => Event::Layer(Layer {
            digest,
            status: status.as_str().to_string(),
            current,
            total,
        }),
    };
    pb::ImageProgress { event: Some(event) }
}

/// The request's login, validated; none when both fields are empty.
fn credentials(a: Option<pb::RegistryAuth>) -> Result<Option<Credentials>, Status> {
    match a {
        Some(a) if !a.username.is_empty() || !a.password.is_empty() => {
            Credentials::parse(&a.username, &a.password)
                .map(Some)
                .map_err(status)
        }
        _ => Ok(None),
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::ImageProgress, Status>> + Send>>;

/// Runs a pull or push on the runtime's tracker, forwarding its progress
/// (best effort: a client that does not read loses some, and never holds
/// the work up); `last` turns its result into the stream's last message. A
/// client that goes away cancels it (a pull resumes next time), and so does
/// rsupd's shutdown.
fn progress_stream<T, F>(
    runtime: &Runtime,
    mut prx: tokio::sync::mpsc::Receiver<PullProgress>,
    fut: F,
    last: fn(T) -> pb::image_progress::Event,
) -> ProgressStream
where
    F: std::future::Future<Output = Result<T, Error>> + Send + 'static,
    T: Send + 'static,
{
    let (tx, out) = tokio::sync::mpsc::channel(64);
    let shutdown = runtime.shutdown_token();
    runtime.spawn(async move {
        tokio::pin!(fut);
        let result = loop {
            tokio::select! {
                r = &mut fut => break r,
                Some(p) = prx.recv() => {
                    let _ = tx.try_send(Ok(progress(p)));
                }
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => break Err(Error::ShuttingDown),
            }
        };
        while let Ok(p) = prx.try_recv() {
            let _ = tx.try_send(Ok(progress(p)));
        }
        let item = result
            .map(|t| pb::ImageProgress {
                event: Some(last(t)),
            })
            .map_err(status);
        tokio::select! {
            _ = tx.send(item) => {}
            _ = shutdown.cancelled() => {}
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(out))
}

fn bad_stream(reason: &str) -> Error {
    Error::InvalidArgument {
        field: "archive",
        reason: reason.into(),
    }
}

#[tonic::async_trait]
impl Images for Service {
    async fn import(
        &self,
        req: Request<Streaming<pb::ImportImageRequest>>,
    ) -> Result<Response<pb::Image>, Status> {
        use pb::import_image_request::Part;
        let mut stream = req.into_inner();
        let options = match stream.message().await? {
            Some(pb::ImportImageRequest {
                part: Some(Part::Options(o)),
            }) => o,
            _ => {
                return Err(status(bad_stream(
                    "the first message of an import must carry its options",
                )));
            }
        };
        let chunks = stream.map(|m| match m {
            Ok(pb::ImportImageRequest {
                part: Some(Part::Chunk(bytes)),
            }) => Ok(bytes),
            Ok(_) => Err(bad_stream("only the first message may carry options")),
            Err(s) => Err(Error::InvalidArgument {
                field: "archive",
                reason: format!("the upload broke off: {}", quote(s.message())),
            }),
        });
        let name = parse_opt(&options.name, "name", ImageRef::parse_as)?;
        let info = self
            .runtime
            .import_image(chunks, name.as_ref(), options.size)
            .await
            .map_err(status)?;
        Ok(Response::new(image(info)))
    }

    async fn list(
        &self,
        _: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let images = self
            .runtime
            .images()
            .await
            .map_err(status)?
            .into_iter()
            .map(image)
            .collect();
        Ok(Response::new(pb::ListImagesResponse { images }))
    }

    async fn inspect(
        &self,
        req: Request<pb::InspectImageRequest>,
    ) -> Result<Response<pb::Image>, Status> {
        let reference = parse(&req.into_inner().image, "image", ImageRef::parse_as)?;
        let i = self
            .runtime
            .inspect_image(&reference)
            .await
            .map_err(status)?;
        Ok(Response::new(image(i)))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        let r = req.into_inner();
        let reference = parse(&r.image, "image", ImageRef::parse_as)?;
        let i = self
            .runtime
            .remove_image(&reference, r.force)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RemoveImageResponse {
            image: Some(image(i.info)),
            untagged: i.untagged,
            deleted: i.deleted,
        }))
    }

    type PullStream = ProgressStream;

    async fn pull(
        &self,
        req: Request<pb::PullImageRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let r = req.into_inner();
        let reference = parse(&r.reference, "reference", |s, _| RemoteRef::parse(s))?;
        let creds = credentials(r.auth)?;
        let rt = self.runtime.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let work = async move { rt.pull_image(&reference, creds.as_ref(), Some(tx)).await };
        let stream = progress_stream(&self.runtime, rx, work, |i| {
            pb::image_progress::Event::Image(image(i))
        });
        Ok(Response::new(stream))
    }

    type PushStream = ProgressStream;

    async fn push(
        &self,
        req: Request<pb::PushImageRequest>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let r = req.into_inner();
        let reference = parse(&r.reference, "reference", |s, _| RemoteRef::parse(s))?;
        let creds = credentials(r.auth)?;
        let rt = self.runtime.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let work = async move { rt.push_image(&reference, creds.as_ref(), Some(tx)).await };
        let stream = progress_stream(
            &self.runtime,
            rx,
            work,
            pb::image_progress::Event::PushedDigest,
        );
        Ok(Response::new(stream))
    }

    async fn tag(&self, req: Request<pb::TagImageRequest>) -> Result<Response<pb::Image>, Status> {
        let r = req.into_inner();
        let source = parse(&r.source, "source", ImageRef::parse_as)?;
        let target = parse(&r.target, "target", ImageRef::parse_as)?;
        let i = self
            .runtime
            .tag_image(&source, &target)
            .await
            .map_err(status)?;
        Ok(Response::new(image(i)))
    }

    async fn login(
        &self,
        req: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let r = req.into_inner();
        let creds = credentials(r.auth)?.ok_or_else(|| {
            Status::invalid_argument("invalid auth: a login needs a user name and a password")
        })?;
        self.runtime
            .registry_login(&r.registry, &creds)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::LoginResponse {}))
    }
}
