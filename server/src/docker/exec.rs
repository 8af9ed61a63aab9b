//! `docker exec`: an exec instance is created (its config kept here, by a
//! random id), started (the runtime's exec, the same call as the gRPC
//! Exec; its output then goes to the client as stdout and stderr frames)
//! and inspected for its exit code. No TTY and no stdin.
//!
//! The table is bounded: past [`MAX_EXECS`] instances the oldest finished
//! ones are forgotten (Docker forgets them when their container goes).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use rsup_runtime::containers::exec::ExecRequest;
use rsup_runtime::names::ContainerRef;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::stream::{self, STDERR, STDOUT};
use super::{Api, ApiError, ApiResult, container_ref, json, ok_json};

const MAX_EXECS: usize = 1024;
/// Bytes of command, environment, user and working dir one instance may
/// keep (so the table holds at most 1024 x 256 KiB).
const MAX_EXEC_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
struct Instance {
    container: ContainerRef,
    container_id: String,
    argv: Vec<String>,
    env: Vec<String>,
    user: String,
    workdir: String,
    stdout: bool,
    stderr: bool,
    running: bool,
    started: bool,
    exit_code: Option<i64>,
    created: Instant,
}

#[derive(Debug, Default)]
pub struct Execs {
    table: Mutex<HashMap<String, Instance>>,
}

impl Execs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instance>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, id: String, i: Instance) -> Result<(), ApiError> {
        let mut t = self.lock();
        while t.len() >= MAX_EXECS {
            let oldest = t
                .iter()
                .filter(|(_, x)| !x.running)
                .min_by_key(|(_, x)| x.created)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    t.remove(&k);
                }
                None => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("{MAX_EXECS} exec instances are running"),
                    ));
                }
            }
        }
        t.insert(id, i);
        Ok(())
    }
}

fn exec_id(id: &str) -> Result<&str, ApiError> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!(
            "No such exec instance: {}",
            json::short(id)
        )))
    }
}

/// `POST /containers/{id}/exec`.
pub fn create(api: &Api, id: &str, body: Value) -> ApiResult {
    let key = container_ref(id)?;
    let c = api.runtime.inspect(&key)?;
    if bool_of(&body, "Tty") {
        return Err(ApiError::unsupported_field(
            "a TTY for exec (docker exec -t)",
        ));
    }
    if bool_of(&body, "AttachStdin") {
        return Err(ApiError::unsupported_field(
            "stdin for exec (docker exec -i)",
        ));
    }
    if bool_of(&body, "Privileged") {
        return Err(ApiError::unsupported_field("a privileged exec"));
    }
    if c.state != rsup_runtime::ContainerState::Running {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Container {} is not running", c.id),
        ));
    }
    let argv = json::strings(&body, "Cmd")?;
    if argv.is_empty() {
        return Err(ApiError::bad_request("No exec command specified"));
    }
    let env = json::strings(&body, "Env")?;
    let bytes: usize = argv.iter().chain(&env).map(String::len).sum::<usize>()
        + str_of(&body, "User").len()
        + str_of(&body, "WorkingDir").len();
    if bytes > MAX_EXEC_BYTES {
        return Err(ApiError::bad_request(format!(
            "the exec's command and environment are {bytes} bytes: at most {MAX_EXEC_BYTES}"
        )));
    }
    let id = json::random_id()?;
    api.execs.insert(
        id.clone(),
        Instance {
            container: key,
            container_id: c.id,
            argv,
            env,
            user: str_of(&body, "User"),
            workdir: str_of(&body, "WorkingDir"),
            stdout: bool_of(&body, "AttachStdout"),
            stderr: bool_of(&body, "AttachStderr"),
            running: false,
            started: false,
            exit_code: None,
            created: Instant::now(),
        },
    )?;
    Ok(super::json_response(
        StatusCode::CREATED,
        &json!({"Id": id}),
    ))
}

fn bool_of(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// `POST /exec/{id}/start`: runs it; the output comes as frames on the
/// hijacked connection (or at once, detached, nothing).
pub async fn start(api: &Api, req: Request<Incoming>, id: &str) -> ApiResult {
    let id = exec_id(id)?.to_string();
    let (parts, body) = req.into_parts();
    let body = super::read_json_body(body).await?;
    if bool_of(&body, "Tty") {
        return Err(ApiError::unsupported_field(
            "a TTY for exec (docker exec -t)",
        ));
    }
    let detach = bool_of(&body, "Detach");
    let req = Request::from_parts(parts, ());
    let inst = {
        let mut t = api.execs.lock();
        let Some(i) = t.get_mut(&id) else {
            return Err(ApiError::not_found(format!("No such exec instance: {id}")));
        };
        if i.started {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("exec instance {id} has already been started"),
            ));
        }
        i.started = true;
        i.running = true;
        i.clone()
    };
    let (tx, rx) = mpsc::channel(4);
    let api2 = api.clone();
    let id2 = id.clone();
    let run = async move {
        let out = api2
            .runtime
            .exec(
                &inst.container,
                ExecRequest {
                    argv: inst.argv.clone(),
                    env: inst.env.clone(),
                    user: inst.user.clone(),
                    workdir: inst.workdir.clone(),
                    timeout: None,
                },
            )
            .await;
        let code = match &out {
            Ok(o) => i64::from(o.exit_code),
            // Docker: 126 when the command cannot be run.
            Err(_) => 126,
        };
        if let Some(i) = api2.execs.lock().get_mut(&id2) {
            i.running = false;
            i.exit_code = Some(code);
        }
        match out {
            Ok(o) => {
                if inst.stdout && !o.stdout.is_empty() {
                    let _ = tx.send(stream::frame(STDOUT, &o.stdout)).await;
                }
                if inst.stderr && !o.stderr.is_empty() {
                    let _ = tx.send(stream::frame(STDERR, &o.stderr)).await;
                }
            }
            Err(e) => {
                let msg = format!("{}\n", ApiError::from(e).message);
                let _ = tx.send(stream::frame(STDERR, msg.as_bytes())).await;
            }
        }
    };
    if detach {
        tokio::spawn(run);
        return Ok(super::empty(StatusCode::OK));
    }
    tokio::spawn(run);
    Ok(stream::hijack(req, rx))
}

/// `GET /exec/{id}/json`.
pub fn inspect(api: &Api, id: &str) -> ApiResult {
    let id = exec_id(id)?;
    let t = api.execs.lock();
    let Some(i) = t.get(id) else {
        return Err(ApiError::not_found(format!("No such exec instance: {id}")));
    };
    ok_json(&json!({
        "ID": id,
        "Running": i.running,
        "ExitCode": i.exit_code,
        "ProcessConfig": {
            "tty": false,
            "entrypoint": i.argv.first(),
            "arguments": i.argv.iter().skip(1).collect::<Vec<_>>(),
            "privileged": false,
            "user": i.user,
        },
        "OpenStdin": false,
        "OpenStderr": i.stderr,
        "OpenStdout": i.stdout,
        "CanRemove": !i.running,
        "ContainerID": i.container_id,
        "DetachKeys": "",
        "Pid": 0,
    }))
}
