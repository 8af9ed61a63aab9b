//! `RSUP_BUILD_ID`: a fingerprint of this crate's sources, compiled into
//! rsupd and rsup-shim alike (both link this crate), so that rsupd can tell
//! a shim binary of another build from its own (`process::BUILD_ID`): the
//! shim reads what rsupd writes (the container's config, the exec spec,
//! the handshake), and an older shim would silently ignore a confinement
//! field it does not know. Derived from the sources only (FNV-1a over every
//! file under src/ and this crate's manifest, in path order), so builds are
//! reproducible; it changes whenever the runtime's code does.

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let mut all = vec![root.join("Cargo.toml")];
    files(&root.join("src"), &mut all);
    all.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for path in &all {
        let name = path.strip_prefix(&root).unwrap_or(path);
        let content = std::fs::read(path).unwrap_or_default();
        for byte in name
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .chain(&[0])
            .chain(&content)
        {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!(
        "cargo:rustc-env=RSUP_BUILD_ID={}-{hash:016x}",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    );
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
}
