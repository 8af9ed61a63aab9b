//! Tests of `crate::paths`: resolution, creation, reads and writes and
//! walks under a root, symlink escapes, and directories swapped for
//! symlinks while rsup works in them.

use super::*;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A root and, beside it, an "outside" canary dir that must stay empty.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").expect("write");
    Fixture {
        _tmp: tmp,
        root,
        outside,
    }
}

fn assert_empty(dir: &Path) {
    let n = std::fs::read_dir(dir).expect("read_dir").count();
    assert_eq!(n, 0, "{} must stay empty", dir.display());
}

/// Where an fd points on the host, by its magic link.
fn host_path(t: &Target) -> PathBuf {
    std::fs::read_link(t.proc_path()).expect("readlink")
}

#[test]
fn absolute_symlinks_and_dotdot_stay_in_the_root() {
    let f = fixture();
    let r = RootDir::open(&f.root).expect("open");
    symlink("/../../../../etc", f.root.join("escape")).expect("ln");
    symlink(&f.outside, f.root.join("abs")).expect("ln");
    std::fs::write(f.outside.join("secret"), "x").expect("write");
    let inside = std::fs::metadata(f.root.join("etc/passwd")).expect("stat");
    for p in [
        "/escape/passwd",
        "../../etc/passwd",
        "/etc/../../etc/passwd",
    ] {
        let t = r.resolve(p).expect(p);
        let st = t.stat().expect("stat");
        assert_eq!((st.st_dev, st.st_ino), (inside.dev(), inside.ino()), "{p}");
    }
    // `abs` names the outside dir by its host path: inside the root that
    // path does not exist.
    assert!(
        r.resolve("/abs/secret")
            .expect_err("dangling")
            .is_not_found()
    );
    std::fs::remove_file(f.outside.join("secret")).expect("rm");
    let e = r.mkdir_all("/abs/new", 0o755).expect_err("dangling");
    assert!(
        e.to_string().contains("\"/abs\"") && e.to_string().contains("dangling symlink"),
        "{e}"
    );
    let e = r.create_file("/abs", 0o644).expect_err("dangling");
    assert!(e.to_string().contains("dangling symlink"), "{e}");
    assert!(r.create_file("/abs/file", 0o644).is_err());
    assert!(r.write_file("/abs", b"x", 0o644, None).is_err());
    assert_empty(&f.outside);
    // Once the path exists inside the root, the symlink leads there.
    let mirrored = f.root.join(f.outside.strip_prefix("/").expect("absolute"));
    std::fs::create_dir_all(&mirrored).expect("mkdir");
    let t = r
        .mkdir_all("/abs/new", 0o755)
        .expect("mkdir through symlink");
    assert_eq!(host_path(&t), mirrored.join("new"));
    let t = r.create_file("/abs/file", 0o644).expect("create");
    assert_eq!(host_path(&t), mirrored.join("file"));
    assert_empty(&f.outside);
}

#[test]
fn files_are_written_only_where_they_belong() {
    let f = fixture();
    let r = RootDir::open(&f.root).expect("open");
    r.write_file("/etc/hosts", b"one\n", 0o644, None)
        .expect("create");
    r.write_file("/etc/hosts", b"2\n", 0o600, None)
        .expect("overwrite");
    let md = std::fs::metadata(f.root.join("etc/hosts")).expect("stat");
    assert_eq!(md.mode() & 0o7777, 0o600);
    assert_eq!(
        std::fs::read(f.root.join("etc/hosts")).expect("read"),
        b"2\n"
    );
    // A trailing symlink is refused, even one that stays inside.
    symlink("passwd", f.root.join("etc/link")).expect("ln");
    assert!(r.write_file("/etc/link", b"x", 0o644, None).is_err());
    // A FIFO is refused without opening it (which would block).
    nix::unistd::mkfifo(&f.root.join("etc/fifo"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    assert!(r.write_file("/etc/fifo", b"x", 0o644, None).is_err());
    assert!(r.read_file("/etc/fifo", 100).is_err());
    // A directory is not a file.
    assert!(r.write_file("/etc", b"x", 0o644, None).is_err());
    // procfs is refused (here /proc/self/comm, which is harmless).
    let me = PathBuf::from(format!("/proc/{}", std::process::id()));
    let p = RootDir::open(&me).expect("open /proc/PID");
    let e = p
        .write_file("comm", b"pwned", 0o644, None)
        .expect_err("procfs");
    assert!(e.to_string().contains("procfs"), "{e}");
    // Reads have a cap.
    assert_eq!(
        r.read_file("/etc/link", 100).expect("read"),
        b"root:x:0:0::/root:/bin/sh\n"
    );
    assert!(matches!(
        r.read_file("/etc/passwd", 4),
        Err(PathError::TooLarge { .. })
    ));
}

#[test]
fn plain_dirs_refuse_symlinks() {
    let f = fixture();
    let r = RootDir::open(&f.root).expect("open");
    symlink("/etc", f.root.join("proc")).expect("ln");
    assert!(r.plain_dir("proc", 0o555).is_err());
    let t = r.plain_dir("sys", 0o555).expect("made");
    assert!(t.is_dir());
    assert!(r.plain_dir("sys", 0o555).expect("exists").is_dir());
}

#[test]
fn walks_record_what_they_look_at() {
    let f = fixture();
    let r = RootDir::open(&f.root).expect("open");
    std::fs::create_dir_all(f.root.join("usr/bin")).expect("mkdir");
    std::fs::write(f.root.join("usr/bin/sh"), "").expect("write");
    symlink("usr/bin", f.root.join("bin")).expect("ln");
    symlink("/nowhere/x", f.root.join("dangling")).expect("ln");
    let w = r.walk("/bin/sh");
    assert_eq!(w.end, WalkEnd::Found("/usr/bin/sh".into()));
    assert_eq!(w.visited, ["/bin", "/usr", "/usr/bin", "/usr/bin/sh"]);
    let w = r.walk("/bin/nosuch");
    assert_eq!(
        w.end,
        WalkEnd::Missing {
            at: "/usr/bin/nosuch".into(),
            full: "/usr/bin/nosuch".into()
        }
    );
    let w = r.walk("/dangling/bin/y");
    assert_eq!(
        w.end,
        WalkEnd::Missing {
            at: "/nowhere".into(),
            full: "/nowhere/x/bin/y".into()
        }
    );
    assert!(w.visited.contains(&"/nowhere/x/bin/y".to_string()));
    symlink("loop", f.root.join("loop")).expect("ln");
    assert!(matches!(r.walk("/loop/x").end, WalkEnd::Unknown(_)));
    assert!(matches!(r.walk("/etc/passwd/x").end, WalkEnd::Unknown(_)));
    assert!(is_ancestor_or_self("/usr", "/usr/bin/sh"));
    assert!(is_ancestor_or_self("/usr/bin/sh", "/usr/bin/sh"));
    assert!(!is_ancestor_or_self("/us", "/usr/bin"));
    assert!(!is_ancestor_or_self("/usr/bin", "/usr"));
}

/// Keeps swapping `root/a` between a real directory and a symlink to the
/// outside dir until stopped.
fn swapper(root: PathBuf, outside: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::fs::create_dir_all(root.join("a")).expect("mkdir");
    symlink(&outside, root.join("b")).expect("ln");
    std::thread::spawn(move || {
        let mut swaps = 0;
        while !stop.load(Ordering::Relaxed) {
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &root.join("a"),
                nix::fcntl::AT_FDCWD,
                &root.join("b"),
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .expect("exchange");
            swaps += 1;
        }
        swaps
    })
}

#[test]
fn a_directory_swapped_for_a_symlink_never_leads_outside() {
    let f = fixture();
    let r = RootDir::open(&f.root).expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let t = swapper(f.root.clone(), f.outside.clone(), stop.clone());
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut ok = 0;
    let mut i = 0u64;
    while Instant::now() < deadline || i < 500 {
        i += 1;
        let check = |t: &Target| {
            let p = host_path(t);
            assert!(
                p.starts_with(&f.root),
                "{} is outside the root",
                p.display()
            );
        };
        if let Ok(t) = r.mkdir_all(&format!("/a/d{}/e", i % 7), 0o755) {
            check(&t);
            ok += 1;
        }
        if let Ok(t) = r.create_file(&format!("/a/f{}", i % 5), 0o644) {
            check(&t);
            ok += 1;
        }
        if let Ok(t) = r.resolve("/a") {
            check(&t);
        }
        if r.write_file(&format!("/a/w{}", i % 3), b"x", 0o644, None)
            .is_ok()
        {
            ok += 1;
        }
        let _ = r.read_file("/a/w0", 10);
        let _ = r.walk("/a/d1/e");
        if let Ok(t) = r.mknod_char(&format!("/a/n{i}"), 1, 3, 0o666) {
            check(&t);
        }
        if i.is_multiple_of(50) {
            assert_empty(&f.outside);
        }
        if i > 100_000 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = t.join().expect("swapper");
    assert_empty(&f.outside);
    assert!(swaps > 0 && ok > 0, "swaps {swaps}, successes {ok}");
}

#[test]
fn a_directory_replaced_by_a_symlink_never_leads_outside() {
    // The other classic: remove the directory and put a symlink in its
    // place (no renameat2 needed), in a loop.
    let f = fixture();
    let r = RootDir::open(&f.root).expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let (root, outside, s) = (f.root.clone(), f.outside.clone(), stop.clone());
    let t = std::thread::spawn(move || {
        let a = root.join("a");
        while !s.load(Ordering::Relaxed) {
            let _ = std::fs::remove_dir_all(&a).or_else(|_| std::fs::remove_file(&a));
            let _ = symlink(&outside, &a);
            let _ = std::fs::remove_file(&a);
            let _ = std::fs::create_dir(&a);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut i = 0u64;
    while Instant::now() < deadline {
        i += 1;
        let _ = r.mkdir_all("/a/x/y", 0o755);
        let _ = r.create_file("/a/file", 0o644);
        let _ = r.write_file("/a/w", b"x", 0o644, None);
        if i.is_multiple_of(50) {
            assert_empty(&f.outside);
        }
    }
    stop.store(true, Ordering::Relaxed);
    t.join().expect("thread");
    assert_empty(&f.outside);
}
