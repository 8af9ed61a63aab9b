//! The child of the init that becomes the container's command: it sets its
//! stdio, user, capabilities and seccomp filter, looks the command up inside
//! the container (after every mount, as runc does: a bind mount or a volume
//! may provide it) and execs it.
//!
//! Invariants: it never returns; what went wrong before the exec goes to the
//! init on the exec pipe as `CODE MESSAGE` (CODE: Docker's 126 or 127, 0 for
//! none), and the pipe closes on a successful exec (close-on-exec); signals
//! are unblocked and the init's handlers are reset by the exec.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sys::signal::SigSet;
use nix::unistd::{Gid, Uid};

use crate::spec::ContainerSpec;
use crate::sys;

/// The child that becomes the command. Never returns.
pub(super) fn exec(
    spec: &ContainerSpec,
    out_w: OwnedFd,
    err_w: OwnedFd,
    exec_w: OwnedFd,
    release_r: OwnedFd,
    filter_inherited: bool,
) -> ! {
    let report = File::from(exec_w);
    // "CODE MESSAGE": the exit code to record (0: none) and why.
    let fail_code = |code: i32, msg: &str| -> ! {
        let _ = write!(&report, "{code} {msg}");
        sys::exit_now(if code == 0 { 127 } else { code });
    };
    let fail =
        |what: &str, e: &dyn std::fmt::Display| -> ! { fail_code(0, &format!("{what}: {e}")) };
    if let Err(e) = SigSet::all().thread_unblock() {
        fail("sigprocmask", &e);
    }
    // Handlers installed by the init are reset to the default by execve; the
    // noop ones must not be inherited as SIG_IGN, and they are not.
    let null = match nix::fcntl::open("/dev/null", OFlag::O_RDONLY, nix::sys::stat::Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => fail("open /dev/null", &e),
    };
    if let Err(e) = nix::unistd::dup2_stdin(&null)
        .and_then(|_| nix::unistd::dup2_stdout(&out_w))
        .and_then(|_| nix::unistd::dup2_stderr(&err_w))
    {
        fail("dup2", &e);
    }
    drop((null, out_w, err_w));
    // A user that a mount may define is resolved now, in the container.
    let (user, env) = if spec.user_at_start {
        match crate::spec::resolve_user_in_container(&spec.user_spec) {
            Ok((user, home)) => {
                let mut env = spec.env.clone();
                if !env.iter().any(|kv| kv.starts_with("HOME=")) {
                    env.push(format!("HOME={home}"));
                }
                (user, env)
            }
            Err(e) => fail("user", &e),
        }
    } else {
        (spec.user, spec.env.clone())
    };
    if let Err(e) = spec.security.drop_bounding() {
        fail("capabilities", &e);
    }
    if let Err(e) = nix::unistd::setgroups(&[]) {
        fail("setgroups", &e);
    }
    if let Err(e) = nix::unistd::setgid(Gid::from_raw(user.gid)) {
        fail("setgid", &e);
    }
    if let Err(e) = nix::unistd::setuid(Uid::from_raw(user.uid)) {
        fail("setuid", &e);
    }
    if let Err(e) = nix::unistd::chdir(spec.working_dir.as_str()) {
        fail(&format!("chdir {}", spec.working_dir), &e);
    }
    // The command is looked up here, inside the container after its mounts
    // (as runc does): a bind mount or a volume may provide it.
    let cmd = spec.command.first().map(String::as_str).unwrap_or_default();
    let executable = match find_command(cmd, &env) {
        Ok(p) => p,
        Err((code, msg)) => fail_code(code, &msg),
    };
    if let Err(e) = spec.security.apply_after_setuid(user.uid) {
        fail("capabilities", &e);
    }
    // The default profile's filter is the init's, inherited at the fork:
    // checked, never assumed (mode 2 is a filter in place).
    if filter_inherited {
        match sys::seccomp_mode() {
            Ok(2) => {}
            Ok(mode) => fail(
                "seccomp",
                &format!("the init's filter is not in place (mode {mode})"),
            ),
            Err(e) => fail("seccomp", &e),
        }
    } else if let Err(e) = spec.security.apply_seccomp() {
        fail("seccomp", &e);
    }
    let cstr = |s: &str| CString::new(s).unwrap_or_default();
    let path = cstr(&executable);
    let argv: Vec<CString> = spec.command.iter().map(|a| cstr(a)).collect();
    let env: Vec<CString> = env.iter().map(|a| cstr(a)).collect();
    // The init confines itself while this process sets up; the container's
    // code runs only once it is done (its byte), never if it failed (EOF).
    let mut b = [0u8; 1];
    if !matches!(File::from(release_r).read(&mut b), Ok(1)) {
        sys::exit_now(1);
    }
    let Err(e) = nix::unistd::execve(&path, &argv, &env);
    let code = if e == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    fail_code(code, &format!("exec: {cmd:?}: {}", e.desc().to_lowercase()))
}

/// Finds `cmd` as Docker (runc) does, in the caller's root and working
/// directory: a name with a '/' is taken as is (relative to the working
/// directory), a bare name is searched in the absolute directories of the
/// env's PATH (Docker's default PATH when it has none). `Err((code,
/// message))` with Docker's exit codes: 127 not found, 126 found but not
/// executable.
fn find_command(cmd: &str, env: &[String]) -> Result<String, (i32, String)> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |m: &std::fs::Metadata| m.is_file() && m.permissions().mode() & 0o111 != 0;
    if cmd.is_empty() {
        return Err((127, "exec: no command".to_string()));
    }
    if cmd.contains('/') {
        return match std::fs::metadata(cmd) {
            Ok(m) if executable(&m) => Ok(cmd.to_string()),
            Ok(m) if m.is_dir() => Err((126, format!("exec: {cmd:?}: is a directory"))),
            Ok(_) => Err((126, format!("exec: {cmd:?}: permission denied"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err((
                127,
                format!("exec: {cmd:?}: stat {cmd}: no such file or directory"),
            )),
            Err(e) => Err((126, format!("exec: {cmd:?}: stat {cmd}: {e}"))),
        };
    }
    let path_var = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(crate::spec::DEFAULT_PATH);
    let mut denied = false;
    for d in path_var.split(':').filter(|d| d.starts_with('/')) {
        let c = format!("{}/{cmd}", d.trim_end_matches('/'));
        match std::fs::metadata(&c) {
            Ok(m) if executable(&m) => return Ok(c),
            Ok(m) if m.is_file() => denied = true,
            _ => {}
        }
    }
    if denied {
        return Err((126, format!("exec: {cmd:?}: permission denied")));
    }
    Err((
        127,
        format!("exec: {cmd:?}: executable file not found in $PATH"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn commands_are_found_as_docker_finds_them() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let write = |name: &str, mode: u32| {
            let p = bin.join(name);
            std::fs::write(&p, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            p.display().to_string()
        };
        let tool = write("tool", 0o755);
        write("plain", 0o644);
        let env = [format!("PATH=relative:{}", bin.display())];
        assert_eq!(find_command("tool", &env), Ok(tool.clone()));
        assert_eq!(find_command(&tool, &[]), Ok(tool));
        let (code, msg) = find_command("nosuch", &env).expect_err("missing");
        assert_eq!(code, 127);
        assert_eq!(msg, r#"exec: "nosuch": executable file not found in $PATH"#);
        let (code, msg) = find_command("plain", &env).expect_err("not executable");
        assert_eq!(
            (code, msg.as_str()),
            (126, r#"exec: "plain": permission denied"#)
        );
        let dir = bin.display().to_string();
        let (code, msg) = find_command(&dir, &env).expect_err("a directory");
        assert_eq!(code, 126);
        assert!(msg.ends_with("is a directory"), "{msg}");
        let gone = format!("{dir}/gone");
        let (code, msg) = find_command(&gone, &env).expect_err("missing");
        assert_eq!(code, 127);
        assert!(msg.ends_with("no such file or directory"), "{msg}");
        assert_eq!(find_command("", &env).expect_err("empty").0, 127);
    }
}
