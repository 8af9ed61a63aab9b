//! Image endpoints: list, inspect, load (`docker load` of a save tarball,
//! streamed into the image store's import), remove, tag, pull
//! (`POST /images/create?fromImage=`) and push, with Docker's JSON
//! progress lines.

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use rsup_runtime::images::{Credentials, ImageInfo, LayerStatus, PullProgress};
use rsup_runtime::names::{ImageRef, RemoteRef};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::stream::{self, json_line};
use super::{Api, ApiError, ApiResult, Query, json, ok_json};

fn created_secs(i: &ImageInfo) -> i64 {
    i.image
        .created
        .as_deref()
        .and_then(rsup_runtime::logs::parse_rfc3339)
        .map_or(0, json::unix_secs)
}

fn list_entry(i: &ImageInfo) -> Value {
    let im = &i.image;
    json!({
        "Id": im.id,
        "ParentId": "",
        "RepoTags": im.names,
        "RepoDigests": im.repo_digests,
        "Created": created_secs(i),
        "Size": im.size,
        "VirtualSize": im.size,
        "SharedSize": -1,
        "Labels": im.config.labels,
        "Containers": i.containers.len(),
    })
}

fn inspect_json(i: &ImageInfo) -> Value {
    let im = &i.image;
    let c = &im.config;
    let ports: serde_json::Map<String, Value> = c
        .exposed_ports
        .iter()
        .map(|p| (p.clone(), json!({})))
        .collect();
    json!({
        "Id": im.id,
        "RepoTags": im.names,
        "RepoDigests": im.repo_digests,
        "Parent": "",
        "Comment": "",
        "Created": im.created.clone().unwrap_or_else(|| json::ZERO_TIME.to_string()),
        "Container": "",
        "DockerVersion": "",
        "Author": "",
        "Config": {
            "Hostname": "", "Domainname": "", "User": c.user,
            "AttachStdin": false, "AttachStdout": false, "AttachStderr": false,
            "ExposedPorts": if ports.is_empty() { Value::Null } else { Value::Object(ports) },
            "Tty": false, "OpenStdin": false, "StdinOnce": false,
            "Env": c.env, "Cmd": c.cmd, "Image": "", "Volumes": null,
            "WorkingDir": c.working_dir,
            "Entrypoint": if c.entrypoint.is_empty() { Value::Null } else { json!(c.entrypoint) },
            "OnBuild": null, "Labels": c.labels,
        },
        "Architecture": im.architecture,
        "Os": im.os,
        "Size": im.size,
        "VirtualSize": im.size,
        "GraphDriver": {"Name": "overlay", "Data": null},
        "RootFS": {"Type": "layers", "Layers": im.layers},
        "Metadata": {"LastTagTime": im.imported_at},
    })
}

pub async fn list(api: &Api, q: &Query) -> ApiResult {
    let f = q.filters(&["reference", "label", "dangling"])?;
    let images = api.runtime.images().await?;
    let out: Vec<Value> = images
        .iter()
        .filter(|i| {
            f.any("reference", |r| {
                i.image
                    .names
                    .iter()
                    .any(|n| n == r || n.split(':').next() == Some(r))
            }) && f.any("dangling", |d| (d == "true") == i.image.names.is_empty())
                && f.labels(&i.image.config.labels)
        })
        .map(list_entry)
        .collect();
    ok_json(&Value::Array(out))
}

pub async fn inspect(api: &Api, name: &str) -> ApiResult {
    let missing = || ApiError::not_found(format!("No such image: {}", json::short(name)));
    let r = ImageRef::parse_as(name, "image").map_err(|_| missing())?;
    let i = api.runtime.inspect_image(&r).await.map_err(|e| {
        let e = ApiError::from(e);
        if e.status == StatusCode::NOT_FOUND {
            ApiError::not_found(format!("No such image: {r}"))
        } else {
            e
        }
    })?;
    ok_json(&inspect_json(&i))
}

pub async fn remove(api: &Api, name: &str, q: &Query) -> ApiResult {
    let r = ImageRef::parse_as(name, "image")?;
    let removed = api.runtime.remove_image(&r, q.flag("force")).await?;
    let mut out: Vec<Value> = removed
        .untagged
        .iter()
        .map(|u| json!({"Untagged": u}))
        .collect();
    if removed.deleted {
        out.push(json!({"Deleted": removed.info.image.id}));
    }
    ok_json(&Value::Array(out))
}

pub async fn tag(api: &Api, name: &str, q: &Query) -> ApiResult {
    let source = ImageRef::parse_as(name, "image")?;
    let repo = q.get("repo").unwrap_or("");
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    let target = ImageRef::parse_as(&target, "repo")?;
    api.runtime.tag_image(&source, &target).await?;
    Ok(super::empty(StatusCode::CREATED))
}

/// `POST /images/load`: the body is a `docker save` (or OCI layout)
/// archive, streamed into the store's import.
pub async fn load(api: &Api, req: Request<Incoming>, q: &Query) -> ApiResult {
    let size = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunks = req.into_body().into_data_stream().map(|r| {
        r.map(|b: Bytes| b.to_vec())
            .map_err(|e| rsup_runtime::Error::InvalidArgument {
                field: "archive",
                reason: format!("the upload broke off: {e}"),
            })
    });
    let info = api
        .runtime
        .import_image(Box::pin(chunks), None, size)
        .await?;
    let text = if info.image.names.is_empty() {
        format!("Loaded image ID: {}\n", info.image.id)
    } else {
        info.image
            .names
            .iter()
            .map(|n| format!("Loaded image: {n}\n"))
            .collect()
    };
    let _ = q;
    Ok(super::json_response(
        StatusCode::OK,
        &json!({"stream": text}),
    ))
}

/// `POST /auth` (`docker login`): the credentials are checked against the
/// registry (rsupd keeps none: the client stores them and sends them with
/// each pull and push, as Docker's CLI does).
pub async fn login(api: &Api, body: Value) -> ApiResult {
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    if !field("identitytoken").is_empty() {
        return Err(ApiError::unsupported_field(
            "logging in with an identity token",
        ));
    }
    let creds = Credentials::parse(field("username"), field("password"))?;
    let server = field("serveraddress");
    // Docker's clients name Docker Hub by its index URL.
    let host = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .trim_end_matches("/v2");
    let host = match host {
        "" | "index.docker.io" => "docker.io",
        h => h,
    };
    api.runtime.registry_login(host, &creds).await?;
    ok_json(&json!({"Status": "Login Succeeded", "IdentityToken": ""}))
}

/// Docker's `X-Registry-Auth`: base64url JSON with `username` and
/// `password` (an identity token is not supported).
fn credentials<B>(req: &Request<B>) -> Result<Option<Credentials>, ApiError> {
    let Some(h) = req.headers().get("X-Registry-Auth") else {
        return Ok(None);
    };
    use base64::Engine;
    let raw = h.as_bytes();
    let decoded = base64::engine::general_purpose::URL_SAFE
        .decode(raw)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(raw))
        .map_err(|_| ApiError::bad_request("X-Registry-Auth is not base64"))?;
    if decoded.iter().all(u8::is_ascii_whitespace) || decoded == b"{}" || decoded == b"null" {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(&decoded)
        .map_err(|_| ApiError::bad_request("X-Registry-Auth is not JSON"))?;
    let user = v.get("username").and_then(Value::as_str).unwrap_or("");
    let pass = v.get("password").and_then(Value::as_str).unwrap_or("");
    if user.is_empty() && pass.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials::parse(user, pass)?))
}

fn short_digest(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    hex[..hex.len().min(12)].to_string()
}

/// A pull or push progress event as Docker's JSON progress line.
fn progress_line(p: &PullProgress, pushing: bool) -> Value {
    match p {
        PullProgress::Resolved { digest, .. } => {
            json!({"status": format!("Resolved {digest}")})
        }
        PullProgress::Layer {
            digest,
            status,
            current,
            total,
        } => {
            let text = match (status, pushing) {
                (LayerStatus::Exists, true) => "Layer already exists",
                (LayerStatus::Exists, false) => "Already exists",
                (LayerStatus::Waiting, _) => "Waiting",
                (LayerStatus::Downloading | LayerStatus::Resuming, true) => "Pushing",
                (LayerStatus::Downloading | LayerStatus::Resuming, false) => "Downloading",
                (_, true) => "Pushed",
                (_, false) => layer_done_text(*status),
            };
            json!({
                "status": text,
                "id": short_digest(digest),
                "progressDetail": {"current": current, "total": total},
            })
        }
    }
}

fn layer_done_text(s: LayerStatus) -> &'static str {
    match s {
        LayerStatus::Exists => "Already exists",
        LayerStatus::Waiting => "Waiting",
        LayerStatus::Downloading | LayerStatus::Resuming => "Downloading",
        _ => "Pull complete",
    }
}

/// Runs `work` with a progress channel and streams its events as JSON
/// lines, then `done`'s lines, or Docker's in-stream error.
fn progress_response<W, T>(
    api: &Api,
    pushing: bool,
    work: impl FnOnce(mpsc::Sender<PullProgress>) -> W,
    done: impl FnOnce(T) -> Vec<Value> + Send + 'static,
) -> ApiResult
where
    W: std::future::Future<Output = Result<T, rsup_runtime::Error>> + Send + 'static,
    T: Send + 'static,
{
    let (ptx, mut prx) = mpsc::channel(64);
    let (tx, rx) = mpsc::channel(64);
    let fut = work(ptx);
    let shutdown = api.shutdown.clone();
    tokio::spawn(async move {
        let forward = {
            let tx = tx.clone();
            async move {
                while let Some(p) = prx.recv().await {
                    // A client that stops reading does not stall the work.
                    let _ = tx.try_send(json_line(&progress_line(&p, pushing)));
                }
            }
        };
        let (result, ()) = tokio::select! {
            r = async { tokio::join!(fut, forward) } => r,
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => return,
        };
        match result {
            Ok(v) => {
                for line in done(v) {
                    if tx.send(json_line(&line)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let e = ApiError::from(e);
                let _ = tx
                    .send(json_line(&json!({
                        "errorDetail": {"message": e.message},
                        "error": e.message,
                    })))
                    .await;
            }
        }
    });
    Ok(stream::json_lines(rx))
}

/// `POST /images/create?fromImage=NAME&tag=TAG`: a pull. (`fromSrc`, an
/// import of a root filesystem tarball, is not supported.)
pub async fn pull<B>(api: &Api, req: &Request<B>, q: &Query) -> ApiResult {
    if q.get("fromSrc").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unsupported("docker import (fromSrc)"));
    }
    if q.get("platform")
        .is_some_and(|p| !p.is_empty() && p != "linux/amd64" && p != "linux")
    {
        return Err(ApiError::unsupported_field(
            "a platform other than linux/amd64",
        ));
    }
    let from = q.get("fromImage").unwrap_or("");
    let reference = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.to_string(),
    };
    let remote = RemoteRef::parse(&reference)?;
    let creds = credentials(req)?;
    let rt = api.runtime.clone();
    let shown = remote.to_string();
    progress_response(
        api,
        false,
        move |tx| async move { rt.pull_image(&remote, creds.as_ref(), Some(tx)).await },
        move |info: ImageInfo| {
            let mut out: Vec<Value> = info
                .image
                .repo_digests
                .first()
                .map(|d| {
                    vec![
                        json!({"status": format!("Digest: {}", d.rsplit('@').next().unwrap_or(d))}),
                    ]
                })
                .unwrap_or_default();
            out.push(json!({"status": format!("Status: Downloaded newer image for {shown}")}));
            out
        },
    )
}

/// `POST /images/{name}/push?tag=`.
pub async fn push<B>(api: &Api, req: &Request<B>, name: &str, q: &Query) -> ApiResult {
    let reference = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{name}:{t}"),
        None => name.to_string(),
    };
    let remote = RemoteRef::parse(&reference)?;
    let creds = credentials(req)?;
    let rt = api.runtime.clone();
    let tag = remote.tag().to_string();
    progress_response(
        api,
        true,
        move |tx| async move { rt.push_image(&remote, creds.as_ref(), Some(tx)).await },
        move |digest: String| {
            // Docker's two lines: the one the CLI prints, then the aux
            // record it hands to its callback (and does not print).
            vec![
                json!({"status": format!("{tag}: digest: {digest}")}),
                json!({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest}}),
            ]
        },
    )
}
