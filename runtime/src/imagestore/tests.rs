//! Unit tests of the image store. They run as root: whiteouts are device
//! nodes, opaque dirs carry a trusted.* xattr, and the merged view is checked
//! through a real read-only overlay mount.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::build::{self, BuildOptions, TarEntry};
use super::*;

/// A temp dir named /tmp/rsup-test-img-* (swept by CI by prefix), removed on
/// drop.
fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("rsup-test-img-")
        .tempdir_in("/tmp")
        .expect("tempdir")
}

/// A read-only overlay over lower dirs; unmounted on drop (before the temp
/// dir holding it goes).
struct Overlay {
    target: PathBuf,
}

impl Overlay {
    fn mount(lower: &[PathBuf], target: &Path) -> Overlay {
        fs::create_dir_all(target).expect("mkdir target");
        let lowerdir = lower
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(format!("lowerdir={lowerdir}").as_str()),
        )
        .expect("mount overlay");
        Overlay {
            target: target.to_path_buf(),
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A small stand-in for the busybox binary.
fn fake_busybox(dir: &Path) -> PathBuf {
    let p = dir.join("busybox-bin");
    fs::write(&p, b"#!/bin/sh\necho busybox\n").expect("write");
    p
}

fn demo_layers(dir: &Path) -> Vec<Vec<TarEntry>> {
    let bb = fake_busybox(dir);
    build::two_layers(build::busybox_rootfs(&bb, &["sh", "ls", "cat"]))
}

fn labels_config() -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo hi".into()],
        env: vec!["PATH=/bin".into(), "A=1".into()],
        working_dir: "/data".into(),
        user: "1000:1000".into(),
        labels: [("org.example.k".to_string(), "v".to_string())]
            .into_iter()
            .collect(),
        exposed_ports: vec!["443/tcp".into(), "80/tcp".into()],
    }
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).expect("read_dir").count()
}

/// Nothing of a failed import is left: no layer, no record, no staging.
fn assert_store_empty(root: &Path) {
    for d in ["layers", "images", "tmp"] {
        let left: Vec<_> = fs::read_dir(root.join(d))
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        assert!(left.is_empty(), "{d}/ not empty: {left:?}");
    }
}

fn err_text(r: Result<Image, Error>) -> String {
    match r {
        Ok(i) => panic!("import succeeded: {i:?}"),
        Err(e) => {
            assert!(
                matches!(
                    e,
                    Error::InvalidArgument {
                        field: "archive",
                        ..
                    }
                ),
                "{e:?}"
            );
            e.to_string()
        }
    }
}

/// Mounts the image's layers and checks the merged view of the demo image.
fn check_merged(store: &ImageStore, image: &Image, work: &Path) {
    let dirs = store.layer_dirs(image);
    assert_eq!(dirs.len(), 2);
    assert!(dirs[0].starts_with(store.root().join("layers")));
    // Top first: the whiteout is in the top layer.
    let wh = fs::symlink_metadata(dirs[0].join("etc/removed.txt")).expect("whiteout");
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    let target = work.join("merged");
    let _ov = Overlay::mount(&dirs, &target);
    assert!(
        !target.join("etc/removed.txt").exists(),
        "the whited-out file is visible"
    );
    assert_eq!(
        fs::read_to_string(target.join("data/a.txt")).expect("a"),
        "a from layer 1\n"
    );
    assert_eq!(
        fs::read_to_string(target.join("data/b.txt")).expect("b"),
        "b from layer 2\n"
    );
    assert_eq!(
        fs::read_link(target.join("bin/sh")).expect("symlink"),
        Path::new("busybox")
    );
    let bb = fs::metadata(target.join("bin/busybox")).expect("busybox");
    assert_eq!(bb.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        fs::read(target.join("bin/sh")).expect("through the symlink"),
        b"#!/bin/sh\necho busybox\n"
    );
    let tmp = fs::metadata(target.join("tmp")).expect("tmp");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
}

#[derive(Clone, Copy, Debug)]
enum Format {
    Oci,
    Docker,
    DockerLegacy,
}

fn import_variant(format: Format, opts: BuildOptions) {
    let work = tmpdir();
    let layers = demo_layers(work.path());
    let archive = work.path().join("image.tar");
    let config = labels_config();
    let built = match format {
        Format::Oci => build::oci_layout_tar(&archive, &layers, &config, &opts),
        Format::Docker => build::docker_save_tar(&archive, &layers, &config, &opts),
        Format::DockerLegacy => build::docker_save_tar(
            &archive,
            &layers,
            &config,
            &BuildOptions {
                legacy_docker_layout: true,
                ..opts.clone()
            },
        ),
    }
    .expect("build");
    let mut magic = [0u8; 2];
    fs::File::open(&archive)
        .and_then(|mut f| f.read_exact(&mut magic))
        .expect("magic");
    assert_eq!(magic == [0x1f, 0x8b], opts.gzip_outer);
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    let image = store.import(&archive, None).expect("import");
    assert_eq!(image.id, built.id);
    assert_eq!(image.layers, built.diff_ids);
    assert_eq!(
        image.names,
        opts.ref_name
            .iter()
            .map(|n| normalize_reference(n).expect("name"))
            .collect::<Vec<_>>()
    );
    assert_eq!(image.config, config.clone());
    assert_eq!(image.architecture, archive::host_arch());
    assert_eq!(image.os, "linux");
    assert_eq!(image.created.as_deref(), Some("2024-01-02T03:04:05Z"));
    let bb_len = b"#!/bin/sh\necho busybox\n".len();
    let file_bytes =
        bb_len + "removed in layer 2\n".len() + "a from layer 1\n".len() + "b from layer 2\n".len();
    assert_eq!(image.size, file_bytes as u64);
    assert!(crate::logs::parse_rfc3339(&image.imported_at).is_some());
    assert_eq!(store.list().expect("list"), vec![image.clone()]);
    assert_eq!(store.get(&image.id).expect("get"), image);
    check_merged(&store, &image, work.path());
    assert_eq!(count(&store.root().join("tmp")), 0, "staging left behind");
}

#[test]
fn import_oci_plain_layers_plain_outer() {
    import_variant(
        Format::Oci,
        BuildOptions {
            ref_name: Some("docker.io/library/busybox:1.36".into()),
            ..BuildOptions::default()
        },
    );
}

#[test]
fn import_oci_gzip_layers_gzip_outer() {
    import_variant(
        Format::Oci,
        BuildOptions {
            ref_name: Some("reg.example/a/b:tag".into()),
            gzip_layers: true,
            gzip_outer: true,
            ..BuildOptions::default()
        },
    );
}

#[test]
fn import_oci_gzip_layers_plain_outer_no_name() {
    import_variant(
        Format::Oci,
        BuildOptions {
            gzip_layers: true,
            ..BuildOptions::default()
        },
    );
}

#[test]
fn import_oci_multi_platform_index_picks_this_arch() {
    import_variant(
        Format::Oci,
        BuildOptions {
            ref_name: Some("busybox:multi".into()),
            multi_platform: true,
            gzip_outer: true,
            ..BuildOptions::default()
        },
    );
}

#[test]
fn import_docker_save_plain() {
    import_variant(
        Format::Docker,
        BuildOptions {
            ref_name: Some("busybox:latest".into()),
            ..BuildOptions::default()
        },
    );
}

#[test]
fn import_docker_save_gzip_outer_gzip_layers() {
    import_variant(
        Format::Docker,
        BuildOptions {
            ref_name: Some("busybox:1".into()),
            gzip_outer: true,
            gzip_layers: true,
            ..BuildOptions::default()
        },
    );
}

#[test]
fn import_docker_save_legacy_layout() {
    import_variant(
        Format::DockerLegacy,
        BuildOptions {
            ref_name: Some("Example/App:v1".into()),
            ..BuildOptions::default()
        },
    );
    import_variant(
        Format::DockerLegacy,
        BuildOptions {
            gzip_outer: true,
            ..BuildOptions::default()
        },
    );
}

#[test]
fn modes_owners_mtimes_links_and_devices_are_kept() {
    let work = tmpdir();
    let layer = vec![
        TarEntry::dir("d")
            .with_mode(0o750)
            .with_owner(7, 8)
            .with_mtime(1_000_000),
        TarEntry::file("d/suid", "x")
            .with_mode(0o4755)
            .with_owner(1000, 1001)
            .with_mtime(1_234_567),
        TarEntry::hardlink("d/hard", "d/suid"),
        TarEntry::symlink("d/abs", "/etc/passwd").with_owner(5, 6),
        TarEntry {
            path: "dev/null".into(),
            kind: build::EntryKind::CharDevice { major: 1, minor: 3 },
            mode: 0o666,
            uid: 0,
            gid: 0,
            mtime: 1_100_000,
        },
        TarEntry {
            path: "run/fifo".into(),
            kind: build::EntryKind::Fifo,
            mode: 0o600,
            uid: 3,
            gid: 4,
            mtime: 1_100_000,
        },
    ];
    let archive = work.path().join("i.tar");
    build::oci_layout_tar(
        &archive,
        &[layer],
        &ImageConfig::default(),
        &BuildOptions::default(),
    )
    .expect("build");
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    let image = store.import(&archive, Some("perm")).expect("import");
    let root = &store.layer_dirs(&image)[0];
    let suid = fs::symlink_metadata(root.join("d/suid")).expect("suid");
    assert_eq!(suid.mode() & 0o7777, 0o4755);
    assert_eq!((suid.uid(), suid.gid()), (1000, 1001));
    assert_eq!(suid.mtime(), 1_234_567);
    assert_eq!(suid.nlink(), 2, "hard link not kept");
    assert_eq!(
        fs::symlink_metadata(root.join("d/hard"))
            .expect("hard")
            .ino(),
        suid.ino()
    );
    let abs = fs::symlink_metadata(root.join("d/abs")).expect("abs");
    assert!(abs.file_type().is_symlink());
    assert_eq!((abs.uid(), abs.gid()), (5, 6));
    assert_eq!(
        fs::read_link(root.join("d/abs")).expect("link"),
        Path::new("/etc/passwd")
    );
    let d = fs::symlink_metadata(root.join("d")).expect("d");
    assert_eq!(d.mode() & 0o7777, 0o750);
    assert_eq!((d.uid(), d.gid()), (7, 8));
    assert_eq!(d.mtime(), 1_000_000, "directory mtime not restored");
    let null = fs::symlink_metadata(root.join("dev/null")).expect("null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    assert_eq!(null.mtime(), 1_100_000);
    let fifo = fs::symlink_metadata(root.join("run/fifo")).expect("fifo");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(
        (fifo.uid(), fifo.gid(), fifo.mode() & 0o7777),
        (3, 4, 0o600)
    );
    assert_eq!(image.names, vec!["perm:latest".to_string()]);
}

#[test]
fn opaque_directory_hides_the_lower_content() {
    let work = tmpdir();
    let layers = vec![
        vec![
            TarEntry::dir("keep"),
            TarEntry::file("keep/x", "x"),
            TarEntry::dir("op"),
            TarEntry::file("op/old", "old"),
        ],
        vec![
            TarEntry::dir("op"),
            TarEntry::opaque("op"),
            TarEntry::file("op/new", "new"),
        ],
    ];
    let archive = work.path().join("i.tar");
    build::oci_layout_tar(
        &archive,
        &layers,
        &ImageConfig::default(),
        &BuildOptions::default(),
    )
    .expect("build");
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    let image = store.import(&archive, None).expect("import");
    assert!(image.names.is_empty());
    let dirs = store.layer_dirs(&image);
    assert_eq!(
        crate::sys::lgetxattr(&dirs[0].join("op"), "trusted.overlay.opaque").expect("xattr"),
        Some(b"y".to_vec())
    );
    assert!(
        !dirs[0].join("op/.wh..wh..opq").exists(),
        "the marker itself must not be unpacked"
    );
    let target = work.path().join("m");
    let _ov = Overlay::mount(&dirs, &target);
    assert!(target.join("keep/x").exists());
    assert!(target.join("op/new").exists());
    assert!(
        !target.join("op/old").exists(),
        "opaque dir shows lower content"
    );
}

#[test]
fn shared_layers_are_stored_and_unpacked_once() {
    let work = tmpdir();
    let base = vec![
        TarEntry::dir("bin"),
        TarEntry::file("bin/tool", "shared base"),
    ];
    let a = vec![base.clone(), vec![TarEntry::file("a", "a")]];
    let b = vec![base, vec![TarEntry::file("b", "b")]];
    let (pa, pb) = (work.path().join("a.tar"), work.path().join("b.tar"));
    let ba = build::oci_layout_tar(&pa, &a, &ImageConfig::default(), &BuildOptions::default())
        .expect("a");
    // The second image's archive gzips its layers: same diff_ids, other blobs.
    let bb = build::docker_save_tar(
        &pb,
        &b,
        &ImageConfig::default(),
        &BuildOptions {
            gzip_layers: true,
            ..BuildOptions::default()
        },
    )
    .expect("b");
    assert_eq!(ba.diff_ids[0], bb.diff_ids[0]);
    assert_ne!(ba.layer_digests[0], bb.layer_digests[0]);
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    let ia = store.import(&pa, Some("a")).expect("import a");
    assert_eq!(store.layers_unpacked(), 2);
    let tool = store.layer_path(&ba.diff_ids[0]).join("diff/bin/tool");
    let before = fs::metadata(&tool).expect("tool");
    let ib = store.import(&pb, Some("b")).expect("import b");
    assert_eq!(
        store.layers_unpacked(),
        3,
        "the shared layer was unpacked again"
    );
    let after = fs::metadata(&tool).expect("tool");
    assert_eq!(before.ino(), after.ino());
    assert_eq!(before.ctime_nsec(), after.ctime_nsec());
    assert_eq!(count(&store.root().join("layers")), 3);
    assert_eq!(ia.layers[0], ib.layers[0]);
    assert_eq!(store.layer_dirs(&ia)[1], store.layer_dirs(&ib)[1]);
    // Importing the same archive again unpacks nothing and merges names.
    let again = store.import(&pa, Some("a2:v")).expect("again");
    assert_eq!(store.layers_unpacked(), 3);
    assert_eq!(
        again.names,
        vec!["a:latest".to_string(), "a2:v".to_string()]
    );
    assert_eq!(store.list().expect("list").len(), 2);
}

#[test]
fn a_name_moves_to_the_newest_image() {
    let work = tmpdir();
    let (pa, pb) = (work.path().join("a.tar"), work.path().join("b.tar"));
    build::oci_layout_tar(
        &pa,
        &[vec![TarEntry::file("a", "a")]],
        &ImageConfig::default(),
        &BuildOptions::default(),
    )
    .expect("a");
    build::oci_layout_tar(
        &pb,
        &[vec![TarEntry::file("b", "b")]],
        &ImageConfig::default(),
        &BuildOptions::default(),
    )
    .expect("b");
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    let a = store.import(&pa, Some("app:1")).expect("a");
    store.import(&pa, Some("keep")).expect("a again");
    let b = store.import(&pb, Some("app:1")).expect("b");
    assert_eq!(store.get("app:1").expect("get").id, b.id);
    let a_now = store.get(&a.id).expect("a");
    assert_eq!(a_now.names, vec!["keep:latest".to_string()]);
}

/// The offset in the archive of member `member` and its content.
fn member(archive: &Path, member: &str) -> (u64, Vec<u8>) {
    let mut ar = tar::Archive::new(fs::File::open(archive).expect("open"));
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        if e.path().expect("path").to_string_lossy() == member {
            let pos = e.raw_file_position();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read");
            return (pos, data);
        }
    }
    panic!("{member} not in the archive");
}

/// Overwrites bytes of the archive member `name` where `from` first occurs
/// in it with `to` (same length).
fn patch(archive: &Path, name: &str, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let (pos, data) = member(archive, name);
    let at = data
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not in {name}", String::from_utf8_lossy(from)));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(archive)
        .expect("open rw");
    f.seek(SeekFrom::Start(pos + at as u64)).expect("seek");
    f.write_all(to).expect("write");
}

#[test]
fn a_descriptor_size_that_lies_is_refused() {
    let work = tmpdir();
    let archive = work.path().join("i.tar");
    build::oci_layout_tar(
        &archive,
        &[vec![TarEntry::file("f", "f")]],
        &ImageConfig::default(),
        &BuildOptions::default(),
    )
    .expect("build");
    let (_, manifest) = member(&archive, "index.json");
    let manifest_digest = serde_json::from_slice::<serde_json::Value>(&manifest).expect("json")
        ["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    // The manifest is content-addressed (a wrong config size in it breaks its
    // digest first): lie in index.json about the manifest's size instead.
    let (_, m) = member(&archive, &blob(&manifest_digest));
    let mlen = m.len();
    patch(
        &archive,
        "index.json",
        format!("\"size\":{mlen}").as_bytes(),
        // Toggling the low bit keeps the number of digits.
        format!("\"size\":{}", mlen ^ 1).as_bytes(),
    );
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    let msg = err_text(store.import(&archive, None));
    assert!(msg.contains("size mismatch"), "{msg}");
    assert_store_empty(store.root());
}

#[test]
fn a_bare_tag_ref_name_is_not_taken_as_a_name() {
    let work = tmpdir();
    let archive = work.path().join("i.tar");
    build::oci_layout_tar(
        &archive,
        &[vec![TarEntry::file("f", "f")]],
        &ImageConfig::default(),
        &BuildOptions {
            ref_name: Some("busybox:1.36".into()),
            ..BuildOptions::default()
        },
    )
    .expect("build");
    // Hide the containerd name: only ref.name = "1.36" remains.
    patch(
        &archive,
        "index.json",
        b"io.containerd.image.name",
        b"io.containerd.image.xxxx",
    );
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    let image = store.import(&archive, None).expect("import");
    assert!(image.names.is_empty(), "{:?}", image.names);
    let named = store.import(&archive, Some("bb:1.36")).expect("named");
    assert_eq!(named.names, vec!["bb:1.36".to_string()]);
}

/// Flips one byte of the archive member `member`, `at` bytes into it (the
/// middle if `at` is past its end).
fn flip(archive: &Path, member: &str, at: u64) {
    let pos = {
        let mut ar = tar::Archive::new(fs::File::open(archive).expect("open"));
        let mut found = None;
        for e in ar.entries().expect("entries") {
            let e = e.expect("entry");
            if e.path().expect("path").to_string_lossy() == member {
                let at = if at < e.size() { at } else { e.size() / 2 };
                found = Some(e.raw_file_position() + at);
                break;
            }
        }
        found.unwrap_or_else(|| panic!("{member} not in the archive"))
    };
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(archive)
        .expect("open rw");
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(pos)).expect("seek");
    f.read_exact(&mut b).expect("read");
    b[0] ^= 0x20;
    f.seek(SeekFrom::Start(pos)).expect("seek");
    f.write_all(&b).expect("write");
}

fn blob(digest: &str) -> String {
    format!("blobs/sha256/{}", &digest[7..])
}

#[test]
fn a_flipped_byte_in_a_layer_blob_is_refused_and_leaves_nothing() {
    for gz in [false, true] {
        let work = tmpdir();
        let layers = demo_layers(work.path());
        let archive = work.path().join("i.tar");
        let built = build::oci_layout_tar(
            &archive,
            &layers,
            &ImageConfig::default(),
            &BuildOptions {
                gzip_layers: gz,
                ..BuildOptions::default()
            },
        )
        .expect("build");
        // The top layer: the bottom one is good and gets unpacked first.
        flip(&archive, &blob(&built.layer_digests[1]), 600);
        let store = ImageStore::open(&work.path().join("store")).expect("open");
        let msg = err_text(store.import(&archive, Some("x")));
        assert!(msg.contains("digest mismatch"), "{msg}");
        assert!(msg.contains(&built.layer_digests[1]), "{msg}");
        assert_store_empty(store.root());
    }
}

#[test]
fn a_flipped_byte_in_a_legacy_layer_tar_fails_the_diff_id_check() {
    let work = tmpdir();
    let layers = demo_layers(work.path());
    let archive = work.path().join("i.tar");
    let built = build::docker_save_tar(
        &archive,
        &layers,
        &ImageConfig::default(),
        &BuildOptions {
            legacy_docker_layout: true,
            ..BuildOptions::default()
        },
    )
    .expect("build");
    // Layer 2's data: "b from layer 2" after the first headers.
    let member = format!("{:064x}/layer.tar", 2);
    flip(&archive, &member, 1024 + 3);
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    let msg = err_text(store.import(&archive, None));
    assert!(msg.contains("digest mismatch"), "{msg}");
    assert!(msg.contains(&built.diff_ids[1]), "{msg}");
    assert_store_empty(store.root());
}

#[test]
fn a_flipped_byte_in_the_config_is_refused() {
    for format in [Format::Oci, Format::Docker, Format::DockerLegacy] {
        let work = tmpdir();
        let archive = work.path().join("i.tar");
        let layers = vec![vec![TarEntry::file("f", "f")]];
        let opts = BuildOptions {
            legacy_docker_layout: matches!(format, Format::DockerLegacy),
            ..BuildOptions::default()
        };
        let built = match format {
            Format::Oci => build::oci_layout_tar(&archive, &layers, &labels_config(), &opts),
            _ => build::docker_save_tar(&archive, &layers, &labels_config(), &opts),
        }
        .expect("build");
        let member = match format {
            Format::DockerLegacy => format!("{}.json", &built.id[7..]),
            _ => blob(&built.id),
        };
        let at = built
            .config
            .windows(7)
            .position(|w| w == b"echo hi")
            .expect("cmd in config") as u64;
        flip(&archive, &member, at);
        let store = ImageStore::open(&work.path().join("store")).expect("open");
        let msg = err_text(store.import(&archive, None));
        assert!(
            msg.contains("config") && msg.contains("digest mismatch"),
            "{format:?}: {msg}"
        );
        assert_store_empty(store.root());
    }
}

#[test]
fn a_config_with_a_wrong_diff_id_is_refused() {
    let work = tmpdir();
    let layers = demo_layers(work.path());
    let real = build::layer_tar(&layers[1]).expect("tar");
    let mut wrong = real.clone();
    wrong.extend_from_slice(&[0u8; 512]);
    let (good0, bad1) = {
        let t0 = build::layer_tar(&layers[0]).expect("tar");
        (digest_of(&t0), digest_of(&wrong))
    };
    for format in [Format::Oci, Format::DockerLegacy] {
        let archive = work.path().join("i.tar");
        let opts = BuildOptions {
            diff_ids: Some(vec![good0.clone(), bad1.clone()]),
            gzip_layers: true,
            legacy_docker_layout: true,
            ..BuildOptions::default()
        };
        match format {
            Format::Oci => build::oci_layout_tar(&archive, &layers, &ImageConfig::default(), &opts),
            _ => build::docker_save_tar(&archive, &layers, &ImageConfig::default(), &opts),
        }
        .expect("build");
        let store = ImageStore::open(&work.path().join(format!("store-{format:?}"))).expect("open");
        let msg = err_text(store.import(&archive, None));
        assert!(msg.contains(&format!("expected {bad1}")), "{msg}");
        assert!(msg.contains(&format!("got {}", digest_of(&real))), "{msg}");
        assert_store_empty(store.root());
    }
}

fn digest_of(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", layer::hex(&sha2::Sha256::digest(data)))
}

#[test]
fn entries_escaping_the_layer_are_refused() {
    let work = tmpdir();
    let outside = work.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    fs::write(outside.join("victim"), "keep me").expect("victim");
    let o = outside.display().to_string();
    let cases: Vec<(&str, Vec<TarEntry>)> = vec![
        ("dotdot", vec![TarEntry::file("a/../../evil", "x")]),
        ("absolute", vec![TarEntry::file(&format!("{o}/evil"), "x")]),
        (
            "through a symlink",
            vec![
                TarEntry::symlink("lnk", &o),
                TarEntry::file("lnk/evil", "x"),
            ],
        ),
        (
            "whiteout through a symlink",
            vec![
                TarEntry::symlink("lnk", &o),
                TarEntry::whiteout("lnk/victim"),
            ],
        ),
        (
            "opaque through a symlink",
            vec![TarEntry::symlink("lnk", &o), TarEntry::opaque("lnk")],
        ),
        (
            "hardlink out",
            vec![TarEntry::hardlink("h", &format!("{o}/victim"))],
        ),
        ("whiteout dotdot", vec![TarEntry::file("../.wh.victim", "")]),
    ];
    for (what, layer) in cases {
        let archive = work.path().join("i.tar");
        build::oci_layout_tar(
            &archive,
            &[layer],
            &ImageConfig::default(),
            &BuildOptions::default(),
        )
        .expect("build");
        let store_dir = work
            .path()
            .join(format!("store-{}", what.replace(' ', "-")));
        let store = ImageStore::open(&store_dir).expect("open");
        let msg = err_text(store.import(&archive, None));
        assert!(msg.contains("entry"), "{what}: {msg}");
        assert_store_empty(store.root());
        let mut names: Vec<_> = fs::read_dir(&outside)
            .expect("ls")
            .map(|e| e.expect("e").file_name())
            .collect();
        names.sort();
        assert_eq!(names, vec![std::ffi::OsString::from("victim")], "{what}");
        let v = fs::symlink_metadata(outside.join("victim")).expect("victim");
        assert!(v.is_file(), "{what}: victim replaced");
        assert_eq!(fs::read(outside.join("victim")).expect("read"), b"keep me");
        assert_eq!(
            crate::sys::lgetxattr(&outside, "trusted.overlay.opaque").expect("xattr"),
            None,
            "{what}"
        );
    }
}

#[test]
fn bad_archives_say_what_is_wrong() {
    let work = tmpdir();
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    // Missing file.
    assert!(matches!(
        store.import(&work.path().join("nope.tar"), None),
        Err(Error::NotFound(_))
    ));
    // A tar without a layout.
    let plain = work.path().join("plain.tar");
    let mut b = tar::Builder::new(fs::File::create(&plain).expect("create"));
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    b.append_data(&mut h, "hello.txt", &b"hello"[..])
        .expect("append");
    b.into_inner().expect("finish");
    let msg = err_text(store.import(&plain, None));
    assert!(msg.contains("no index.json or manifest.json"), "{msg}");
    // Truncated gzip.
    let gz = work.path().join("gz.tar.gz");
    build::oci_layout_tar(
        &gz,
        &demo_layers(work.path()),
        &ImageConfig::default(),
        &BuildOptions {
            gzip_outer: true,
            ..BuildOptions::default()
        },
    )
    .expect("build");
    let len = fs::metadata(&gz).expect("len").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&gz)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncate");
    let msg = err_text(store.import(&gz, None));
    assert!(msg.contains("truncated/corrupt gzip"), "{msg}");
    // Not a tar at all.
    let junk = work.path().join("junk");
    fs::write(&junk, vec![7u8; 4096]).expect("junk");
    err_text(store.import(&junk, None));
    // A bad name is refused before anything is read.
    assert!(matches!(
        store.import(&plain, Some("Bad Name")),
        Err(Error::InvalidArgument { field: "name", .. })
    ));
    assert_store_empty(store.root());
}

#[test]
fn zstd_and_other_compressions_are_named() {
    let work = tmpdir();
    for (magic, name) in [
        (&[0x28u8, 0xb5, 0x2f, 0xfd, 0, 0][..], "zstd"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0][..], "xz"),
        (b"BZh91AY", "bzip2"),
    ] {
        let p = work.path().join(name);
        fs::write(&p, magic).expect("write");
        let budget = limits::Budget::new("the image", UnpackLimits::default(), work.path());
        let e = layer::read_layer(&p, None, &budget).expect_err("refused");
        assert_eq!(e, format!("unsupported layer compression: {name}"));
    }
}

/// Writes an image record directly (for ids with chosen prefixes).
fn fake_record(store: &ImageStore, hex: &str, names: &[&str]) {
    let image = Image {
        id: format!("sha256:{hex}"),
        names: names.iter().map(|s| s.to_string()).collect(),
        repo_digests: vec![],
        layers: vec![],
        size: 0,
        created: None,
        architecture: "amd64".into(),
        os: "linux".into(),
        config: ImageConfig::default(),
        imported_at: "2026-01-01T00:00:00Z".into(),
    };
    crate::store::write_json(
        &store.root().join("images").join(format!("{hex}.json")),
        &ImageRecord {
            version: RECORD_VERSION,
            image,
        },
    )
    .expect("write");
}

#[test]
fn get_by_name_id_and_prefix() {
    let work = tmpdir();
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    let h1 = format!("abcd1{}", "0".repeat(59));
    let h2 = format!("abcd2{}", "0".repeat(59));
    fake_record(&store, &h1, &["busybox:latest", "reg.example/a/b:t"]);
    fake_record(&store, &h2, &[]);
    let id = |i: Result<Image, Error>| i.expect("found").id;
    assert_eq!(id(store.get("busybox")), format!("sha256:{h1}"));
    assert_eq!(
        id(store.get("docker.io/library/busybox:latest")),
        format!("sha256:{h1}")
    );
    assert_eq!(id(store.get("reg.example/a/b:t")), format!("sha256:{h1}"));
    assert_eq!(
        id(store.get(&format!("sha256:{h2}"))),
        format!("sha256:{h2}")
    );
    assert_eq!(id(store.get(&h2)), format!("sha256:{h2}"));
    assert_eq!(id(store.get("abcd1")), format!("sha256:{h1}"));
    assert_eq!(id(store.get("sha256:ABCD2")), format!("sha256:{h2}"));
    assert!(matches!(
        store.get("abcd"),
        Err(Error::InvalidArgument { field: "image", .. })
    ));
    assert!(matches!(store.get("abc"), Err(Error::NotFound(_))));
    assert!(matches!(store.get("busybox:1.36"), Err(Error::NotFound(_))));
    assert!(matches!(store.get("ffff"), Err(Error::NotFound(_))));
    assert!(matches!(store.get(""), Err(Error::NotFound(_))));
}

#[test]
fn remove_keeps_layers_in_use_and_gc_drops_them_later() {
    let work = tmpdir();
    let base = vec![TarEntry::file("base", "base")];
    let (pa, pb) = (work.path().join("a.tar"), work.path().join("b.tar"));
    let ba = build::oci_layout_tar(
        &pa,
        &[base.clone(), vec![TarEntry::file("a", "a")]],
        &ImageConfig::default(),
        &BuildOptions::default(),
    )
    .expect("a");
    let bb = build::oci_layout_tar(
        &pb,
        &[base, vec![TarEntry::file("b", "b")]],
        &ImageConfig::default(),
        &BuildOptions::default(),
    )
    .expect("b");
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    store.import(&pa, Some("a")).expect("a");
    store.import(&pb, Some("b")).expect("b");
    let layers = store.root().join("layers");
    assert_eq!(count(&layers), 3);
    // a's top layer is still mounted by a container.
    let in_use: HashSet<String> = [ba.diff_ids[1].clone()].into_iter().collect();
    let removed = store.remove("a", &in_use).expect("rm a");
    assert_eq!(removed.id, ba.id);
    assert!(matches!(store.get("a"), Err(Error::NotFound(_))));
    assert_eq!(count(&layers), 3, "a layer in use or shared was removed");
    // The container went away: gc drops a's top layer only.
    assert_eq!(store.gc(&HashSet::new()).expect("gc"), 1);
    assert!(!store.layer_path(&ba.diff_ids[1]).exists());
    assert!(store.layer_path(&ba.diff_ids[0]).join("diff/base").exists());
    store
        .remove(&bb.id[7..19], &HashSet::new())
        .expect("rm b by prefix");
    assert_eq!(count(&layers), 0);
    assert_eq!(count(&store.root().join("images")), 0);
    assert_eq!(count(&store.root().join("tmp")), 0);
    assert_eq!(store.gc(&HashSet::new()).expect("gc"), 0);
    assert!(matches!(
        store.remove("a", &HashSet::new()),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn open_sweeps_leftovers_but_not_a_running_import() {
    let work = tmpdir();
    let root = work.path().join("store");
    let store = ImageStore::open(&root).expect("open");
    let tmp = root.join("tmp");
    fs::create_dir_all(tmp.join("import-dead/archive")).expect("dead");
    fs::write(tmp.join("import-dead.lock"), "").expect("dead lock");
    fs::create_dir_all(tmp.join("gc-abc")).expect("gc leftover");
    let live = Staging::create(&tmp).expect("live staging");
    drop(ImageStore::open(&root).expect("reopen"));
    let mut left: Vec<_> = fs::read_dir(&tmp)
        .expect("ls")
        .map(|e| e.expect("e").path())
        .collect();
    left.sort();
    let mut want = vec![live.dir.clone(), live.lock_path.clone()];
    want.sort();
    assert_eq!(left, want);
    drop(live);
    assert_eq!(count(&tmp), 0);
    drop(store);
}

#[test]
fn concurrent_imports_and_removes_keep_the_store_consistent() {
    let work = tmpdir();
    let base = vec![
        TarEntry::dir("bin"),
        TarEntry::file("bin/x", vec![1u8; 64 * 1024]),
    ];
    let archives: Vec<PathBuf> = (0..4)
        .map(|i| {
            let p = work.path().join(format!("{i}.tar"));
            build::oci_layout_tar(
                &p,
                &[base.clone(), vec![TarEntry::file("top", format!("{i}"))]],
                &ImageConfig::default(),
                &BuildOptions {
                    gzip_layers: i % 2 == 0,
                    ..BuildOptions::default()
                },
            )
            .expect("build");
            p
        })
        .collect();
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    std::thread::scope(|s| {
        for (i, a) in archives.iter().enumerate() {
            let store = &store;
            s.spawn(move || {
                for round in 0..5 {
                    let name = format!("img{i}");
                    let image = store.import(a, Some(&name)).expect("import");
                    for d in store.layer_dirs(&image) {
                        assert!(d.is_dir(), "round {round}: {d:?} missing after import");
                    }
                    store.remove(&name, &HashSet::new()).expect("remove");
                }
                store
                    .import(a, Some(&format!("img{i}")))
                    .expect("final import");
            });
        }
    });
    let images = store.list().expect("list");
    assert_eq!(images.len(), 4);
    for i in &images {
        for d in store.layer_dirs(i) {
            assert!(d.join("../layer.json").exists(), "{d:?}");
        }
    }
    assert_eq!(count(&store.root().join("layers")), 5);
    assert_eq!(count(&store.root().join("tmp")), 0);
}

#[test]
fn normalize_reference_follows_dockers_rules() {
    let ok = [
        ("busybox", "busybox:latest"),
        ("busybox:1.36", "busybox:1.36"),
        ("BusyBox:V1", "busybox:V1"),
        ("docker.io/library/busybox", "busybox:latest"),
        ("docker.io/user/app:2", "user/app:2"),
        ("reg.example/a/b:tag", "reg.example/a/b:tag"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("localhost:5000/app:v_1.2-x", "localhost:5000/app:v_1.2-x"),
        ("a__b/c--d/e.f", "a__b/c--d/e.f:latest"),
        ("app:_x", "app:_x"),
    ];
    for (input, want) in ok {
        assert_eq!(normalize_reference(input).expect(input), want, "{input}");
    }
    let bad = [
        "",
        "app:",
        ":tag",
        "app:-x",
        "app:.x",
        "a b",
        "-app",
        "app-",
        "a..b",
        "a/",
        "/a",
        "a//b",
        "app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "reg.example:port/app",
    ];
    for input in bad {
        assert!(
            matches!(
                normalize_reference(input),
                Err(Error::InvalidArgument { field: "name", .. })
            ),
            "{input:?} accepted"
        );
    }
    let long_tag = format!("app:{}", "t".repeat(129));
    assert!(normalize_reference(&long_tag).is_err());
    assert!(
        normalize_reference("a@sha256:00")
            .expect_err("digest")
            .to_string()
            .contains("a digest reference")
    );
}

#[test]
fn a_host_directory_becomes_a_layer() {
    let work = tmpdir();
    let src = work.path().join("rootfs");
    fs::create_dir_all(src.join("usr/bin")).expect("mkdir");
    fs::write(src.join("usr/bin/tool"), "tool").expect("tool");
    fs::set_permissions(src.join("usr/bin/tool"), fs::Permissions::from_mode(0o750))
        .expect("chmod");
    std::os::unix::fs::symlink("usr/bin", src.join("bin")).expect("symlink");
    let base = build::entries_from_dir(&src, "").expect("entries");
    assert_eq!(
        base.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        vec!["bin", "usr", "usr/bin", "usr/bin/tool"]
    );
    let archive = work.path().join("i.tar");
    build::docker_save_tar(
        &archive,
        &build::two_layers(base),
        &ImageConfig::default(),
        &BuildOptions::default(),
    )
    .expect("build");
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    let image = store.import(&archive, Some("dir")).expect("import");
    let target = work.path().join("m");
    let _ov = Overlay::mount(&store.layer_dirs(&image), &target);
    let tool = fs::metadata(target.join("bin/tool")).expect("through the symlink");
    assert_eq!(tool.permissions().mode() & 0o7777, 0o750);
    assert!(target.join("data/a.txt").exists() && target.join("data/b.txt").exists());
    assert!(!target.join("etc/removed.txt").exists());
}

/// The static busybox the integration tests use too (`RSUP_BUSYBOX` or
/// `/bin/busybox`; scripts/test.sh installs busybox-static).
fn host_busybox() -> PathBuf {
    let p = std::env::var_os("RSUP_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
    assert!(
        p.is_file(),
        "{} missing: install busybox-static or set RSUP_BUSYBOX",
        p.display()
    );
    p
}

#[test]
fn a_busybox_image_runs_in_its_merged_root() {
    let work = tmpdir();
    let layers = build::two_layers(build::busybox_rootfs(
        &host_busybox(),
        &["sh", "cat", "test", "echo"],
    ));
    let archive = work.path().join("bb.tar.gz");
    build::docker_save_tar(
        &archive,
        &layers,
        &ImageConfig::default(),
        &BuildOptions {
            ref_name: Some("busybox:test".into()),
            gzip_outer: true,
            ..BuildOptions::default()
        },
    )
    .expect("build");
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    let image = store.import(&archive, None).expect("import");
    assert_eq!(store.get("busybox:test").expect("get"), image);
    let target = work.path().join("root");
    let _ov = Overlay::mount(&store.layer_dirs(&image), &target);
    let out = std::process::Command::new("chroot")
        .arg(&target)
        .args([
            "/bin/sh",
            "-c",
            "cat /data/a.txt /data/b.txt; test -e /etc/removed.txt || echo gone",
        ])
        .output()
        .expect("chroot");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a from layer 1\nb from layer 2\ngone\n"
    );
}

#[test]
fn an_unreadable_record_stops_gc_and_remove_from_deleting() {
    let work = tmpdir();
    let archive = work.path().join("i.tar");
    build::oci_layout_tar(
        &archive,
        &[vec![TarEntry::file("f", "f")]],
        &ImageConfig::default(),
        &BuildOptions::default(),
    )
    .expect("build");
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    let image = store.import(&archive, Some("x")).expect("import");
    let record = store
        .root()
        .join("images")
        .join(format!("{}.json", &image.id[7..]));
    fs::write(&record, "{ torn").expect("corrupt");
    assert!(matches!(
        store.gc(&HashSet::new()),
        Err(Error::Store(crate::store::StoreError::Json { .. }))
    ));
    fake_record(&store, &"e".repeat(64), &["other:latest"]);
    assert!(matches!(
        store.remove("other", &HashSet::new()),
        Err(Error::Store(crate::store::StoreError::Json { .. }))
    ));
    assert!(store.get("other").is_ok());
    assert_eq!(count(&store.root().join("layers")), 1);
}

/// One layer holding `mib` MiB of zeros: gzip'ed, about 1000:1.
fn bomb_layers(mib: usize) -> Vec<Vec<TarEntry>> {
    vec![vec![
        TarEntry::dir("data"),
        TarEntry::file("data/zeros", vec![0u8; mib << 20]),
    ]]
}

fn limits(max_image_bytes: u64, min_free: limits::FreeReserve) -> UnpackLimits {
    UnpackLimits {
        max_image_bytes,
        min_free,
        min_free_inodes: limits::InodeReserve::Count(0),
    }
}

#[test]
fn a_gzip_bomb_layer_stops_at_the_image_limit_and_leaves_nothing() {
    let work = tmpdir();
    let archive = work.path().join("bomb.tar");
    build::oci_layout_tar(
        &archive,
        &bomb_layers(24),
        &ImageConfig::default(),
        &BuildOptions {
            gzip_layers: true,
            gzip_outer: true,
            ..BuildOptions::default()
        },
    )
    .expect("build");
    let size = fs::metadata(&archive).expect("stat").len();
    assert!(size < 1 << 20, "the bomb is {size} bytes");
    let no_reserve = limits::FreeReserve::Bytes(0);
    let store = ImageStore::open(&work.path().join("store"))
        .expect("open")
        .with_limits(limits(4 << 20, no_reserve));
    let msg = err_text(store.import(&archive, Some("bomb")));
    assert!(
        msg.contains("the image unpacks to more than 4.0 MiB")
            && msg.contains("rsupd --image-max-size"),
        "{msg}"
    );
    assert_store_empty(store.root());
    // Under a limit it fits, the same archive imports.
    let store = ImageStore::open(&work.path().join("store"))
        .expect("open")
        .with_limits(limits(32 << 20, no_reserve));
    store.import(&archive, Some("bomb")).expect("import");
}

#[test]
fn a_gzip_bomb_archive_stops_at_the_limit() {
    let work = tmpdir();
    let archive = work.path().join("bomb.tar.gz");
    // Plain layers in a gzip'ed archive: the archive itself is the bomb.
    build::docker_save_tar(
        &archive,
        &bomb_layers(24),
        &ImageConfig::default(),
        &BuildOptions {
            gzip_outer: true,
            ..BuildOptions::default()
        },
    )
    .expect("build");
    let store = ImageStore::open(&work.path().join("store"))
        .expect("open")
        .with_limits(limits(4 << 20, limits::FreeReserve::Bytes(0)));
    let msg = err_text(store.import(&archive, None));
    assert!(
        msg.contains("the archive unpacks to more than 4.0 MiB"),
        "{msg}"
    );
    assert_store_empty(store.root());
}

#[test]
fn unpacking_stops_within_a_buffer_of_the_limit() {
    use std::io::Write as _;
    let work = tmpdir();
    let blob = work.path().join("layer.tar.gz");
    let tar = build::layer_tar(&bomb_layers(24)[0]).expect("tar");
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(&blob).expect("create"),
        flate2::Compression::fast(),
    );
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip");
    let dest = work.path().join("dest");
    fs::create_dir(&dest).expect("mkdir");
    let budget = limits::Budget::new(
        "the image",
        limits(2 << 20, limits::FreeReserve::Bytes(0)),
        work.path(),
    );
    layer::read_layer(&blob, Some(&dest), &budget).expect_err("stopped");
    assert!(
        matches!(
            budget.tripped(),
            Some(limits::LimitError::TooLarge { max, .. }) if max == 2 << 20
        ),
        "{:?}",
        budget.tripped()
    );
    let written = fs::metadata(dest.join("data/zeros")).map_or(0, |m| m.len());
    assert!(
        written <= 2 << 20,
        "{written} bytes written past a 2 MiB limit"
    );
}

#[test]
fn the_free_space_reserve_stops_an_import() {
    let work = tmpdir();
    let layers = demo_layers(work.path());
    let archive = work.path().join("i.tar");
    build::oci_layout_tar(
        &archive,
        &layers,
        &ImageConfig::default(),
        &BuildOptions::default(),
    )
    .expect("build");
    let store = ImageStore::open(&work.path().join("store"))
        .expect("open")
        .with_limits(limits(u64::MAX, limits::FreeReserve::Bytes(u64::MAX)));
    match store.import(&archive, Some("x")) {
        Err(Error::ResourceExhausted(msg)) => {
            assert!(msg.contains("rsupd --image-min-free"), "{msg}");
            assert!(msg.contains("mounted at /"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert_store_empty(store.root());
}

/// A 12-byte tar number field: octal, or GNU base-256 past 8 GiB.
fn tar_number(field: &mut [u8; 12], v: u64) {
    if v < 1 << 33 {
        let s = format!("{v:011o}\0");
        field.copy_from_slice(s.as_bytes());
    } else {
        *field = [0; 12];
        field[4..].copy_from_slice(&v.to_be_bytes());
        field[0] = 0x80;
    }
}

/// An uncompressed layer tar with one GNU sparse file `name` of `apparent`
/// bytes whose only data are `data` (one 512-byte block) at offset 0: what
/// `tar --sparse` writes for a file that is mostly a hole.
fn sparse_layer(name: &str, apparent: u64, data: &[u8; 512]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).expect("path");
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(512);
    let gnu = h.as_gnu_mut().expect("gnu header");
    tar_number(&mut gnu.sparse[0].offset, 0);
    tar_number(&mut gnu.sparse[0].numbytes, 512);
    // The map must end at the apparent size: an empty last block there.
    tar_number(&mut gnu.sparse[1].offset, apparent);
    tar_number(&mut gnu.sparse[1].numbytes, 0);
    tar_number(&mut gnu.realsize, apparent);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn a_sparse_entry_is_charged_its_apparent_size() {
    let work = tmpdir();
    let blob = work.path().join("layer.tar");
    let data = [7u8; 512];
    // 50 GB of holes in about 2 KiB of tar.
    let apparent: u64 = 50_000_000_000;
    fs::write(&blob, sparse_layer("hole", apparent, &data)).expect("write");
    assert!(fs::metadata(&blob).expect("stat").len() < 4096);
    let dest = work.path().join("dest");
    fs::create_dir(&dest).expect("mkdir");
    let no_reserve = limits::FreeReserve::Bytes(0);
    let budget = limits::Budget::new("the image", limits(16 << 30, no_reserve), work.path());
    layer::read_layer(&blob, Some(&dest), &budget).expect_err("past 16 GiB");
    assert!(
        matches!(budget.tripped(), Some(limits::LimitError::TooLarge { .. })),
        "{:?}",
        budget.tripped()
    );
    assert!(!dest.join("hole").exists(), "unpacked before the charge");

    // Under a maximum that fits, it unpacks as a sparse file, and the
    // layer's size is the apparent one.
    let budget = limits::Budget::new("the image", limits(u64::MAX, no_reserve), work.path());
    let s = layer::read_layer(&blob, Some(&dest), &budget).expect("unpack");
    assert_eq!(s.size, apparent);
    assert!(budget.used() >= apparent, "charged {}", budget.used());
    let m = fs::metadata(dest.join("hole")).expect("stat");
    assert_eq!(m.len(), apparent);
    assert!(m.blocks() * 512 < 1 << 20, "{} blocks", m.blocks());
    let mut head = [0u8; 512];
    fs::File::open(dest.join("hole"))
        .and_then(|mut f| f.read_exact(&mut head))
        .expect("read");
    assert_eq!(head, data);
}

#[test]
fn the_inode_reserve_stops_a_layer_of_empty_files() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    }
    let work = tmpdir();
    // A filesystem with few inodes and plenty of bytes.
    let fs_dir = work.path().join("fs");
    fs::create_dir(&fs_dir).expect("mkdir");
    if let Err(e) = nix::mount::mount(
        Some("tmpfs"),
        &fs_dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64m,nr_inodes=3000"),
    ) {
        eprintln!("skipped: cannot mount a tmpfs: {e}");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(&fs_dir);
    let mut entries = vec![TarEntry::dir("d")];
    entries.extend((0..5000).map(|i| TarEntry::file(&format!("d/f{i}"), Vec::new())));
    let blob = work.path().join("layer.tar");
    fs::write(&blob, build::layer_tar(&entries).expect("tar")).expect("write");
    let dest = fs_dir.join("dest");
    fs::create_dir(&dest).expect("mkdir");
    let l = UnpackLimits {
        max_image_bytes: u64::MAX,
        min_free: limits::FreeReserve::Bytes(0),
        min_free_inodes: limits::InodeReserve::Count(1000),
    };
    let budget = limits::Budget::new("the image", l, &fs_dir);
    let e = layer::read_layer(&blob, Some(&dest), &budget).expect_err("stopped");
    let Some(limits::LimitError::NoInodes { free, device, .. }) = budget.tripped() else {
        panic!("{e}: {:?}", budget.tripped())
    };
    assert!(free <= 1000, "{free}");
    assert!(device.contains("tmpfs"), "{device}");
    let msg = Error::from(budget.tripped().expect("tripped")).to_string();
    assert!(msg.contains("--image-min-free-inodes"), "{msg}");
    // It stopped before the filesystem ran out: inodes are left.
    let st = nix::sys::statvfs::statvfs(&fs_dir).expect("statvfs");
    assert!(st.files_free() > 500, "{} inodes left", st.files_free());
}

/// A config blob naming these diff_ids.
fn pulled_config(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": archive::host_arch(),
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config")
}

#[test]
fn a_pull_shares_layers_with_an_import_and_keeps_blobs_for_a_push() {
    let work = tmpdir();
    let base = vec![TarEntry::dir("bin"), TarEntry::file("bin/tool", "shared")];
    let pa = work.path().join("a.tar");
    let built = build::oci_layout_tar(
        &pa,
        std::slice::from_ref(&base),
        &ImageConfig::default(),
        &BuildOptions {
            gzip_layers: true,
            ..BuildOptions::default()
        },
    )
    .expect("a");
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    let a = store.import(&pa, Some("a")).expect("import");
    // The import kept the layer's blob as it was and the config as it came.
    let (config, blobs) = store.push_parts(&a).expect("push parts");
    assert_eq!(config, built.config);
    assert_eq!(blobs.len(), 1);
    assert_eq!(blobs[0].1.digest, built.layer_digests[0]);
    assert_eq!(blobs[0].1.media_type, MEDIA_LAYER_GZIP);
    assert_eq!(
        layer::file_digest(&blobs[0].0).expect("digest"),
        built.layer_digests[0]
    );

    // A pulled image on the same base: only the new layer was downloaded.
    let top = build::layer_tar(&[TarEntry::file("top", "pulled")]).expect("tar");
    let top_path = store.downloads_dir().join("top");
    fs::write(&top_path, &top).expect("write");
    let diff_ids = vec![built.diff_ids[0].clone(), digest_of(&top)];
    let cfg = pulled_config(&diff_ids);
    let layers = [
        PulledLayer {
            blob: None,
            digest: built.layer_digests[0].clone(),
        },
        PulledLayer {
            blob: Some(top_path.clone()),
            digest: digest_of(&top),
        },
    ];
    assert!(store.has_layer(&built.diff_ids[0]));
    let before = store.layers_unpacked();
    let manifest_digest = format!("sha256:{}", "ab".repeat(32));
    let p = store
        .install_pulled(
            cfg.clone(),
            &digest_of(&cfg),
            &layers,
            Some("127.0.0.1:5000/app:1".into()),
            Some(format!("127.0.0.1:5000/app@{manifest_digest}")),
        )
        .expect("install");
    assert_eq!(store.layers_unpacked(), before + 1, "only the new layer");
    assert_eq!(p.layers, diff_ids);
    assert_eq!(p.layers[0], a.layers[0]);
    assert_eq!(store.layer_dirs(&p)[1], store.layer_dirs(&a)[0]);
    assert!(store.layer_path(&diff_ids[1]).join("diff/top").is_file());
    // Found by its repo digest, and by name.
    let by_digest = store
        .get(&format!("127.0.0.1:5000/app@{manifest_digest}"))
        .expect("by digest");
    assert_eq!(by_digest.id, p.id);
    assert!(
        store
            .get(&format!("127.0.0.1:5000/other@{manifest_digest}"))
            .is_err()
    );
    assert_eq!(store.get("127.0.0.1:5000/app:1").expect("by name").id, p.id);
    let (_, pushed) = store.push_parts(&p).expect("parts");
    assert_eq!(pushed[1].1.digest, digest_of(&top));
    assert_eq!(pushed[1].1.media_type, MEDIA_LAYER_TAR);

    // docker tag: the name moves to the tagged image.
    store.tag(&a.id, "127.0.0.1:5000/app:1").expect("tag");
    assert_eq!(store.get("127.0.0.1:5000/app:1").expect("get").id, a.id);
    assert!(store.get(&p.id).expect("p").names.is_empty());
    assert!(store.tag(&a.id, "Bad Name").is_err());
}

#[test]
fn a_pulled_layer_or_config_that_does_not_match_leaves_nothing() {
    let work = tmpdir();
    let store = ImageStore::open(&work.path().join("store")).expect("open");
    let real = build::layer_tar(&[TarEntry::file("f", "real")]).expect("tar");
    let evil = build::layer_tar(&[TarEntry::file("f", "evil")]).expect("tar");
    let blob = store.downloads_dir().join("evil");
    fs::write(&blob, &evil).expect("write");
    // The config says `real`, the blob is `evil`.
    let cfg = pulled_config(&[digest_of(&real)]);
    let layers = [PulledLayer {
        blob: Some(blob.clone()),
        digest: digest_of(&evil),
    }];
    let e = store
        .install_pulled(
            cfg.clone(),
            &digest_of(&cfg),
            &layers,
            Some("x".into()),
            None,
        )
        .expect_err("refused");
    assert!(e.to_string().contains("digest mismatch"), "{e}");
    assert_store_empty(store.root());
    assert_eq!(count(&store.root().join("configs")), 0);
    // A config that is not what its digest says.
    let e = store
        .install_pulled(cfg.clone(), &digest_of(b"other"), &layers, None, None)
        .expect_err("refused");
    assert!(e.to_string().contains("config digest mismatch"), "{e}");
    // More layers than diff_ids.
    let two = [layers[0].clone(), layers[0].clone()];
    let e = store
        .install_pulled(cfg.clone(), &digest_of(&cfg), &two, None, None)
        .expect_err("refused");
    assert!(e.to_string().contains("2 layers"), "{e}");
    assert_store_empty(store.root());
}
