//! Names and references that arrive over the API, validated once where they
//! enter.
//!
//! rsupd runs as root and some of these names become parts of host paths
//! (`volumes/<name>`, `networks/<name>.json`, `supervisors/<name>.json`).
//! Every name is therefore parsed at the edge (the daemon's gRPC layer) into
//! one of the newtypes below, and the runtime's API takes only these types.
//! Invariants, kept by the only constructors (`parse`, `parse_as`,
//! `TryFrom`, and serde, which goes through `TryFrom<String>`):
//! * no container, volume, network or supervisor name is empty, contains
//!   `/` or NUL, or is `.` or `..`: each is one plain path component;
//! * an [`ImageRef`] may contain `/` (`user/app`, `reg.example/a/b`) but
//!   never becomes a path: the image store keys its records by image id;
//! * every value is a few hundred bytes at most, so an error that names it
//!   stays short.
//!
//! A malformed name is refused with `InvalidArgument` naming the request
//! field, before any lookup: INVALID_ARGUMENT says what is wrong, while
//! NOT_FOUND is kept for a well-formed name that names nothing.
//!
//! [`quote`] is how an error message echoes any input: at most
//! [`QUOTE_MAX`] bytes of it, so no message grows with its input.
//!
//! This module is the bottom layer: it uses nothing of the runtime but
//! [`Error`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Bytes of an input that [`quote`] shows.
pub const QUOTE_MAX: usize = 200;

/// `s` Debug-quoted for an error message: at most [`QUOTE_MAX`] bytes of it
/// (cut on a char boundary), then `…(N bytes)` giving its whole length.
pub fn quote(s: &str) -> String {
    if s.len() <= QUOTE_MAX {
        return format!("{s:?}");
    }
    let mut end = QUOTE_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}…({} bytes)", &s[..end], s.len())
}

fn invalid(field: &'static str, reason: String) -> Error {
    Error::InvalidArgument { field, reason }
}

/// True if `s` is a DNS label as rsup accepts it for names: 1-63 characters
/// of `a-z`, `0-9` and `-`, neither starting nor ending with `-`.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most
/// 128 characters.
pub fn is_volume_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// A container id or a prefix of one: 1-64 lowercase hex digits.
fn is_container_id_prefix(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What `ImageStore::get` takes as an image id: 4-64 hex digits, with or
/// without `sha256:`.
pub(crate) fn is_image_id_prefix(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (4..=64).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

const DNS_LABEL: &str = "1-63 of a-z, 0-9 and '-', not starting or ending with '-'";

const DOCKER_NAME: &str = "[a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters";

/// Docker's rule for container and network names (the volume rule).
fn docker_name(what: &str) -> impl Fn(&str) -> Result<(), String> + '_ {
    move |s| {
        if is_volume_name(s) {
            Ok(())
        } else {
            Err(format!("{} is not a {what} ({DOCKER_NAME})", quote(s)))
        }
    }
}

fn dns_label(what: &str) -> impl Fn(&str) -> Result<(), String> + '_ {
    move |s| {
        if is_dns_label(s) {
            Ok(())
        } else {
            Err(format!("{} is not a {what} ({DNS_LABEL})", quote(s)))
        }
    }
}

/// How many labels an object may have, and their keys' and values' bytes
/// together (Docker has no limit; compose sets about ten).
pub const LABELS_COUNT: usize = 1000;
pub const LABELS_BYTES: usize = 256 * 1024;

/// Labels of a container, network or volume (`KEY=VALUE` metadata):
/// keys non-empty and free of control characters, values free of NUL, at
/// most [`LABELS_COUNT`] of [`LABELS_BYTES`] in all. Refused as field
/// `labels`.
pub fn labels(
    labels: std::collections::BTreeMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>, Error> {
    for (k, v) in &labels {
        if k.is_empty() || k.chars().any(char::is_control) {
            return Err(invalid(
                "labels",
                format!("{} is not a valid label key", quote(k)),
            ));
        }
        if v.contains('\0') {
            return Err(invalid(
                "labels",
                format!("the value of label {} contains a NUL byte", quote(k)),
            ));
        }
    }
    let bytes: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    if labels.len() > LABELS_COUNT || bytes > LABELS_BYTES {
        return Err(invalid(
            "labels",
            format!(
                "at most {} labels of {} bytes in all (these are {} of {bytes} bytes)",
                LABELS_COUNT,
                LABELS_BYTES,
                labels.len()
            ),
        ));
    }
    Ok(labels)
}

/// Defines a validated string newtype: `check` says why a string is refused.
macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, field = $field:literal, check = $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// The request field such a value usually comes in.
            pub const FIELD: &'static str = $field;

            /// Validates `s`; a refusal is `InvalidArgument` for
            #[doc = concat!("`", $field, "`.")]
            pub fn parse(s: &str) -> Result<Self, Error> {
                Self::parse_as(s, Self::FIELD)
            }

            /// Validates `s`, naming `field` in a refusal.
            pub fn parse_as(s: &str, field: &'static str) -> Result<Self, Error> {
                let check: fn(&str) -> Result<(), String> = |s| ($check)(s);
                check(s).map_err(|reason| invalid(field, reason))?;
                Ok($ty(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                let check: fn(&str) -> Result<(), String> = |s| ($check)(s);
                check(&s).map_err(|reason| invalid($field, reason))?;
                Ok($ty(s))
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self, Error> {
                Self::parse(s)
            }
        }

        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $ty {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }
    };
}

name_type!(
    /// A container's name, by Docker's rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`,
    /// at most 128 characters, so compose's `project_service_1` works). It
    /// is the container's DNS name, and its host name by default when it is
    /// a valid host name (else the short id is, as in Docker).
    ContainerName,
    field = "name",
    check = docker_name("container name")
);

name_type!(
    /// What addresses an existing container: its name (Docker's rule), its
    /// full id (64 hex digits) or a unique prefix of its id. Anything else
    /// is refused before any lookup.
    ContainerRef,
    field = "container",
    check = |s: &str| {
        if is_volume_name(s) || is_container_id_prefix(s) {
            Ok(())
        } else {
            Err(format!(
                "{} is neither a container name ({DOCKER_NAME}) nor a container id (hex)",
                quote(s)
            ))
        }
    }
);

name_type!(
    /// A named volume, by Docker's rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at
    /// most 128 characters): one path component below the volumes dir,
    /// never `.` or `..`.
    VolumeName,
    field = "name",
    check = |s: &str| {
        if is_volume_name(s) {
            Ok(())
        } else {
            Err(format!(
                "{} is not a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters)",
                quote(s)
            ))
        }
    }
);

name_type!(
    /// A network's name, by Docker's rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at
    /// most 128 characters: compose's `project_default`). `none` (no
    /// network) parses, as the container side of a request uses it;
    /// creating a network named `none` or `host` is refused by the runtime.
    NetworkName,
    field = "name",
    check = docker_name("network name")
);

name_type!(
    /// A supervisor's name: a DNS label.
    SupervisorName,
    field = "name",
    check = dns_label("supervisor name")
);

name_type!(
    /// An image reference as the image store resolves it: a name
    /// ([`normalize_reference`] accepts it; `name` means `name:latest`), or
    /// an image id or id prefix (4-64 hex digits, with or without
    /// `sha256:`). The value is kept as given.
    ImageRef,
    field = "image",
    check = |s: &str| {
        if is_image_id_prefix(s) {
            return Ok(());
        }
        let r = if s.contains('@') {
            RemoteRef::parse(s).map(|_| ())
        } else {
            normalize_reference(s).map(|_| ())
        };
        match r {
            Ok(()) => Ok(()),
            Err(Error::InvalidArgument { reason, .. }) => Err(reason),
            Err(e) => Err(e.to_string()),
        }
    }
);

/// The registry Docker uses for a name without a registry host.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// An image reference resolved to where it lives: the registry host, the
/// repository in it, and a tag or a digest (a digest wins when both are
/// given, as in Docker). Parsed from `[HOST[:PORT]/]PATH[:TAG][@sha256:HEX]`
/// with [`normalize_reference`]'s rules; a name without a host is Docker
/// Hub's (`docker.io`, with `library/` before a one-component path), as
/// Docker resolves it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteRef {
    registry: String,
    repository: String,
    /// The familiar name without tag, as image records keep it
    /// (`127.0.0.1:5000/app`, `busybox`).
    familiar: String,
    tag: String,
    digest: Option<String>,
}

impl RemoteRef {
    /// The request field a reference usually comes in.
    pub const FIELD: &'static str = "reference";

    pub fn parse(s: &str) -> Result<RemoteRef, Error> {
        let (name, digest) = match s.split_once('@') {
            Some((name, d)) => {
                let hex = d.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(invalid(
                        Self::FIELD,
                        format!(
                            "{}: invalid digest (expected sha256: and 64 lowercase hex digits)",
                            quote(s)
                        ),
                    ));
                }
                (name, Some(d.to_string()))
            }
            None => (s, None),
        };
        let normalized = normalize_reference(name).map_err(|e| match e {
            Error::InvalidArgument { reason, .. } => invalid(Self::FIELD, reason),
            e => e,
        })?;
        let (familiar, tag) = normalized
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .ok_or_else(|| invalid(Self::FIELD, format!("{}: no tag", quote(s))))?;
        let (registry, repository) = match familiar.split_once('/') {
            Some((h, rest)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_string(), rest.to_string())
            }
            _ if familiar.contains('/') => (DEFAULT_REGISTRY.to_string(), familiar.clone()),
            _ => (DEFAULT_REGISTRY.to_string(), format!("library/{familiar}")),
        };
        Ok(RemoteRef {
            registry,
            repository,
            familiar,
            tag,
            digest,
        })
    }

    /// `HOST[:PORT]` (`docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository's path in its registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag (`latest` when none was given).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The digest, for a `name@sha256:...` reference.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The local name an image pulled by this reference gets (`name:tag`),
    /// none for a digest reference (Docker gives those no tag).
    pub fn local_name(&self) -> Option<String> {
        match self.digest {
            Some(_) => None,
            None => Some(format!("{}:{}", self.familiar, self.tag)),
        }
    }

    /// `name@digest`, as Docker's RepoDigests record a pulled image.
    pub fn repo_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.familiar)
    }

    /// The same repository with this digest.
    pub fn with_digest(&self, digest: &str) -> RemoteRef {
        RemoteRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }
}

impl fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.digest {
            Some(d) => write!(f, "{}@{d}", self.familiar),
            None => write!(f, "{}:{}", self.familiar, self.tag),
        }
    }
}

/// Normalizes an image reference to `name:tag`.
///
/// Adds `:latest` when there is no tag, lowercases the repository path and
/// shortens Docker Hub names to their familiar form (`docker.io/library/x`
/// -> `x`, `docker.io/u/x` -> `u/x`). Path components follow Docker's rule
/// (`[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`), an optional first
/// component is a registry host (`reg.example`, `localhost:5000`), a tag is
/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`. Digest references (`name@sha256:..`)
/// are refused here: [`RemoteRef`] parses them.
pub fn normalize_reference(s: &str) -> Result<String, Error> {
    let invalid = |reason: String| Error::InvalidArgument {
        field: "name",
        reason,
    };
    if s.is_empty() {
        return Err(invalid("an image name must not be empty".into()));
    }
    let q = quote(s);
    if s.contains('@') {
        return Err(invalid(format!(
            "{q}: a digest reference (name@sha256:...) names an image by its registry digest, not a name:tag"
        )));
    }
    let slash = s.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match s[slash..].rfind(':') {
        Some(i) => (&s[..slash + i], &s[slash + i + 1..]),
        None => (s, "latest"),
    };
    let tb = tag.as_bytes();
    let tag_ok = !tb.is_empty()
        && tb.len() <= 128
        && (tb[0].is_ascii_alphanumeric() || tb[0] == b'_')
        && tb
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
    if !tag_ok {
        return Err(invalid(format!(
            "{q}: invalid tag {} (use [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})",
            quote(tag)
        )));
    }
    let repo = repo.to_ascii_lowercase();
    let mut parts: Vec<&str> = repo.split('/').collect();
    let host = if parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
    {
        Some(parts.remove(0))
    } else {
        None
    };
    if let Some(h) = host {
        let (name, port) = h.split_once(':').unwrap_or((h, ""));
        let host_ok = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
            && (!h.contains(':') || (!port.is_empty() && port.bytes().all(|c| c.is_ascii_digit())));
        if !host_ok {
            return Err(invalid(format!("{q}: invalid registry host {}", quote(h))));
        }
    }
    if parts.is_empty() || !parts.iter().all(|p| path_component_ok(p)) {
        return Err(invalid(format!(
            "{q}: invalid repository name (components of [a-z0-9] joined by '.', '_', '__' or '-')"
        )));
    }
    let path = parts.join("/");
    let full = match host {
        Some("docker.io" | "index.docker.io" | "registry-1.docker.io") => {
            match path.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => path,
            }
        }
        Some(h) => format!("{h}/{path}"),
        None => path,
    };
    if full.len() > 255 {
        return Err(invalid(format!(
            "{q}: the name is longer than 255 characters"
        )));
    }
    Ok(format!("{full}:{tag}"))
}

/// Docker's path component: `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn path_component_ok(p: &str) -> bool {
    let b = p.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_lowercase() || b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs no name type may accept.
    fn hostile() -> Vec<String> {
        let mut v: Vec<String> = [
            "",
            "/",
            "..",
            ".",
            "a/../..",
            "x/../../..",
            "/etc",
            "../../canary",
            "/tmp/canary",
            "a\0b",
            "\0",
            "a\\b",
            "é",
            "名前",
            "a b",
            " a",
            "a\n",
            "-a",
            "--force",
            "$(id)",
            "a;b",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push("a".repeat(100 * 1024));
        v.push(format!("{}/..", "a".repeat(100 * 1024)));
        v.push("é".repeat(50 * 1024));
        v
    }

    fn refused_with_field<T: fmt::Debug>(r: Result<T, Error>, field: &str, input: &str) {
        match r {
            Err(Error::InvalidArgument { field: f, reason }) => {
                assert_eq!(f, field, "{}", quote(input));
                assert!(
                    reason.len() <= 4 * QUOTE_MAX + 200,
                    "{}: reason of {} bytes",
                    quote(input),
                    reason.len()
                );
            }
            other => panic!("{} accepted: {other:?}", quote(input)),
        }
    }

    #[test]
    fn hostile_inputs_are_refused_by_every_type() {
        for s in hostile() {
            refused_with_field(ContainerName::parse(&s), "name", &s);
            refused_with_field(ContainerRef::parse(&s), "container", &s);
            refused_with_field(VolumeName::parse(&s), "name", &s);
            refused_with_field(NetworkName::parse(&s), "name", &s);
            refused_with_field(SupervisorName::parse(&s), "name", &s);
            refused_with_field(ImageRef::parse(&s), "image", &s);
            refused_with_field(VolumeName::parse_as(&s, "volumes"), "volumes", &s);
        }
        // A repository path is an image name, not a path; the others refuse it.
        assert!(ImageRef::parse("a/b").is_ok());
        for s in ["a/b", "a/b/c"] {
            refused_with_field(ContainerName::parse(s), "name", s);
            refused_with_field(ContainerRef::parse(s), "container", s);
            refused_with_field(VolumeName::parse(s), "name", s);
            refused_with_field(NetworkName::parse(s), "name", s);
            refused_with_field(SupervisorName::parse(s), "name", s);
        }
    }

    #[test]
    fn dns_label_types_follow_the_rule() {
        for ok in ["a", "db", "web-1", "0abc", "none", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
            assert_eq!(ContainerName::parse(ok).expect(ok).as_str(), ok);
            assert_eq!(NetworkName::parse(ok).expect(ok).as_str(), ok);
            assert_eq!(SupervisorName::parse(ok).expect(ok).as_str(), ok);
            assert_eq!(ContainerRef::parse(ok).expect(ok).as_str(), ok);
        }
        for bad in ["-a", "a-", "Bad_Name", "UP", "a.b", &"a".repeat(64), "é"] {
            assert!(!is_dns_label(bad), "{bad}");
            assert!(SupervisorName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn container_and_network_names_follow_dockers_rule() {
        // compose 1.29 names containers `project_service_1` and networks
        // `project_default`.
        for ok in [
            "a",
            "proj_db_1",
            "Web.1",
            "a-",
            "x_default",
            &"a".repeat(128),
        ] {
            assert_eq!(ContainerName::parse(ok).expect(ok).as_str(), ok);
            assert_eq!(NetworkName::parse(ok).expect(ok).as_str(), ok);
            assert_eq!(ContainerRef::parse(ok).expect(ok).as_str(), ok);
        }
        for bad in ["-a", "_a", ".a", "a/b", "a b", "..", &"a".repeat(129), "é"] {
            assert!(ContainerName::parse(bad).is_err(), "{bad}");
            assert!(NetworkName::parse(bad).is_err(), "{bad}");
            assert!(ContainerRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn container_refs_are_names_ids_or_id_prefixes() {
        let id = "0123456789abcdef".repeat(4);
        for ok in [id.as_str(), &id[..12], "f", "rsup-0123abcd"] {
            assert!(ContainerRef::parse(ok).is_ok(), "{ok}");
        }
        // (65 hex digits or upper-case hex are names by Docker's rule.)
        for bad in [format!("sha256:{id}"), "_b".into(), format!("{id}{id}0")] {
            assert!(ContainerRef::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_names_follow_dockers_rule() {
        for ok in ["data", "Data.1", "a_b-c", "a..b", "0", &"v".repeat(128)] {
            assert!(VolumeName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["_a", ".a", "-x", "a:b", "a b", &"v".repeat(129)] {
            assert!(VolumeName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_refs_are_what_the_store_resolves() {
        for ok in [
            "busybox",
            "busybox:1.36",
            "BusyBox:V1",
            "docker.io/library/busybox",
            "localhost:5000/app:v_1.2-x",
            "abcd",
            "sha256:abcd",
            "ABCDEF0123",
            &"f".repeat(64),
            &format!("sha256:{}", "f".repeat(64)),
        ] {
            assert!(ImageRef::parse(ok).is_ok(), "{ok}");
            // Every accepted string is also a name or an id to the store.
            assert!(
                normalize_reference(ok).is_ok() || is_image_id_prefix(ok),
                "{ok}"
            );
        }
        for bad in ["app:", ":tag", "a..b", "a//b", "app@sha256:00", "-app"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_validates_too() {
        let v: VolumeName = serde_json::from_str("\"data\"").expect("valid");
        assert_eq!(serde_json::to_string(&v).expect("ser"), "\"data\"");
        for bad in ["\"..\"", "\"/\"", "\"a b\"", "\"\""] {
            assert!(serde_json::from_str::<VolumeName>(bad).is_err(), "{bad}");
            assert!(serde_json::from_str::<NetworkName>(bad).is_err(), "{bad}");
            assert!(
                serde_json::from_str::<SupervisorName>(bad).is_err(),
                "{bad}"
            );
            assert!(serde_json::from_str::<ContainerName>(bad).is_err(), "{bad}");
            assert!(serde_json::from_str::<ContainerRef>(bad).is_err(), "{bad}");
            assert!(serde_json::from_str::<ImageRef>(bad).is_err(), "{bad}");
        }
        let n: Option<NetworkName> = serde_json::from_str("\"default\"").expect("valid");
        assert_eq!(n.as_ref().map(NetworkName::as_str), Some("default"));
    }

    #[test]
    fn quote_caps_what_it_shows() {
        assert_eq!(quote("abc"), "\"abc\"");
        assert_eq!(quote("a\0b"), "\"a\\0b\"");
        let exact = "x".repeat(QUOTE_MAX);
        assert_eq!(quote(&exact), format!("\"{exact}\""));
        let long = "y".repeat(100 * 1024);
        let q = quote(&long);
        assert_eq!(q, format!("\"{}\"…(102400 bytes)", "y".repeat(QUOTE_MAX)));
        // Cut on a char boundary: 'é' is 2 bytes, QUOTE_MAX is even; shift
        // by one so the limit falls inside a char.
        let s = format!("a{}", "é".repeat(QUOTE_MAX));
        let q = quote(&s);
        assert!(q.starts_with("\"a"), "{q}");
        assert!(q.ends_with(&format!("…({} bytes)", s.len())), "{q}");
        let shown = q.trim_end_matches(&format!("…({} bytes)", s.len()));
        assert_eq!(shown.len(), QUOTE_MAX - 1 + 2, "{q}");
    }

    #[test]
    fn errors_of_long_inputs_stay_short() {
        let long = format!("{}/../..", "n".repeat(1 << 20));
        for e in [
            ContainerName::parse(&long).err(),
            ContainerRef::parse(&long).err(),
            VolumeName::parse(&long).err(),
            NetworkName::parse(&long).err(),
            SupervisorName::parse(&long).err(),
            ImageRef::parse(&long).err(),
        ] {
            let msg = e.expect("refused").to_string();
            assert!(msg.len() < 1024, "{} bytes", msg.len());
        }
    }

    #[test]
    fn remote_references_resolve_as_docker_does() {
        let r = RemoteRef::parse("busybox").expect("ok");
        assert_eq!(
            (r.registry(), r.repository(), r.tag(), r.digest()),
            ("docker.io", "library/busybox", "latest", None)
        );
        assert_eq!(r.local_name().as_deref(), Some("busybox:latest"));
        let r = RemoteRef::parse("user/app:1").expect("ok");
        assert_eq!((r.registry(), r.repository()), ("docker.io", "user/app"));
        let r = RemoteRef::parse("docker.io/library/alpine:3").expect("ok");
        assert_eq!(r.repository(), "library/alpine");
        assert_eq!(r.local_name().as_deref(), Some("alpine:3"));
        let r = RemoteRef::parse("127.0.0.1:5000/a/b:v2").expect("ok");
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "a/b", "v2")
        );
        assert_eq!(r.to_string(), "127.0.0.1:5000/a/b:v2");
        let d = format!("sha256:{}", "0f".repeat(32));
        let r = RemoteRef::parse(&format!("localhost:5000/app@{d}")).expect("ok");
        assert_eq!(
            (r.registry(), r.digest()),
            ("localhost:5000", Some(d.as_str()))
        );
        assert_eq!(r.local_name(), None, "a digest pull gets no tag");
        assert_eq!(r.repo_digest(&d), format!("localhost:5000/app@{d}"));
        // A digest reference is a valid image reference for a create.
        assert!(ImageRef::parse(&format!("localhost:5000/app@{d}")).is_ok());
        for bad in [
            "app@sha256:short",
            "app@md5:0123",
            &format!("app@sha256:{}", "G".repeat(64)),
            &format!("app@sha256:{}", "AB".repeat(32)),
            "app@",
            "@sha256:00",
            "UPPER:tag/../x",
        ] {
            let e = RemoteRef::parse(bad).expect_err(bad);
            assert!(
                matches!(
                    e,
                    Error::InvalidArgument {
                        field: "reference",
                        ..
                    }
                ),
                "{bad}: {e:?}"
            );
        }
        for h in hostile() {
            assert!(RemoteRef::parse(&h).is_err(), "{h:?}");
            assert!(RemoteRef::parse(&format!("{h}@sha256:{}", "0".repeat(64))).is_err());
        }
    }
}
