//! (b) Mount targets through symlinks create nothing outside the root, and
//! (f) /etc files an image or rootfs symlinks out of the root are not
//! written through.
//!
//! The root carries `evil -> <canary>` (absolute) and `evil-rel -> ../..
//! (20 times)<canary>` (relative: from any depth on the host it climbs to
//! `/` and down into the canary; inside the container it stays in the
//! root). Each case mounts the same source on `/evil/x` and `/evil-rel/x`:
//! a named volume, a host directory, a host file, a tmpfs. A symlink a
//! container leaves in a named volume is the same attack one step later.
//!
//! Expected (issue 13): the canary tree is byte-identical after every case.
//! A case may be refused (create or start fails), or it runs and the mount
//! is where the container sees `/evil/x` (the symlink resolved inside the
//! root, as `openat2(RESOLVE_IN_ROOT)` does). Running with the mount
//! elsewhere is a failure too. All cases run before the test fails, so one
//! run shows every hole.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rsup_client::proto;
use rsup_tests::{Daemon, TempDir, unique_name};

use super::common::{
    Canary, hostile_rootfs, image_daemon, image_spec, import_hostile_image, in_throwaway_vm,
    remap_daemon, rootfs_spec, run_to_end,
};

/// `../` enough times to reach `/` from any state dir on the host.
fn climb() -> String {
    "../".repeat(20)
}

/// The two hostile symlinks every root of this module carries.
fn evil_links(canary: &Canary) -> Vec<(&'static str, String)> {
    let c = canary.path().display().to_string();
    vec![
        ("evil", c.clone()),
        (
            "evil-rel",
            format!("{}{}", climb(), c.trim_start_matches('/')),
        ),
    ]
}

/// /etc files pointing out of the root at canary files.
fn etc_links(canary: &Canary) -> Vec<(&'static str, String)> {
    let c = canary.path().display().to_string();
    let rel = format!("{}{}", climb(), c.trim_start_matches('/'));
    vec![
        ("etc/hosts", format!("{c}/file.txt")),
        ("etc/resolv.conf", format!("{rel}/secret")),
        ("etc/hostname", format!("{c}/dir/nested.txt")),
    ]
}

/// What gets mounted on the two symlinked targets; the sources carry the
/// `dev:ino` the host sees for them, which the container must see at the
/// target (a stat needs no read permission, so this holds for remapped
/// containers too).
enum Source {
    Volume(String, String),
    Dir(PathBuf, String),
    File(PathBuf, String),
    Tmpfs,
}

/// `dev:ino` of `p`, as busybox `stat -c %d:%i` prints it.
fn dev_ino(p: &Path) -> String {
    let m = fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    format!("{}:{}", m.dev(), m.ino())
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Volume(v, _) => format!("-v {v}:TARGET"),
            Source::Dir(d, _) => format!("-v {}:TARGET (dir)", d.display()),
            Source::File(f, _) => format!("-v {}:TARGET (file)", f.display()),
            Source::Tmpfs => "--tmpfs TARGET".to_owned(),
        }
    }

    /// Sets the mount of `target` in `spec`.
    fn add_to(&self, spec: &mut proto::ContainerSpec, target: &str) {
        match self {
            Source::Volume(v, _) => spec.volumes.push(format!("{v}:{target}")),
            Source::Dir(p, _) | Source::File(p, _) => {
                spec.volumes.push(format!("{}:{target}", p.display()))
            }
            Source::Tmpfs => spec.tmpfs.push(target.to_owned()),
        }
    }

    /// A shell line printing `LANDED <target>` if the mount is visible at
    /// `target` inside the container.
    fn probe(&self, target: &str) -> String {
        match self {
            Source::Volume(_, id) | Source::Dir(_, id) | Source::File(_, id) => {
                format!("test \"$(stat -c %d:%i {target})\" = {id} && echo LANDED {target}")
            }
            Source::Tmpfs => {
                format!("test \"$(stat -f -c %T {target})\" = tmpfs && echo LANDED {target}")
            }
        }
    }
}

/// The four sources, made in `dir` (and a volume in `d`).
async fn sources(d: &Daemon, dir: &Path) -> Vec<Source> {
    let vol = d
        .client()
        .create_volume(&unique_name("srcvol"))
        .await
        .expect("create volume");
    let vol_id = dev_ino(Path::new(&vol.mountpoint));
    let src_dir = dir.join("src-dir");
    fs::create_dir_all(&src_dir).expect("mkdir");
    let src_file = dir.join("src-file");
    fs::write(&src_file, "from-the-source\n").expect("file");
    vec![
        Source::Volume(vol.name, vol_id),
        Source::Dir(src_dir.clone(), dev_ino(&src_dir)),
        Source::File(src_file.clone(), dev_ino(&src_file)),
        Source::Tmpfs,
    ]
}

/// Runs `base` with `source` mounted on every target; `Err` with what went
/// wrong (canary changed, or ran with a mount that did not land).
async fn mount_case(
    d: &Daemon,
    canary: &mut Canary,
    what: &str,
    mut spec: proto::ContainerSpec,
    source: &Source,
    targets: &[&str],
) -> Result<String, String> {
    let mut script = String::new();
    for t in targets {
        source.add_to(&mut spec, t);
        script.push_str(&format!("{}; ", source.probe(t)));
    }
    script.push_str("true");
    spec.command = vec!["sh".into(), "-c".into(), script];
    let case = format!("{what}: {} on {targets:?}", source.describe());
    let outcome = run_to_end(d, spec).await;
    let mut problems = Vec::new();
    if let Err(e) = canary.check() {
        problems.push(e);
        canary.replant();
    }
    let verdict = match &outcome {
        Err(status) => format!("refused ({:?}: {})", status.code(), status.message()),
        Ok(ran) => {
            let missing: Vec<&&str> = targets
                .iter()
                .filter(|t| !ran.output.lines().any(|l| l == format!("LANDED {t}")))
                .collect();
            if missing.is_empty() {
                "ran, the mounts landed inside the root".to_owned()
            } else {
                problems.push(format!(
                    "nothing is mounted at {missing:?} inside the container; its output:\n{}",
                    ran.output
                ));
                format!("ran (exit {})", ran.exit_code)
            }
        }
    };
    if problems.is_empty() {
        Ok(format!("{case}: {verdict}"))
    } else {
        Err(format!("{case}: {verdict}\n  {}", problems.join("\n  ")))
    }
}

/// Runs every source on `/evil/x` and `/evil-rel/x` with specs from `spec`.
async fn symlinked_targets(
    d: &Daemon,
    canary: &mut Canary,
    dir: &Path,
    what: &str,
    spec: impl Fn() -> proto::ContainerSpec,
) -> Vec<String> {
    let mut failures = Vec::new();
    for source in sources(d, dir).await {
        match mount_case(
            d,
            canary,
            what,
            spec(),
            &source,
            &["/evil/x", "/evil-rel/x"],
        )
        .await
        {
            Ok(line) => eprintln!("{line}"),
            Err(e) => failures.push(e),
        }
    }
    failures
}

/// A container (from `planter`) leaves `link -> <canary>` and `rel ->
/// ../..<canary>` in a named volume; a later container (from `mounter`)
/// mounts that volume on /data and another source on /data/link/x and
/// /data/rel/x.
async fn symlink_left_in_a_volume(
    d: &Daemon,
    canary: &mut Canary,
    what: &str,
    planter: impl Fn(&[&str]) -> proto::ContainerSpec,
    mounter: impl Fn() -> proto::ContainerSpec,
) -> Vec<String> {
    let vol = unique_name("leftlinks");
    let other = d
        .client()
        .create_volume(&unique_name("other"))
        .await
        .expect("create volume");
    let other_id = dev_ino(Path::new(&other.mountpoint));
    let c = canary.path().display().to_string();
    let plant = format!(
        "ln -s {c} /data/link && ln -s {}{} /data/rel && echo planted",
        climb(),
        c.trim_start_matches('/')
    );
    let mut first = planter(&["sh", "-c", &plant]);
    first.volumes = vec![format!("{vol}:/data")];
    match run_to_end(d, first).await {
        Ok(r) if r.output.contains("planted") => {}
        other => return vec![format!("{what}: planting the links failed: {other:?}")],
    }
    let mut second = mounter();
    second.volumes = vec![format!("{vol}:/data")];
    match mount_case(
        d,
        canary,
        &format!("{what}, links left in volume {vol}"),
        second,
        &Source::Volume(other.name, other_id),
        &["/data/link/x", "/data/rel/x"],
    )
    .await
    {
        Ok(line) => {
            eprintln!("{line}");
            Vec::new()
        }
        Err(e) => vec![e],
    }
}

fn assert_none(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn image_symlinks_do_not_steer_mounts_out_of_the_root() {
    if !in_throwaway_vm() {
        return;
    }
    let d = image_daemon(&[]).await;
    let files = TempDir::new();
    let mut canary = Canary::plant(files.path());
    let image = "evil-mounts:1";
    import_hostile_image(&d, image, &evil_links(&canary)).await;
    let failures = symlinked_targets(&d, &mut canary, files.path(), "image", || {
        image_spec(&unique_name("evil"), image, &[])
    })
    .await;
    assert_none(failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn rootfs_and_volume_symlinks_do_not_steer_mounts_out_of_the_root() {
    if !in_throwaway_vm() {
        return;
    }
    let d = Daemon::start().await;
    let files = TempDir::new();
    let mut canary = Canary::plant(files.path());
    let rootfs = hostile_rootfs(files.path(), "rootfs", &evil_links(&canary));
    let mut failures = symlinked_targets(&d, &mut canary, files.path(), "--rootfs", || {
        rootfs_spec(&unique_name("evil"), &rootfs, &[])
    })
    .await;
    failures.extend(
        symlink_left_in_a_volume(
            &d,
            &mut canary,
            "--rootfs",
            |cmd| rootfs_spec(&unique_name("plant"), &rootfs, cmd),
            || rootfs_spec(&unique_name("vlink"), &rootfs, &[]),
        )
        .await,
    );
    assert_none(failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn remapped_symlinks_do_not_steer_mounts_out_of_the_root() {
    if !in_throwaway_vm() {
        return;
    }
    let files = TempDir::new();
    let (d, _) = remap_daemon(&files, 0).await;
    let mut canary = Canary::plant(files.path());
    let mut links = evil_links(&canary);
    links.extend(etc_links(&canary));
    let rootfs = hostile_rootfs(files.path(), "rootfs", &links);
    let remapped = |name: &str, cmd: &[&str]| {
        let mut s = rootfs_spec(name, &rootfs, cmd);
        s.userns = "remap".into();
        s
    };
    let mut failures = symlinked_targets(&d, &mut canary, files.path(), "--userns remap", || {
        remapped(&unique_name("evil"), &[])
    })
    .await;
    // The links are planted by a container without a user namespace (the
    // volume is host root's); the remapped one then mounts through them.
    failures.extend(
        symlink_left_in_a_volume(
            &d,
            &mut canary,
            "--userns remap",
            |cmd| rootfs_spec(&unique_name("plant"), &rootfs, cmd),
            || remapped(&unique_name("vlink"), &[]),
        )
        .await,
    );
    assert_none(failures);
}

/// (f) The runtime writes /etc/hosts, /etc/resolv.conf and /etc/hostname
/// of every container (on the default network, so all three); in these
/// roots they are symlinks to canary files, absolute and relative.
#[tokio::test(flavor = "multi_thread")]
async fn etc_files_symlinked_out_of_the_root_are_not_written_through() {
    if !in_throwaway_vm() {
        return;
    }
    let d = image_daemon(&[]).await;
    let files = TempDir::new();
    let mut canary = Canary::plant(files.path());
    let links = etc_links(&canary);
    let image = "evil-etc:1";
    import_hostile_image(&d, image, &links).await;
    let rootfs = hostile_rootfs(files.path(), "rootfs", &links);
    let read_only = {
        let mut s = rootfs_spec(&unique_name("etc"), &rootfs, &["true"]);
        s.read_only = true;
        s
    };
    let mut failures = Vec::new();
    for (what, spec) in [
        ("image", image_spec(&unique_name("etc"), image, &["true"])),
        (
            "--rootfs",
            rootfs_spec(&unique_name("etc"), &rootfs, &["true"]),
        ),
        ("--rootfs --read-only", read_only),
    ] {
        let outcome = run_to_end(&d, spec).await;
        eprintln!("{what}: {outcome:?}");
        if let Err(e) = canary.check() {
            failures.push(format!("{what}: {e}"));
            canary.replant();
        }
    }
    // The remapped case runs in remapped_symlinks_do_not_steer_mounts_out_of_the_root,
    // whose root carries the same links.
    assert_none(failures);
}
