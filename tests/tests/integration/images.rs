//! Images: OCI image layouts and `docker save` tarballs built here (two
//! layers, the second whiting out a file of the first), imported through
//! `rsupctl image import`, run with their config's defaults and with flags
//! that override them; layers stored once for many containers and left
//! untouched by what containers write; removal refused while in use;
//! corrupt archives refused with nothing left behind.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rsup_client::proto::ContainerState;
use rsup_runtime::imagestore::ImageConfig;
use rsup_runtime::imagestore::build::{self, BuildOptions, TarEntry};
use rsup_tests::{Daemon, TempDir, code_of, describe, stderr, stdout, unique_name};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

const APPLETS: [&str; 12] = [
    "sh", "cat", "test", "echo", "id", "pwd", "sleep", "ls", "touch", "env", "[", "stat",
];

/// The two layers of [`build::two_layers`] over a busybox root.
fn layers() -> Vec<Vec<TarEntry>> {
    let mut base = build::busybox_rootfs(Path::new("/bin/busybox"), &APPLETS);
    base.push(TarEntry::file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    ));
    base.push(TarEntry::file("etc/group", "root:x:0:\napp:x:1000:\n"));
    build::two_layers(base)
}

/// A config that prints the merged view: both layers' files, and whether
/// the whited-out file is gone.
fn show_config() -> ImageConfig {
    ImageConfig {
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "cat /data/a.txt /data/b.txt; test -e /etc/removed.txt && echo still-there || echo removed-is-gone; echo \"greeting=$GREETING pwd=$(pwd) uid=$(id -u)\"".into(),
        ],
        env: vec!["GREETING=hello".into(), "PATH=/bin".into()],
        working_dir: "/data".into(),
        user: "1000:1000".into(),
        ..Default::default()
    }
}

fn oci_archive(dir: &Path, name: &str, config: &ImageConfig, opts: BuildOptions) -> PathBuf {
    let path = dir.join(format!("{name}.tar"));
    build::oci_layout_tar(&path, &layers(), config, &opts).expect("building an OCI layout");
    path
}

fn docker_archive(dir: &Path, name: &str, config: &ImageConfig, opts: BuildOptions) -> PathBuf {
    let path = dir.join(format!("{name}.tar"));
    build::docker_save_tar(&path, &layers(), config, &opts).expect("building a docker-save tar");
    path
}

fn import(d: &Daemon, archive: &Path, name: &str) -> String {
    let arg = archive.display().to_string();
    d.ctl_ok(["image", "import", arg.as_str(), "--name", name])
        .trim()
        .to_owned()
}

/// `rsupctl run --rm FLAGS... IMAGE COMMAND...`, which must succeed.
fn run_image(d: &Daemon, flags: &[&str], image: &str, command: &[&str]) -> String {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.push(image);
    args.extend_from_slice(command);
    let out = d.ctl(&args);
    assert_eq!(out.status.code(), Some(0), "{args:?}\n{}", describe(&out));
    stdout(&out)
}

fn image_json(d: &Daemon, image: &str) -> serde_json::Value {
    let text = d.ctl_ok(["image", "inspect", image]);
    let all: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("inspect {text:?}: {e}"));
    all[0].clone()
}

/// The layer directories of the daemon's store.
fn stored_layers(d: &Daemon) -> BTreeSet<String> {
    fs::read_dir(d.state_dir().join("images").join("layers"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// Every file below `dir` (relative paths), for "left nothing behind".
fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn oci_and_docker_save_images_run_with_their_layers_and_config() {
    let d = Daemon::start().await;
    let tmp = TempDir::new();
    let oci = oci_archive(
        tmp.path(),
        "oci",
        &show_config(),
        BuildOptions {
            gzip_layers: true,
            ..Default::default()
        },
    );
    let docker = docker_archive(
        tmp.path(),
        "docker",
        &show_config(),
        BuildOptions {
            gzip_outer: true,
            ..Default::default()
        },
    );
    let oci_id = import(&d, &oci, "oci-app:1");
    let docker_id = import(&d, &docker, "docker-app");
    assert!(oci_id.starts_with("sha256:"), "{oci_id}");

    let expected =
        "a from layer 1\nb from layer 2\nremoved-is-gone\ngreeting=hello pwd=/data uid=1000\n";
    for image in ["oci-app:1", "docker-app", "docker-app:latest"] {
        assert_eq!(run_image(&d, &[], image, &[]), expected, "{image}");
    }
    // By id and id prefix too.
    let prefix = &docker_id["sha256:".len().."sha256:".len() + 12];
    assert_eq!(run_image(&d, &[], prefix, &[]), expected);

    // Flags override the config: env by key, working dir, user, command.
    let out = run_image(
        &d,
        &["-e", "GREETING=flag", "-w", "/etc", "-u", "0"],
        "oci-app:1",
        &[],
    );
    assert!(
        out.ends_with("greeting=flag pwd=/etc uid=0\n"),
        "flags override the image config: {out:?}"
    );
    let out = run_image(&d, &[], "oci-app:1", &["sh", "-c", "echo $GREETING $PATH"]);
    assert_eq!(out, "hello /bin\n", "a command replaces Cmd, env stays");

    // Entrypoint + Cmd, and --entrypoint replacing it.
    let tmp2 = TempDir::new();
    let ep = oci_archive(
        tmp2.path(),
        "ep",
        &ImageConfig {
            entrypoint: vec!["echo".into(), "entry".into()],
            cmd: vec!["default-arg".into()],
            ..Default::default()
        },
        BuildOptions::default(),
    );
    import(&d, &ep, "ep");
    assert_eq!(run_image(&d, &[], "ep", &[]), "entry default-arg\n");
    assert_eq!(run_image(&d, &[], "ep", &["given"]), "entry given\n");
    assert_eq!(
        run_image(&d, &["--entrypoint", "cat"], "ep", &["/data/b.txt"]),
        "b from layer 2\n"
    );

    // Inspect and ls show the images with their config and layers.
    let v = image_json(&d, "oci-app:1");
    assert_eq!(v["Id"], oci_id.as_str(), "{v}");
    // Same config, same layers: the same image (content-addressed), known
    // by both names.
    assert_eq!(oci_id, docker_id);
    assert_eq!(
        v["RepoTags"],
        serde_json::json!(["oci-app:1", "docker-app:latest"]),
        "{v}"
    );
    assert_eq!(
        v["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(2),
        "{v}"
    );
    assert_eq!(v["Config"]["WorkingDir"], "/data", "{v}");
    assert_eq!(v["Config"]["User"], "1000:1000", "{v}");
    let ls = d.ctl_ok(["image", "ls"]);
    for want in ["oci-app", "docker-app", "ep "] {
        assert!(ls.contains(want), "{want} in\n{ls}");
    }
    // The OCI and the docker-save archive hold the same two layers: stored
    // once (the `ep` image too shares them).
    assert_eq!(stored_layers(&d).len(), 2, "{:?}", stored_layers(&d));
}

#[tokio::test(flavor = "multi_thread")]
async fn layers_are_shared_and_root_writes_go_with_the_container() {
    let mut d = Daemon::start().await;
    let tmp = TempDir::new();
    let archive = oci_archive(tmp.path(), "app", &show_config(), BuildOptions::default());
    import(&d, &archive, "app");
    let layers_before = stored_layers(&d);
    assert_eq!(layers_before.len(), 2);
    let layers_dir = d.state_dir().join("images").join("layers");
    let layer_files_before = files_below(&layers_dir);
    // Layers keep their owners and setuid bits: only root may enter.
    let mode = fs::metadata(d.state_dir().join("images"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("stat");
    assert_eq!(mode, 0o700, "the image store is root's alone");

    // Two containers of the same image, each writing into its root.
    let (a, b) = (unique_name("img-a"), unique_name("img-b"));
    for name in [&a, &b] {
        let out = d.ctl([
            "run",
            "-d",
            "--name",
            name.as_str(),
            "-u",
            "0",
            "app",
            "sh",
            "-c",
            &format!("echo {name} > /etc/written; echo x >> /data/a.txt; sleep 1000"),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        d.wait_state(name, ContainerState::Running, WAIT).await;
    }
    for name in [&a, &b] {
        let out = d.ctl_ok(["exec", name.as_str(), "cat", "/etc/written", "/data/a.txt"]);
        assert_eq!(
            out,
            format!("{name}\na from layer 1\nx\n"),
            "each has its own upper dir"
        );
    }
    // The layers are stored once and untouched by the writes.
    assert_eq!(stored_layers(&d), layers_before);
    assert_eq!(files_below(&layers_dir), layer_files_before);
    let l1_a = layers_dir.join(layers_before.iter().next().expect("a layer"));
    let untouched = files_below(&l1_a)
        .into_iter()
        .filter(|f| f.ends_with("a.txt"))
        .map(|f| fs::read_to_string(l1_a.join(f)).unwrap_or_default())
        .collect::<Vec<_>>();
    assert!(
        untouched.iter().all(|t| t == "a from layer 1\n") && !untouched.is_empty(),
        "{untouched:?}"
    );
    let image = image_json(&d, "app");
    assert_eq!(
        image["Containers"].as_array().map(Vec::len),
        Some(2),
        "{image}"
    );

    // rm and re-create from the same image: the write is gone.
    d.ctl_ok(["rm", "-f", a.as_str()]);
    let out = run_image(
        &d,
        &["-u", "0"],
        "app",
        &["sh", "-c", "cat /etc/written 2>&1; cat /data/a.txt"],
    );
    assert!(out.contains("No such file"), "{out}");
    assert!(out.ends_with("a from layer 1\n"), "{out}");

    // --read-only and --tmpfs work on an image root as on a --rootfs one.
    let out = run_image(
        &d,
        &["-u", "0", "--read-only", "--tmpfs", "/tmp"],
        "app",
        &[
            "sh",
            "-c",
            "touch /etc/x 2>/dev/null || echo root-ro; touch /tmp/y && echo tmp-rw",
        ],
    );
    assert_eq!(out, "root-ro\ntmp-rw\n");

    // Images and containers made from them survive a restart of rsupd.
    d.restart().await;
    assert!(d.ctl_ok(["image", "ls"]).contains("app"));
    d.ctl_ok(["restart", b.as_str()]);
    d.wait_state(&b, ContainerState::Running, WAIT).await;
    let out = d.ctl_ok(["exec", b.as_str(), "cat", "/etc/written"]);
    assert_eq!(out, format!("{b}\n"), "a restart keeps the upper dir");
}

#[tokio::test(flavor = "multi_thread")]
async fn image_rm_is_refused_while_used_unless_forced() {
    let d = Daemon::start().await;
    let tmp = TempDir::new();
    let archive = docker_archive(tmp.path(), "used", &show_config(), BuildOptions::default());
    let id = import(&d, &archive, "used");
    let name = unique_name("img-user");
    d.ctl_ok(["create", "--name", name.as_str(), "used", "sleep", "1000"]);

    let out = d.ctl(["image", "rm", "used"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&name),
        "the error names the container: {}",
        describe(&out)
    );
    assert_eq!(
        code_of("rm", d.client().remove_image("used", false).await),
        Code::FailedPrecondition
    );
    assert!(d.ctl_ok(["image", "ls"]).contains("used"));

    // A second name: removing one name only untags (Docker's rmi), even
    // while the image is in use; the last name deletes.
    let arg = archive.display().to_string();
    d.ctl_ok(["image", "import", arg.as_str(), "--name", "used:second"]);
    let out = d.ctl_ok(["image", "rm", "used:second"]);
    assert_eq!(out, "Untagged: used:second\n");
    let v = image_json(&d, "used");
    assert_eq!(v["RepoTags"], serde_json::json!(["used:latest"]), "{v}");

    // Forced: the image is gone, the container keeps its layers and runs.
    let out = d.ctl_ok(["image", "rm", "-f", "used"]);
    assert_eq!(out, format!("Untagged: used:latest\nDeleted: {id}\n"));
    assert_eq!(
        code_of("inspect", d.client().inspect_image("used").await),
        Code::NotFound
    );
    assert_eq!(stored_layers(&d).len(), 2, "layers kept for the container");
    d.ctl_ok(["start", name.as_str()]);
    d.wait_state(&name, ContainerState::Running, WAIT).await;
    let out = d.ctl_ok(["exec", name.as_str(), "cat", "/data/b.txt"]);
    assert_eq!(out, "b from layer 2\n");
    // With the last container the layers go.
    d.ctl_ok(["rm", "-f", name.as_str()]);
    assert!(stored_layers(&d).is_empty(), "{:?}", stored_layers(&d));
}

/// Asserts that the store holds no image, no layer and no leftover file.
fn assert_store_empty(d: &Daemon) {
    assert!(
        d.ctl_ok(["image", "ls"]).lines().count() <= 1,
        "no image listed"
    );
    let images = d.state_dir().join("images");
    for sub in ["layers", "images", "tmp"] {
        let left = files_below(&images.join(sub));
        assert!(left.is_empty(), "{sub} holds {left:?}");
    }
    let uploads = files_below(&d.state_dir().join("uploads"));
    assert!(uploads.is_empty(), "uploads hold {uploads:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_archives_are_refused_and_leave_nothing_behind() {
    let d = Daemon::start().await;
    let tmp = TempDir::new();
    let good = oci_archive(tmp.path(), "good", &show_config(), BuildOptions::default());
    let bytes = fs::read(&good).expect("read");

    // One flipped byte inside the first layer's blob (a file's content).
    let needle = b"a from layer 1";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the layer's file content is in the archive");
    let mut flipped = bytes.clone();
    flipped[at] ^= 0x01;
    let flipped_path = tmp.path().join("flipped.tar");
    fs::write(&flipped_path, &flipped).expect("write");

    // A config that lies about the layers' digests.
    let liar = oci_archive(
        tmp.path(),
        "liar",
        &show_config(),
        BuildOptions {
            diff_ids: Some(vec![
                format!("sha256:{}", "0".repeat(64)),
                format!("sha256:{}", "1".repeat(64)),
            ]),
            ..Default::default()
        },
    );
    // A truncated gzip and plain garbage.
    let gz = oci_archive(
        tmp.path(),
        "gz",
        &show_config(),
        BuildOptions {
            gzip_outer: true,
            ..Default::default()
        },
    );
    let gz_bytes = fs::read(&gz).expect("read");
    let truncated = tmp.path().join("truncated.tar.gz");
    fs::write(&truncated, &gz_bytes[..gz_bytes.len() / 2]).expect("write");
    let garbage = tmp.path().join("garbage.tar");
    fs::write(&garbage, b"this is not an archive at all").expect("write");

    for (what, path, reason) in [
        ("flipped byte", &flipped_path, "digest"),
        ("lying config", &liar, "diff"),
        ("truncated gzip", &truncated, ""),
        ("garbage", &garbage, ""),
    ] {
        let arg = path.display().to_string();
        let out = d.ctl(["image", "import", arg.as_str(), "--name", "bad"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", describe(&out));
        assert!(
            stderr(&out).to_lowercase().contains(reason),
            "{what}: the error says why: {}",
            describe(&out)
        );
        assert_eq!(
            code_of(what, d.client().import_image(path, Some("bad")).await),
            Code::InvalidArgument,
            "{what}"
        );
        assert_store_empty(&d);
    }
    // A client that announces more than it sends (it failed to read its
    // file) gets nothing imported, and the spooled upload is gone.
    use rsup_client::proto::{ImportImageRequest, ImportOptions, import_image_request::Part};
    let partial = vec![
        ImportImageRequest {
            part: Some(Part::Options(ImportOptions {
                name: "partial".into(),
                size: Some(bytes.len() as u64),
            })),
        },
        ImportImageRequest {
            part: Some(Part::Chunk(bytes[..bytes.len() / 2].to_vec())),
        },
    ];
    let err = d
        .client()
        .images()
        .import(tokio_stream::iter(partial))
        .await
        .expect_err("half an archive");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("announced"), "{err:?}");
    assert_store_empty(&d);

    // The intact archive still imports.
    import(&d, &good, "good");
    assert_eq!(stored_layers(&d).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn image_bad_input() {
    let d = Daemon::start().await;
    let before = d.ps_json().len();
    // An image that does not exist: NOT_FOUND, nothing created (`--pull
    // never`: by default `run` would try Docker Hub, which tests never
    // reach).
    let out = d.ctl(["run", "--rm", "--pull", "never", "no-such-image:1", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(stderr(&out).contains("no such image"), "{}", describe(&out));
    let spec = rsup_client::proto::ContainerSpec {
        image: "no-such-image".into(),
        command: vec!["true".into()],
        ..Default::default()
    };
    assert_eq!(
        code_of("create", d.client().create(spec).await),
        Code::NotFound
    );
    assert_eq!(d.ps_json().len(), before, "nothing created");
    let out = d.ctl(["image", "inspect", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        code_of("inspect", d.client().inspect_image("nope").await),
        Code::NotFound
    );
    assert_eq!(
        code_of("rm", d.client().remove_image("nope", true).await),
        Code::NotFound
    );

    // A bad name for an import, and both an image and a rootfs.
    let tmp = TempDir::new();
    let archive = oci_archive(tmp.path(), "x", &show_config(), BuildOptions::default());
    assert_eq!(
        code_of(
            "bad name",
            d.client().import_image(&archive, Some("Bad Name!")).await
        ),
        Code::InvalidArgument
    );
    import(&d, &archive, "x");
    let spec = rsup_client::proto::ContainerSpec {
        image: "x".into(),
        rootfs: rsup_tests::busybox_rootfs().display().to_string(),
        command: vec!["true".into()],
        ..Default::default()
    };
    assert_eq!(
        code_of("image and rootfs", d.client().create(spec).await),
        Code::InvalidArgument
    );
    // A command that is not in the image.
    let out = d.ctl(["run", "--rm", "x", "no-such-command"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("not found in image x"),
        "{}",
        describe(&out)
    );
    // A missing archive file is the client's error.
    let out = d.ctl(["image", "import", "/nonexistent/rsup-image.tar"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains("No such file"), "{}", describe(&out));
    assert_eq!(d.ps_json().len(), before, "nothing created");
}

/// An image whose one gzip'ed layer holds `mib` MiB of zeros (about
/// 1000:1): a decompression bomb of a few dozen KiB.
fn bomb_archive(dir: &Path, mib: usize) -> PathBuf {
    let path = dir.join("bomb.tar");
    let layers = vec![vec![
        TarEntry::dir("data"),
        TarEntry::file("data/zeros", vec![0u8; mib << 20]),
    ]];
    build::oci_layout_tar(
        &path,
        &layers,
        &ImageConfig::default(),
        &BuildOptions {
            gzip_layers: true,
            ..Default::default()
        },
    )
    .expect("building the bomb");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decompression_bomb_stops_at_the_image_limit() {
    let d = Daemon::start_with_args(&["--image-max-size", "8m"]).await;
    let tmp = TempDir::new();
    let bomb = bomb_archive(tmp.path(), 48);
    let size = fs::metadata(&bomb).expect("stat").len();
    assert!(size < 1 << 20, "the bomb is {size} bytes");
    let arg = bomb.display().to_string();
    let out = d.ctl(["image", "import", arg.as_str(), "--name", "bomb"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the image unpacks to more than 8.0 MiB")
            && err.contains("rsupd --image-max-size"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        code_of("bomb", d.client().import_image(&bomb, Some("bomb")).await),
        Code::InvalidArgument
    );
    assert_store_empty(&d);
    // An image within the limit still imports.
    let good = oci_archive(tmp.path(), "good", &show_config(), BuildOptions::default());
    import(&d, &good, "good");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_keeps_the_free_space_reserve() {
    // A reserve of the whole device: no import can keep it.
    let d = Daemon::start_with_args(&["--image-min-free", "100%"]).await;
    let tmp = TempDir::new();
    let good = oci_archive(tmp.path(), "good", &show_config(), BuildOptions::default());
    let arg = good.display().to_string();
    let out = d.ctl(["image", "import", arg.as_str(), "--name", "good"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("not enough space to import")
            && err.contains("mounted at /")
            && err.contains("rsupd --image-min-free"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        code_of(
            "reserve",
            d.client().import_image(&good, Some("good")).await
        ),
        Code::ResourceExhausted
    );
    assert_store_empty(&d);
}
