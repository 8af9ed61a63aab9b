//! One layer blob: detect its compression, hash its uncompressed bytes (the
//! diff_id) and, when asked, unpack it into a directory in the form overlayfs
//! reads as a lower layer.
//!
//! Invariants: nothing is written outside the destination directory. Entry
//! paths that are absolute or contain `..` are refused; regular entries go
//! through `tar`'s `unpack_in` (which canonicalizes the parent and refuses
//! one outside the destination), and the entries handled here (whiteouts,
//! opaque markers, device nodes) walk their parent directories one component
//! at a time and refuse any that is not a real directory (a symlink is never
//! followed). The uncompressed stream is hashed in full, including the tar
//! end blocks, so the digest is the one `docker save` and OCI tools record.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::limits::{Budget, Metered};

/// How a blob is compressed, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
}

/// Reads the magic bytes of `path`: gzip is supported, zstd, xz and bzip2 are
/// refused by name, anything else is taken as a plain tar.
pub(crate) fn detect(path: &Path) -> Result<Compression, String> {
    let mut f = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        match f.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read {}: {e}", path.display())),
        }
    }
    let m = &magic[..n];
    if m.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err("unsupported layer compression: zstd".into())
    } else if m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err("unsupported layer compression: xz".into())
    } else if m.starts_with(b"BZh") {
        Err("unsupported layer compression: bzip2".into())
    } else {
        Ok(Compression::None)
    }
}

/// Opens `path` and undoes its compression.
pub(crate) fn open_decompressed(path: &Path) -> Result<Box<dyn Read>, String> {
    let compression = detect(path)?;
    let f = BufReader::with_capacity(
        256 * 1024,
        File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?,
    );
    Ok(match compression {
        Compression::None => Box::new(f),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
    })
}

/// A reader that hashes everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads the rest of the stream and returns `sha256:<hex>` of all of it.
    pub(crate) fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((
            format!("sha256:{}", hex(&self.hasher.finalize())),
            self.count,
        ))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Lower-case hex of `bytes`.
/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `sha256:<hex>` of a file, streamed.
pub(crate) fn file_digest(path: &Path) -> Result<String, String> {
    let f = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let (d, _) = HashingReader::new(BufReader::with_capacity(256 * 1024, f))
        .finish()
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(d)
}

/// What reading a layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerSummary {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Sum of the sizes of the regular files (sparse ones at their
    /// apparent size).
    pub size: u64,
}

/// Reads the layer blob at `blob` (plain tar or gzip), returns its diff_id and
/// size and, if `dest` is given, unpacks it into `dest` (an existing, empty
/// directory) with overlay whiteouts. The uncompressed bytes, the holes of
/// sparse entries and one inode per entry are charged to
/// `budget`; when it stops the read, the error is the budget's to explain
/// ([`Budget::explain`]). Errors are messages for the caller to put in
/// context.
pub(crate) fn read_layer(
    blob: &Path,
    dest: Option<&Path>,
    budget: &Budget,
) -> Result<LayerSummary, String> {
    let gzip = detect(blob)? == Compression::Gzip;
    // Every uncompressed byte is charged before it is written: a bomb stops
    // at the image's limit, not at its digest check.
    let stream = HashingReader::new(Metered::new(open_decompressed(blob)?, budget));
    let corrupt = |e: io::Error| {
        if gzip {
            format!("truncated/corrupt gzip or tar stream: {e}")
        } else {
            format!("truncated/corrupt tar stream: {e}")
        }
    };
    let mut ar = tar::Archive::new(stream);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    ar.set_unpack_xattrs(false);
    let mut size = 0u64;
    // Directory mtimes change as entries land in them: set them at the end.
    let mut dir_times = Vec::new();
    for entry in ar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let parts = clean_path(&raw).map_err(|r| format!("entry {shown:?}: {r}"))?;
        let kind = entry.header().entry_type();
        // Each entry may take an inode.
        budget.charge_entry().map_err(|e| e.to_string())?;
        if kind.is_gnu_sparse() {
            // A GNU sparse entry carries only its data; tar recreates the
            // holes with seek + set_len, so they cost no blocks here, but
            // they are the file's size (tar reports the apparent size),
            // and what a copy of the file may cost: charge them as if
            // written (see docs/images.md).
            let stored = entry.header().entry_size().map_err(corrupt)?;
            budget
                .charge(entry.size().saturating_sub(stored))
                .map_err(|e| e.to_string())?;
        }
        if kind.is_file() || kind == tar::EntryType::Continuous || kind.is_gnu_sparse() {
            size += entry.size();
        }
        let Some(dest) = dest else { continue };
        let Some(name) = parts.last() else {
            // The layer's root ("./"): the overlay root comes from elsewhere.
            continue;
        };
        let name = name.as_bytes().to_vec();
        let parent_parts = &parts[..parts.len() - 1];
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            let parent =
                safe_dir(dest, parent_parts).map_err(|e| format!("entry {shown:?}: {e}"))?;
            if hidden == b".wh..opq" {
                crate::sys::lsetxattr(&parent, "trusted.overlay.opaque", b"y")
                    .map_err(|e| format!("entry {shown:?}: marking the directory opaque: {e}"))?;
            } else if hidden.starts_with(b".wh.") {
                // Other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): no meaning
                // for overlayfs.
            } else if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(format!("entry {shown:?}: invalid whiteout name"));
            } else {
                let target = parent.join(std::ffi::OsStr::from_bytes(hidden));
                remove_any(&target).map_err(|e| format!("entry {shown:?}: {e}"))?;
                nix::sys::stat::mknod(
                    &target,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    nix::sys::stat::makedev(0, 0),
                )
                .map_err(|e| format!("entry {shown:?}: creating the whiteout: {e}"))?;
            }
            continue;
        }
        let mtime = entry.header().mtime().unwrap_or(0);
        match kind {
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let parent =
                    safe_dir(dest, parent_parts).map_err(|e| format!("entry {shown:?}: {e}"))?;
                let target = parent.join(std::ffi::OsStr::from_bytes(&name));
                make_node(&target, &entry).map_err(|e| format!("entry {shown:?}: {e}"))?;
                set_mtime(&target, mtime).map_err(|e| format!("entry {shown:?}: {e}"))?;
            }
            _ => {
                make_parents(dest, parent_parts).map_err(|e| format!("entry {shown:?}: {e}"))?;
                let done = entry
                    .unpack_in(dest)
                    .map_err(|e| format!("entry {shown:?}: {e}"))?;
                if !done {
                    return Err(format!("entry {shown:?}: refused (outside the layer)"));
                }
                if kind.is_dir() {
                    dir_times.push((dest.join(parts.iter().collect::<PathBuf>()), mtime));
                }
            }
        }
    }
    let (diff_id, _) = ar.into_inner().finish().map_err(corrupt)?;
    // Deepest first, so setting a child does not touch its parent's time again.
    dir_times.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (p, mtime) in dir_times {
        set_mtime(&p, mtime).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(LayerSummary { diff_id, size })
}

/// The normal components of an entry path; absolute paths and `..` are
/// refused, `.` is dropped.
pub(crate) fn clean_path(raw: &[u8]) -> Result<Vec<OsString>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path refused");
    }
    let mut out = Vec::new();
    for c in Path::new(std::ffi::OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => return Err("path with '..' refused"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path refused"),
        }
    }
    Ok(out)
}

/// `root/parts...` as a directory, creating missing components (mode 0755)
/// and refusing any component that exists and is not a directory (a symlink
/// is never followed).
fn safe_dir(root: &Path, parts: &[OsString]) -> io::Result<PathBuf> {
    let mut p = root.to_path_buf();
    for c in parts {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} is not a directory (symlinks are not followed)",
                    p.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => mkdir_0755(&p)?,
            Err(e) => return Err(e),
        }
    }
    Ok(p)
}

/// Creates the missing parent directories of an entry before `unpack_in`
/// does: a layer may list `a/b/c` without `a/`, and the directories it
/// implies are 0755 whatever rsupd's umask (0077) is (a container's non-root
/// user must be able to walk them). Stops at the first component that
/// exists and is not a directory: a symlink is `unpack_in`'s to resolve
/// inside the layer or refuse.
fn make_parents(root: &Path, parts: &[OsString]) -> io::Result<()> {
    let mut p = root.to_path_buf();
    for c in parts {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => mkdir_0755(&p)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// mkdir with mode 0755, set again after (mkdir applies the umask).
fn mkdir_0755(p: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new().mode(0o755).create(p)?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755))
}

/// Removes whatever is at `p` (not following a symlink); nothing there is fine.
fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the device node or fifo of `entry` at `target` with its mode and
/// owner (tar's own unpack would write an empty regular file).
fn make_node<R: Read>(target: &Path, entry: &tar::Entry<'_, R>) -> io::Result<()> {
    use nix::sys::stat::{Mode, SFlag};
    let h = entry.header();
    let kind = match h.entry_type() {
        tar::EntryType::Char => SFlag::S_IFCHR,
        tar::EntryType::Block => SFlag::S_IFBLK,
        _ => SFlag::S_IFIFO,
    };
    // A fifo has no device numbers (some writers leave the fields blank).
    let (major, minor) = if kind == SFlag::S_IFIFO {
        (0, 0)
    } else {
        (
            h.device_major()?.unwrap_or(0),
            h.device_minor()?.unwrap_or(0),
        )
    };
    let mode = h.mode()? & 0o7777;
    remove_any(target)?;
    nix::sys::stat::mknod(
        target,
        kind,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
    )?;
    let uid = u32::try_from(h.uid()?).map_err(io::Error::other)?;
    let gid = u32::try_from(h.gid()?).map_err(io::Error::other)?;
    std::os::unix::fs::lchown(target, Some(uid), Some(gid))?;
    // mknod applies the umask: set the mode again.
    {
        use std::os::unix::fs::PermissionsExt;
        // The node was just created by us: not a symlink.
        fs::set_permissions(target, fs::Permissions::from_mode(mode))?;
    }

    Ok(())
}

/// Sets atime and mtime of `p` (not following a symlink).
fn set_mtime(p: &Path, secs: u64) -> io::Result<()> {
    let t = nix::sys::time::TimeVal::new(i64::try_from(secs).unwrap_or(i64::MAX), 0);
    nix::sys::stat::lutimes(p, &t, &t)?;
    Ok(())
}
