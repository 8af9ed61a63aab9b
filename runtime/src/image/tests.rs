//! Unit tests of the image store (root: mknod, xattrs, overlay mounts).
