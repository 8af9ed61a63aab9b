//! A subset of the Docker Engine REST API (version 1.41, what Docker 20.10
//! speaks) on its own Unix socket (`--docker-socket`), so that the docker
//! CLI, docker-compose and the Docker SDKs drive rsup's containers.
//!
//! Like the gRPC services beside it, this is a translation: each endpoint
//! parses its request once (names into the runtime's validated types, the
//! rest into the runtime's request structs), makes the same runtime calls
//! the gRPC server makes and writes Docker's JSON. No behaviour lives here
//! twice: a runtime error becomes the gRPC status the gRPC API would send
//! ([`crate::grpc::status`]) and then the HTTP status Docker uses for it.
//!
//! What is not supported (TTYs, stdin, pause, commit, build, swarm, host
//! networking, ...) answers Docker's error shape `{"message": ...}` with
//! 501 (an endpoint) or 400 (a field) and a message that says so, before
//! anything is created.

mod containers;
mod exec;
mod images;
mod json;
mod objects;
mod stream;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use rsup_runtime::Runtime;
use serde_json::Value;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The API version served (Docker 20.10's).
pub const API_VERSION: &str = "1.41";
/// The oldest version a client may ask for in its path.
pub const MIN_API_VERSION: &str = "1.12";

/// Connections served at once; more wait in the listen queue (each costs
/// a task and a descriptor, which the gRPC side shares).
const MAX_CONNECTIONS: usize = 512;
/// A client must send its request's headers within this (also between
/// requests of a kept-alive connection).
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Largest JSON request body (a create with a long environment is tens of
/// KiB; Docker has no limit, a root daemon wants one).
const MAX_JSON_BODY: usize = 4 << 20;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// An HTTP answer in Docker's shape: a status and `{"message": ...}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// A feature Docker has and rsupd does not.
    pub fn unsupported(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("{what} is not supported by rsupd's Docker API"),
        )
    }

    /// A field set to what rsupd does not do: 400, nothing created.
    pub fn unsupported_field(what: impl std::fmt::Display) -> ApiError {
        ApiError::bad_request(format!("{what} is not supported by rsupd's Docker API"))
    }
}

/// The one mapping of runtime errors: the gRPC code the gRPC API would
/// send, then Docker's HTTP status for it.
impl From<rsup_runtime::Error> for ApiError {
    fn from(e: rsup_runtime::Error) -> ApiError {
        let s = crate::grpc::status(e);
        use tonic::Code;
        let status = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable | Code::ResourceExhausted => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // Docker's clients look for "No such image" (docker-py's
        // ImageNotFound) and print "No such container: x".
        let message = match s.message().strip_prefix("no such ") {
            Some(rest) if status == StatusCode::NOT_FOUND => format!("No such {rest}"),
            _ => s.message().to_string(),
        };
        ApiError::new(status, message)
    }
}

pub type ApiResult = Result<Response<Body>, ApiError>;

/// What every handler shares.
#[derive(Clone)]
pub struct Api {
    pub runtime: Runtime,
    pub execs: Arc<exec::Execs>,
    pub shutdown: CancellationToken,
}

/// Serves the API on `listener` until `token` is cancelled.
pub async fn serve(listener: UnixListener, runtime: Runtime, token: CancellationToken) {
    let api = Api {
        runtime,
        execs: Arc::new(exec::Execs::default()),
        shutdown: token.clone(),
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
            _ = token.cancelled() => return,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "docker API: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = token.cancelled() => return,
        };
        let api = api.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    debug!(error = %e, "docker API connection ended");
                },
                _ = token.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}

/// The path without its `/v1.NN` prefix, or an error for a version this
/// server does not speak.
fn strip_version(path: &str) -> Result<&str, ApiError> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(path);
    };
    let (version, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let parse = |v: &str| -> Option<(u32, u32)> {
        let (a, b) = v.split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    match parse(version) {
        Some(v) if v > (1, 41) => Err(ApiError::bad_request(format!(
            "client version {version} is too new. Maximum supported API version is {API_VERSION}"
        ))),
        Some(v) if v < (1, 12) => Err(ApiError::bad_request(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}"
        ))),
        Some(_) => Ok(if tail.is_empty() { "/" } else { tail }),
        None => Ok(path),
    }
}

impl Api {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        debug!(%method, uri = %req.uri(), "docker API request");
        let result = match strip_version(&path) {
            Ok(p) => {
                let p = p.to_string();
                self.route(req, &method, &p).await
            }
            Err(e) => Err(e),
        };
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                debug!(%method, %path, status = %e.status, message = %e.message, "docker API error");
                error_response(&e)
            }
        };
        let h = resp.headers_mut();
        h.insert(
            "Api-Version",
            hyper::header::HeaderValue::from_static(API_VERSION),
        );
        h.insert(
            "Docker-Experimental",
            hyper::header::HeaderValue::from_static("false"),
        );
        h.insert("Ostype", hyper::header::HeaderValue::from_static("linux"));
        h.insert(
            hyper::header::SERVER,
            hyper::header::HeaderValue::from_static(concat!("rsupd/", env!("CARGO_PKG_VERSION"))),
        );
        resp
    }

    async fn route(&self, req: Request<Incoming>, method: &Method, path: &str) -> ApiResult {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let q = Query::of(&req);
        match (method, parts.as_slice()) {
            (&Method::GET | &Method::HEAD, ["_ping"]) => objects::ping(method),
            (&Method::GET, ["version"]) => objects::version(self),
            (&Method::GET, ["info"]) => objects::info(self).await,
            (&Method::GET, ["events"]) => objects::events(self, &q),
            (&Method::GET, ["containers", "json"]) => containers::list(self, &q),
            (&Method::POST, ["containers", "create"]) => {
                containers::create(self, &q, read_json(req).await?).await
            }
            (&Method::POST, ["containers", "prune"]) => {
                Err(ApiError::unsupported("container prune"))
            }
            (&Method::GET, ["containers", id, "json"]) => containers::inspect(self, id),
            (&Method::POST, ["containers", id, "start"]) => containers::start(self, id).await,
            (&Method::POST, ["containers", id, "stop"]) => containers::stop(self, id, &q).await,
            (&Method::POST, ["containers", id, "restart"]) => {
                containers::restart(self, id, &q).await
            }
            (&Method::POST, ["containers", id, "kill"]) => containers::kill(self, id, &q).await,
            (&Method::POST, ["containers", id, "wait"]) => containers::wait(self, id, &q).await,
            (&Method::DELETE, ["containers", id]) => containers::remove(self, id, &q).await,
            (&Method::GET, ["containers", id, "logs"]) => containers::logs(self, id, &q),
            (&Method::POST, ["containers", id, "attach"]) => containers::attach(self, req, id, &q),
            (&Method::POST, ["containers", _, "resize"]) => Ok(empty(StatusCode::OK)),
            (&Method::GET, ["containers", id, "stats"]) => containers::stats(self, id, &q),
            (&Method::GET, ["containers", id, "top"]) => Err(ApiError::unsupported(format!(
                "docker top ({})",
                json::short(id)
            ))),
            (&Method::POST, ["containers", id, "exec"]) => {
                exec::create(self, id, read_json(req).await?)
            }
            (&Method::POST, ["exec", id, "start"]) => exec::start(self, req, id).await,
            (&Method::POST, ["exec", _, "resize"]) => Ok(empty(StatusCode::OK)),
            (&Method::GET, ["exec", id, "json"]) => exec::inspect(self, id),
            (&Method::POST, ["containers", _, what]) => Err(ApiError::unsupported(format!(
                "POST /containers/{{id}}/{}",
                json::short(what)
            ))),
            (&Method::POST, ["auth"]) => images::login(self, read_json(req).await?).await,
            (&Method::GET, ["images", "json"]) => images::list(self, &q).await,
            (&Method::POST, ["images", "load"]) => images::load(self, req, &q).await,
            (&Method::POST, ["images", "create"]) => images::pull(self, &req, &q).await,
            (&Method::GET, ["images", rest @ .., "json"]) if !rest.is_empty() => {
                images::inspect(self, &rest.join("/")).await
            }
            (&Method::POST, ["images", rest @ .., "tag"]) if !rest.is_empty() => {
                images::tag(self, &rest.join("/"), &q).await
            }
            (&Method::POST, ["images", rest @ .., "push"]) if !rest.is_empty() => {
                images::push(self, &req, &rest.join("/"), &q).await
            }
            (&Method::DELETE, ["images", rest @ ..]) if !rest.is_empty() => {
                images::remove(self, &rest.join("/"), &q).await
            }
            (&Method::GET, ["networks"]) => objects::networks(self, &q),
            (&Method::POST, ["networks", "create"]) => {
                objects::create_network(self, read_json(req).await?).await
            }
            (&Method::GET, ["networks", id]) => objects::inspect_network(self, id),
            (&Method::DELETE, ["networks", id]) => objects::remove_network(self, id).await,
            (&Method::POST, ["networks", id, "connect"]) => {
                objects::connect(self, id, read_json(req).await?).await
            }
            (&Method::POST, ["networks", id, "disconnect"]) => {
                objects::disconnect(self, id, read_json(req).await?).await
            }
            (&Method::GET, ["volumes"]) => objects::volumes(self, &q),
            (&Method::POST, ["volumes", "create"]) => {
                objects::create_volume(self, read_json(req).await?)
            }
            (&Method::GET, ["volumes", name]) => objects::inspect_volume(self, name),
            (&Method::DELETE, ["volumes", name]) => objects::remove_volume(self, name, &q),
            _ => Err(ApiError::unsupported(format!(
                "{method} {}",
                rsup_runtime::names::quote(path)
            ))),
        }
    }
}

/// The query string's parameters (later ones win).
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    fn of<B>(req: &Request<B>) -> Query {
        Query(
            req.uri()
                .query()
                .map(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Docker's booleans: `1`, `true`, `True` (and absent, empty, `0`,
    /// `false` are false).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true" | "True" | "yes"))
    }

    /// A boolean that defaults to true when absent.
    pub fn flag_or(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            None | Some("") => default,
            Some(_) => self.flag(key),
        }
    }

    /// Docker's `filters`: a JSON object of key -> list of values (or, from
    /// old clients, key -> {value: true}). Keys not in `allowed` are refused
    /// as Docker refuses them.
    pub fn filters(&self, allowed: &[&str]) -> Result<Filters, ApiError> {
        let Some(raw) = self.get("filters").filter(|s| !s.is_empty()) else {
            return Ok(Filters::default());
        };
        let v: Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid filters: {e}")))?;
        let Value::Object(map) = v else {
            return Err(ApiError::bad_request("invalid filters: not a JSON object"));
        };
        let mut out = Vec::new();
        for (k, v) in map {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "invalid filter '{}'",
                    json::short(&k)
                )));
            }
            let values: Vec<String> = match v {
                Value::Array(a) => a
                    .into_iter()
                    .map(|x| match x {
                        Value::String(s) => Ok(s),
                        _ => Err(ApiError::bad_request("invalid filters: values are strings")),
                    })
                    .collect::<Result<_, _>>()?,
                Value::Object(m) => m.into_iter().map(|(k, _)| k).collect(),
                Value::String(s) => vec![s],
                _ => return Err(ApiError::bad_request("invalid filters")),
            };
            out.push((k, values));
        }
        Ok(Filters(out))
    }
}

/// Parsed `filters`: every key's values; an object passes a key when it
/// matches any of its values, and the filter when it passes every key.
#[derive(Debug, Default)]
pub struct Filters(Vec<(String, Vec<String>)>);

impl Filters {
    pub fn values(&self, key: &str) -> Option<&[String]> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// True when `key` is not filtered or `pred` holds for one of its values.
    pub fn any(&self, key: &str, pred: impl Fn(&str) -> bool) -> bool {
        self.values(key).is_none_or(|vs| vs.iter().any(|v| pred(v)))
    }

    /// Docker's `label` filter: every `KEY` or `KEY=VALUE` given must hold
    /// (labels are ANDed, unlike the other keys).
    pub fn labels(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.values("label").is_none_or(|vs| {
            vs.iter().all(|f| match f.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                None => labels.contains_key(f.as_str()),
            })
        })
    }
}

/// Reads a JSON body (at most [`MAX_JSON_BODY`] bytes; an empty body is
/// `{}`).
async fn read_json(req: Request<Incoming>) -> Result<Value, ApiError> {
    read_json_body(req.into_body()).await
}

/// [`read_json`] of a body taken from its request.
pub async fn read_json_body(body: Incoming) -> Result<Value, ApiError> {
    let body = http_body_util::Limited::new(body, MAX_JSON_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
        .to_bytes();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in the request body: {e}")))?;
    // Every body Docker takes is an object: `[]`, `"x"` or `null` read as
    // `{}` would make, say, an anonymous volume nobody asked for.
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "invalid JSON in the request body: not an object",
        ));
    }
    Ok(v)
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

pub fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

pub fn ok_json(v: &Value) -> ApiResult {
    Ok(json_response(StatusCode::OK, v))
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.status, &serde_json::json!({ "message": e.message }))
}

/// The Unix time `secs` (Docker's `since`/`until`), or `None` when it is
/// negative, not finite or past what `SystemTime` holds: both
/// `Duration::from_secs_f64` and `SystemTime + Duration` panic there.
pub fn epoch_plus(secs: f64) -> Option<std::time::SystemTime> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    let d = std::time::Duration::try_from_secs_f64(secs).ok()?;
    std::time::SystemTime::UNIX_EPOCH.checked_add(d)
}

/// A path segment that should name a container, parsed at the edge.
pub fn container_ref(id: &str) -> Result<rsup_runtime::names::ContainerRef, ApiError> {
    // Docker's clients sometimes send the name with its leading '/'.
    let id = id.strip_prefix('/').unwrap_or(id);
    rsup_runtime::names::ContainerRef::parse_as(id, "container").map_err(ApiError::from)
}

/// The socket's directory and the socket itself, as rsupd makes its gRPC
/// socket (0755 directory, 0660 socket, the group of `--socket-group`).
pub async fn bind(path: &Path, gid: Option<u32>) -> anyhow::Result<UnixListener> {
    crate::bind_unix(path, gid).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_in_the_path() {
        assert_eq!(
            strip_version("/v1.41/containers/json").ok(),
            Some("/containers/json")
        );
        assert_eq!(strip_version("/v1.24/_ping").ok(), Some("/_ping"));
        assert_eq!(strip_version("/_ping").ok(), Some("/_ping"));
        assert_eq!(
            strip_version("/v1.99/info").map_err(|e| e.status).err(),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            strip_version("/v1.1/info").map_err(|e| e.status).err(),
            Some(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn filters_parse_both_shapes_and_refuse_unknown_keys() {
        let q = Query(vec![(
            "filters".into(),
            r#"{"label":["a=1","b"],"name":{"x":true}}"#.into(),
        )]);
        let f = q.filters(&["label", "name"]).expect("filters");
        assert_eq!(f.values("name"), Some(&["x".to_string()][..]));
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("a".to_string(), "1".to_string());
        assert!(!f.labels(&labels));
        labels.insert("b".to_string(), String::new());
        assert!(f.labels(&labels));
        labels.insert("a".to_string(), "2".to_string());
        assert!(!f.labels(&labels));
        assert_eq!(
            q.filters(&["name"]).map_err(|e| e.status).err(),
            Some(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn times_past_the_clock_are_refused_not_panics() {
        for bad in [
            -1.0,
            f64::NAN,
            f64::INFINITY,
            1e300,
            1e19,
            18_446_744_073_709_551_615.0,
            9_223_372_036_854_775_807.5,
        ] {
            assert_eq!(epoch_plus(bad), None, "{bad}");
        }
        assert_eq!(epoch_plus(0.0), Some(std::time::SystemTime::UNIX_EPOCH));
        assert!(epoch_plus(1_700_000_000.5).is_some());
    }

    #[test]
    fn runtime_errors_keep_their_meaning() {
        let e = ApiError::from(rsup_runtime::Error::NotFound("no such container: x".into()));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "No such container: x");
        let e = ApiError::from(rsup_runtime::Error::AlreadyExists("x".into()));
        assert_eq!(e.status, StatusCode::CONFLICT);
        let e = ApiError::from(rsup_runtime::Error::InvalidArgument {
            field: "name",
            reason: "bad".into(),
        });
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
