//! Registry credentials kept by `rsupctl login`: a JSON file in Docker's
//! `config.json` shape (`{"auths": {"HOST": {"auth": base64("user:pass")}}}`),
//! readable by its owner only (0600, in a 0700 directory), replaced
//! atomically. rsupd never stores them: rsupctl sends the ones of a
//! reference's registry with each pull or push.
//!
//! The file is `$RSUP_AUTH_FILE`, else `$XDG_CONFIG_HOME/rsup/auth.json`,
//! else `~/.config/rsup/auth.json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::images::RegistryLogin;

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Entry {
    auth: String,
}

/// The credentials file and what it holds.
pub struct AuthFile {
    path: PathBuf,
    file: File,
}

impl AuthFile {
    /// Where the file is by default.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("RSUP_AUTH_FILE").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(|| PathBuf::from("/root/.config"));
        base.join("rsup").join("auth.json")
    }

    /// Reads `path` (missing: empty). A file others may read is refused
    /// (it would hold passwords in the open).
    pub fn load(path: &Path) -> anyhow::Result<AuthFile> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(AuthFile {
                    path: path.to_path_buf(),
                    file: File::default(),
                });
            }
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        };
        let meta = std::fs::metadata(path)?;
        let mode = meta.permissions().mode();
        if std::os::unix::fs::MetadataExt::uid(&meta) != nix_uid() {
            anyhow::bail!(
                "{}: not yours: refusing to read credentials from it",
                path.display()
            );
        }
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{}: readable by others (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
        let file: File = serde_json::from_slice(&data)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(AuthFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The login for `registry`, if any.
    pub fn get(&self, registry: &str) -> anyhow::Result<Option<RegistryLogin>> {
        let Some(e) = self.file.auths.get(registry) else {
            return Ok(None);
        };
        let raw = STANDARD
            .decode(e.auth.trim())
            .map_err(|err| anyhow::anyhow!("{}: auth of {registry}: {err}", self.path.display()))?;
        let text = String::from_utf8(raw).map_err(|_| {
            anyhow::anyhow!("{}: auth of {registry} is not UTF-8", self.path.display())
        })?;
        let (username, password) = text.split_once(':').ok_or_else(|| {
            anyhow::anyhow!(
                "{}: auth of {registry} is not user:password",
                self.path.display()
            )
        })?;
        Ok(Some(RegistryLogin {
            username: username.to_string(),
            password: password.to_string(),
        }))
    }

    pub fn set(&mut self, registry: &str, login: &RegistryLogin) {
        let auth = STANDARD.encode(format!("{}:{}", login.username, login.password));
        self.file.auths.insert(registry.to_string(), Entry { auth });
    }

    /// Whether there was a login to remove.
    pub fn remove(&mut self, registry: &str) -> bool {
        self.file.auths.remove(registry).is_some()
    }

    /// Writes the file: 0600, in a 0700 directory of the current user
    /// (refused if it is anyone else's or others may write it), through a
    /// new temporary file (O_EXCL, never following a symlink), renamed over
    /// the old one.
    pub fn save(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let meta = std::fs::metadata(dir)?;
        let me = nix_uid();
        if meta.uid() != me || meta.mode() & 0o022 != 0 {
            anyhow::bail!(
                "{}: not a directory only you may write to (owner {}, mode {:o}): refusing to keep credentials there",
                dir.display(),
                meta.uid(),
                meta.mode() & 0o777
            );
        }
        let data = serde_json::to_vec_pretty(&self.file)?;
        let mut n = 0u32;
        let (tmp, mut f) = loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let tmp = dir.join(format!(".auth.json.{}.{nanos}.{n}", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)
            {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => anyhow::bail!("{}: {e}", tmp.display()),
            }
        };
        let written = f
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .and_then(|()| f.write_all(&data))
            .and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            anyhow::bail!("writing {}: {e}", tmp.display());
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::anyhow!("writing {}: {e}", self.path.display())
        })?;
        Ok(())
    }
}

/// The effective user id.
fn nix_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_round_trip_in_a_private_file() {
        let dir = std::env::temp_dir().join(format!("rsup-auth-test-{}", std::process::id()));
        let path = dir.join("sub").join("auth.json");
        let mut f = AuthFile::load(&path).expect("missing is empty");
        let login = RegistryLogin {
            username: "alice".into(),
            password: "p:w d".into(),
        };
        f.set("127.0.0.1:5000", &login);
        f.save().expect("save");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = AuthFile::load(&path).expect("load");
        assert_eq!(again.get("127.0.0.1:5000").expect("get"), Some(login));
        assert_eq!(again.get("other:5000").expect("get"), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(
            AuthFile::load(&path).is_err(),
            "a world-readable file is refused"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
