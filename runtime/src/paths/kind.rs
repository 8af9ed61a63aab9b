//! What a resolved inode is, told from its stat or its filesystem: the
//! kind checks and names of `crate::paths`, and the filesystems (procfs,
//! sysfs) it never mounts onto or writes to.

use nix::sys::stat::{FileStat, SFlag};
use nix::sys::statfs::{FsType, PROC_SUPER_MAGIC, SYSFS_MAGIC};

/// What kind of inode a stat describes, for checks and messages.
pub(super) fn kind_name(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        _ => "an unknown kind of file",
    }
}

pub(super) fn is_kind(st: &FileStat, kind: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

/// Procfs and sysfs: kernel interfaces, never a place for rsup to mount onto
/// or write a container's file (CVE-2019-19921 class).
pub(super) fn forbidden_fs(t: FsType) -> Option<&'static str> {
    if t == PROC_SUPER_MAGIC {
        Some("procfs")
    } else if t == SYSFS_MAGIC {
        Some("sysfs")
    } else {
        None
    }
}
