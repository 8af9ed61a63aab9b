//! The options of a `--tmpfs PATH[:OPTIONS]` mount, as Docker takes them,
//! parsed into [`TmpfsOptions`]: the mount flags (`ro`/`rw`,
//! `noexec`/`exec`, `nosuid`/`suid`, `nodev`/`dev`, `sync`/`async`,
//! `dirsync`, `noatime`/`atime`, `nodiratime`/`diratime`) and the tmpfs
//! data (`size`, `nr_blocks`, `nr_inodes`, `mode`, `uid`, `gid`).
//!
//! Invariants: the defaults are Docker's (`noexec,nosuid,nodev`, no size:
//! the kernel's half of RAM, mode 1777); options apply left to right over
//! them, so the last of two opposites wins (`noexec,exec` is `exec`), as
//! Docker merges them; every other option, and every value that is not a
//! number of the kind the kernel takes, is refused. The typed form is what
//! `config.json` keeps; a spec written before it (the options as one
//! string, with exec allowed) still loads, with the flags it had.

use serde::{Deserialize, Deserializer, Serialize};

use super::invalid;
use crate::error::Error;
use crate::names::quote;

/// How large a tmpfs may grow (`size=` or `nr_blocks=`; the last given
/// wins, as in the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TmpfsSize {
    /// `size=N[kmgtpe]`, in bytes (0: unlimited).
    Bytes(u64),
    /// `size=N%`: a share of the host's RAM, 1 to 100.
    Percent(u32),
    /// `nr_blocks=N[kmgtpe]`, in pages.
    Blocks(u64),
}

/// A `--tmpfs` mount's options, validated. `Default` is Docker's default
/// for `--tmpfs PATH`: `rw,noexec,nosuid,nodev`, no size limit and the
/// kernel's mode (1777). Flags are named for what they allow, so a field
/// missing from a stored spec is the safe value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TmpfsOptions {
    /// `exec`: programs on it may run (`noexec` when false).
    pub exec: bool,
    /// `suid`: setuid and setgid bits count (`nosuid` when false).
    pub suid: bool,
    /// `dev`: device nodes on it can be opened (`nodev` when false; the
    /// container's devices cgroup still decides which).
    pub dev: bool,
    /// `sync`: all writes are synchronous.
    pub sync: bool,
    /// `dirsync`: directory changes are synchronous.
    pub dirsync: bool,
    /// `noatime`: access times are not updated.
    pub noatime: bool,
    /// `nodiratime`: directory access times are not updated.
    pub nodiratime: bool,
    pub size: Option<TmpfsSize>,
    /// `nr_inodes=N[kmgtpe]` (0: unlimited).
    pub nr_inodes: Option<u64>,
    /// `mode=OCTAL` of the tmpfs root, at most 07777.
    pub mode: Option<u32>,
    /// `uid=N` owner of the tmpfs root.
    pub uid: Option<u32>,
    /// `gid=N` group of the tmpfs root.
    pub gid: Option<u32>,
}

impl TmpfsOptions {
    /// Parses Docker's option list (`rw,noexec,size=64m,...`) over Docker's
    /// defaults; returns the options and whether the mount is read-only.
    /// `whole` is the user's whole `--tmpfs` value, quoted in errors.
    pub fn parse(opts: &str, whole: &str) -> Result<(TmpfsOptions, bool), Error> {
        let mut o = TmpfsOptions::default();
        let mut read_only = false;
        o.apply(opts, whole, &mut read_only)?;
        Ok((o, read_only))
    }

    /// The options of a spec written before they were typed: only the data
    /// part was kept (`size=1m,mode=1777`), and such mounts were `nosuid`,
    /// `nodev` and allowed exec; they keep doing so.
    fn legacy(data: &str) -> Result<TmpfsOptions, Error> {
        let mut o = TmpfsOptions {
            exec: true,
            ..TmpfsOptions::default()
        };
        let mut read_only = false;
        o.apply(data, data, &mut read_only)?;
        Ok(o)
    }

    fn apply(&mut self, opts: &str, whole: &str, read_only: &mut bool) -> Result<(), Error> {
        let bad = |what: String| invalid("tmpfs", format!("{}: {what}", quote(whole)));
        for opt in opts.split(',').filter(|o| !o.is_empty()) {
            let flag = match opt {
                "ro" | "rw" => &mut *read_only,
                "exec" | "noexec" => &mut self.exec,
                "suid" | "nosuid" => &mut self.suid,
                "dev" | "nodev" => &mut self.dev,
                "sync" | "async" => &mut self.sync,
                "dirsync" => &mut self.dirsync,
                "noatime" | "atime" => &mut self.noatime,
                "nodiratime" | "diratime" => &mut self.nodiratime,
                // Docker drops it: it means nothing over the defaults.
                "defaults" => continue,
                _ => {
                    self.apply_value(opt).map_err(bad)?;
                    continue;
                }
            };
            *flag = matches!(
                opt,
                "ro" | "exec" | "suid" | "dev" | "sync" | "dirsync" | "noatime" | "nodiratime"
            );
        }
        Ok(())
    }

    /// One `key=value` option; the error says what is wrong with it.
    fn apply_value(&mut self, opt: &str) -> Result<(), String> {
        let Some((key, value)) = opt.split_once('=') else {
            return Err(format!(
                "unknown option {} (ro, rw, exec, noexec, suid, nosuid, dev, nodev, sync, \
                 async, dirsync, atime, noatime, diratime, nodiratime, size=, nr_blocks=, \
                 nr_inodes=, mode=, uid=, gid=)",
                quote(opt)
            ));
        };
        let need = |what: &str| format!("{}: {key} must be {what}", quote(opt));
        match key {
            "size" => {
                self.size = Some(match value.strip_suffix('%') {
                    Some(p) => match decimal(p).and_then(|p| u32::try_from(p).ok()) {
                        Some(p @ 1..=100) => TmpfsSize::Percent(p),
                        _ => return Err(need("a size (64m, 1g) or 1% to 100% of RAM")),
                    },
                    None => TmpfsSize::Bytes(
                        memparse(value)
                            .ok_or_else(|| need("a size (64m, 1g) or 1% to 100% of RAM"))?,
                    ),
                });
            }
            "nr_blocks" => {
                let n = memparse(value)
                    .filter(|n| i64::try_from(*n).is_ok())
                    .ok_or_else(|| need("a number of pages"))?;
                self.size = Some(TmpfsSize::Blocks(n));
            }
            "nr_inodes" => {
                // The kernel refuses more than ULONG_MAX / BOGO_INODE_SIZE.
                let n = memparse(value)
                    .filter(|n| *n <= u64::MAX / 1024)
                    .ok_or_else(|| need("a number of inodes"))?;
                self.nr_inodes = Some(n);
            }
            "mode" => {
                let m = u32::from_str_radix(value, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777 && !value.starts_with('+'))
                    .ok_or_else(|| need("an octal mode up to 7777"))?;
                self.mode = Some(m);
            }
            "uid" | "gid" => {
                // u32::MAX is the kernel's invalid id.
                let id = decimal(value)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n != u32::MAX)
                    .ok_or_else(|| need("a numeric id"))?;
                *(if key == "uid" {
                    &mut self.uid
                } else {
                    &mut self.gid
                }) = Some(id);
            }
            _ => return Err(format!("unknown option {}", quote(opt))),
        }
        Ok(())
    }

    /// The mount data for the kernel (`size=...,mode=...`), in a fixed
    /// order; empty when there is none.
    pub fn data(&self) -> String {
        let mut d = Vec::new();
        match self.size {
            Some(TmpfsSize::Bytes(b)) => d.push(format!("size={b}")),
            Some(TmpfsSize::Percent(p)) => d.push(format!("size={p}%")),
            Some(TmpfsSize::Blocks(n)) => d.push(format!("nr_blocks={n}")),
            None => {}
        }
        if let Some(n) = self.nr_inodes {
            d.push(format!("nr_inodes={n}"));
        }
        if let Some(m) = self.mode {
            d.push(format!("mode={m:o}"));
        }
        if let Some(u) = self.uid {
            d.push(format!("uid={u}"));
        }
        if let Some(g) = self.gid {
            d.push(format!("gid={g}"));
        }
        d.join(",")
    }

    /// Every option in Docker's words (`rw,noexec,nosuid,nodev,size=...`),
    /// as `inspect` shows them; [`TmpfsOptions::parse`] reads it back to
    /// the same options.
    pub fn to_docker(&self, read_only: bool) -> String {
        let pick = |on: bool, yes: &'static str, no: &'static str| if on { yes } else { no };
        let mut o = vec![
            pick(read_only, "ro", "rw"),
            pick(self.exec, "exec", "noexec"),
            pick(self.suid, "suid", "nosuid"),
            pick(self.dev, "dev", "nodev"),
        ];
        for (on, name) in [
            (self.sync, "sync"),
            (self.dirsync, "dirsync"),
            (self.noatime, "noatime"),
            (self.nodiratime, "nodiratime"),
        ] {
            if on {
                o.push(name);
            }
        }
        let data = self.data();
        if !data.is_empty() {
            o.push(&data);
        }
        o.join(",")
    }
}

/// Deserializes the `options` of a stored tmpfs mount: the typed form, or
/// the string a spec written before it kept.
pub(super) fn stored<'de, D: Deserializer<'de>>(d: D) -> Result<TmpfsOptions, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Legacy(String),
        Typed(TmpfsOptions),
    }
    match Stored::deserialize(d)? {
        Stored::Typed(o) => Ok(o),
        Stored::Legacy(s) => TmpfsOptions::legacy(&s).map_err(serde::de::Error::custom),
    }
}

/// A plain decimal number (digits only).
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A decimal number with an optional binary suffix (k, m, g, t, p, e, either
/// case), as the kernel's `memparse` reads it; `None` on anything else or an
/// overflow.
fn memparse(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()?.to_ascii_lowercase() {
        b'k' => (&s[..s.len() - 1], 10),
        b'm' => (&s[..s.len() - 1], 20),
        b'g' => (&s[..s.len() - 1], 30),
        b't' => (&s[..s.len() - 1], 40),
        b'p' => (&s[..s.len() - 1], 50),
        b'e' => (&s[..s.len() - 1], 60),
        _ => (s, 0),
    };
    decimal(digits)?.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(opts: &str) -> (TmpfsOptions, bool) {
        TmpfsOptions::parse(opts, opts).unwrap_or_else(|e| panic!("{opts}: {e}"))
    }

    #[test]
    fn defaults_are_dockers() {
        let (o, ro) = parse("");
        assert!(!ro);
        assert_eq!(o, TmpfsOptions::default());
        assert!(!o.exec && !o.suid && !o.dev);
        assert_eq!(o.data(), "");
        assert_eq!(o.to_docker(ro), "rw,noexec,nosuid,nodev");
        // "defaults" and empty items change nothing.
        assert_eq!(parse("defaults,,"), (TmpfsOptions::default(), false));
    }

    #[test]
    fn every_flag_and_its_opposite() {
        let on = |opt: &str| parse(opt).0;
        assert!(on("exec").exec);
        assert!(!on("noexec").exec);
        assert!(on("suid").suid);
        assert!(!on("nosuid").suid);
        assert!(on("dev").dev);
        assert!(!on("nodev").dev);
        assert!(on("sync").sync);
        assert!(!on("async").sync);
        assert!(on("dirsync").dirsync);
        assert!(on("noatime").noatime);
        assert!(!on("atime").noatime);
        assert!(on("nodiratime").nodiratime);
        assert!(!on("diratime").nodiratime);
        assert!(parse("ro").1);
        assert!(!parse("rw").1);
        let (all, ro) = parse("ro,exec,suid,dev,sync,dirsync,noatime,nodiratime");
        assert_eq!(
            all.to_docker(ro),
            "ro,exec,suid,dev,sync,dirsync,noatime,nodiratime"
        );
    }

    #[test]
    fn the_last_of_two_opposites_wins() {
        assert!(parse("noexec,exec").0.exec);
        assert!(!parse("exec,noexec").0.exec);
        assert!(!parse("ro,rw").1);
        assert!(parse("rw,ro").1);
        assert!(!parse("suid,nosuid").0.suid);
        assert!(parse("nodev,dev").0.dev);
        let o = parse("size=1m,size=2k,mode=700,mode=755,uid=1,uid=2").0;
        assert_eq!(o.size, Some(TmpfsSize::Bytes(2048)));
        assert_eq!((o.mode, o.uid), (Some(0o755), Some(2)));
        // size and nr_blocks set one limit, as in the kernel.
        assert_eq!(
            parse("size=1m,nr_blocks=16").0.size,
            Some(TmpfsSize::Blocks(16))
        );
        assert_eq!(
            parse("nr_blocks=16,size=10%").0.size,
            Some(TmpfsSize::Percent(10))
        );
    }

    #[test]
    fn values() {
        let size = |s: &str| parse(&format!("size={s}")).0.size;
        assert_eq!(size("0"), Some(TmpfsSize::Bytes(0)));
        assert_eq!(size("4096"), Some(TmpfsSize::Bytes(4096)));
        assert_eq!(size("64k"), Some(TmpfsSize::Bytes(64 << 10)));
        assert_eq!(size("65536K"), Some(TmpfsSize::Bytes(64 << 20)));
        assert_eq!(size("64m"), Some(TmpfsSize::Bytes(64 << 20)));
        assert_eq!(size("2G"), Some(TmpfsSize::Bytes(2 << 30)));
        assert_eq!(size("1t"), Some(TmpfsSize::Bytes(1 << 40)));
        assert_eq!(size("1p"), Some(TmpfsSize::Bytes(1 << 50)));
        assert_eq!(size("8e"), Some(TmpfsSize::Bytes(8 << 60)));
        assert_eq!(size("50%"), Some(TmpfsSize::Percent(50)));
        let o = parse("nr_blocks=1k,nr_inodes=400k,mode=01770,uid=1000,gid=0").0;
        assert_eq!(o.size, Some(TmpfsSize::Blocks(1024)));
        assert_eq!(o.nr_inodes, Some(400 << 10));
        assert_eq!((o.mode, o.uid, o.gid), (Some(0o1770), Some(1000), Some(0)));
        assert_eq!(
            o.data(),
            "nr_blocks=1024,nr_inodes=409600,mode=1770,uid=1000,gid=0"
        );
        assert_eq!(parse("mode=0").0.mode, Some(0));
        assert_eq!(parse("uid=4294967294").0.uid, Some(u32::MAX - 1));
    }

    #[test]
    fn bad_options_and_values_are_refused() {
        for bad in [
            "bogus",
            "bogus=1",
            "mpol=default",
            "relatime",
            "rprivate",
            "remount",
            "bind",
            "size",
            "size=",
            "size=abc",
            "size=-1",
            "size=+1",
            "size=1x",
            "size=1mb",
            "size= 1",
            "size=0x10",
            "size=1.5g",
            "size=16e",
            "size=99999999999999999999",
            "size=0%",
            "size=101%",
            "size=%",
            "size=1k%",
            "nr_blocks=9223372036854775808",
            "nr_blocks=x",
            "nr_inodes=-5",
            "nr_inodes=1e",
            "mode=",
            "mode=8",
            "mode=999",
            "mode=17777",
            "mode=+755",
            "mode=rwx",
            "uid=",
            "uid=-1",
            "uid=root",
            "uid=4294967295",
            "uid=4294967296",
            "gid=1.0",
            "NOEXEC",
            "noexec=1",
            "exec,bogus",
        ] {
            match TmpfsOptions::parse(bad, &format!("/x:{bad}")) {
                Err(Error::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "tmpfs", "{bad}");
                    assert!(reason.starts_with(&format!("\"/x:{bad}\": ")), "{reason}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        // A long value is quoted short.
        let long = format!("size={}", "9".repeat(100_000));
        let Err(e) = TmpfsOptions::parse(&long, &long) else {
            panic!("accepted")
        };
        assert!(e.to_string().len() < 1024, "{e}");
    }

    #[test]
    fn the_docker_form_reads_back_to_the_same_options() {
        for opts in [
            "",
            "ro",
            "exec,size=64m,mode=1777",
            "ro,suid,dev,sync,dirsync,noatime,nodiratime,size=10%,nr_inodes=1k,uid=1,gid=2",
            "nr_blocks=8,mode=0",
        ] {
            let (o, ro) = parse(opts);
            let shown = o.to_docker(ro);
            assert_eq!(parse(&shown), (o, ro), "{opts} -> {shown}");
        }
    }

    #[test]
    fn stored_specs_load_typed_and_legacy() {
        #[derive(Deserialize)]
        struct M {
            #[serde(deserialize_with = "stored")]
            options: TmpfsOptions,
        }
        let load = |v: serde_json::Value| serde_json::from_value::<M>(v).map(|m| m.options);
        // Typed, round trip; a missing field is the safe default.
        let (o, _) = parse("exec,size=1m,mode=700");
        let v = serde_json::json!({ "options": o });
        assert_eq!(load(v).expect("typed"), o);
        let o = load(serde_json::json!({"options": {"size": {"bytes": 10}}})).expect("partial");
        assert!(!o.exec && !o.suid && !o.dev);
        assert_eq!(o.size, Some(TmpfsSize::Bytes(10)));
        // A spec from before kept only the data; its mounts ran programs.
        let o = load(serde_json::json!({"options": "size=1m,mode=1777"})).expect("legacy");
        assert_eq!(
            o.to_docker(false),
            "rw,exec,nosuid,nodev,size=1048576,mode=1777"
        );
        let o = load(serde_json::json!({"options": ""})).expect("legacy empty");
        assert_eq!(o.to_docker(false), "rw,exec,nosuid,nodev");
        assert!(load(serde_json::json!({"options": "size=lots"})).is_err());
    }
}
