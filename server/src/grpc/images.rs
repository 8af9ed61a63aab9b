//! `rsup.v1.Images`.

use futures::StreamExt;
use rsup_proto::v1 as pb;
use rsup_proto::v1::images_server::Images;
use rsup_runtime::images::ImageInfo;
use rsup_runtime::names::{ImageRef, quote};
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
    }
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
}
