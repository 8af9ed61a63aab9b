//! The security part of a container spec: capabilities (`--cap-add`,
//! `--cap-drop`, `--privileged`), `security_opt` and a custom seccomp
//! profile, as requested, checked into a [`SecuritySpec`].
//!
//! Capabilities follow Docker's rule (the defaults, or none or all with
//! `ALL`, then add, then drop); `security_opt` takes only what rsup
//! implements (`seccomp=default|unconfined`, `no-new-privileges`) and
//! refuses the rest (AppArmor, SELinux labels) rather than ignore it; a
//! custom profile is compiled now for the container's capabilities, so a
//! bad one never reaches a start. Applying the result is
//! [`crate::security`]'s and [`crate::seccomp`]'s part.

use std::collections::HashSet;
use std::str::FromStr;

use caps::Capability;

use crate::error::Error;
use crate::names::quote;
use crate::seccomp::Seccomp;
use crate::security::{DEFAULT_CAPS, SecuritySpec};

/// Security options as requested.
#[derive(Debug, Clone, Default)]
pub struct SecurityRequest {
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    /// Docker's `--security-opt` entries: `seccomp=default|unconfined` (or
    /// `seccomp:…`; the last one wins) and `no-new-privileges` (always on
    /// unless privileged); anything else is refused.
    pub security_opt: Vec<String>,
    /// A custom profile in Docker's JSON format (its text), or "".
    pub seccomp_profile: String,
}

fn parse_cap(s: &str) -> Result<Capability, Error> {
    let up = s.trim().to_ascii_uppercase();
    let name = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    Capability::from_str(&name).map_err(|_| Error::InvalidArgument {
        field: "capabilities",
        reason: format!(
            "{} is not a capability (e.g. NET_ADMIN, CAP_SYS_TIME, or ALL)",
            quote(s)
        ),
    })
}

impl SecurityRequest {
    /// Docker's rule: start from the defaults (or nothing with `--cap-drop
    /// ALL`, everything with `--cap-add ALL`), add, then drop.
    pub fn validate(&self) -> Result<SecuritySpec, Error> {
        let seccomp_opt = self.seccomp_opt()?;
        let is_all = |s: &String| s.eq_ignore_ascii_case("all");
        let mut set: HashSet<Capability> = if self.privileged || self.cap_add.iter().any(is_all) {
            caps::all()
        } else {
            DEFAULT_CAPS.iter().copied().collect()
        };
        for c in self.cap_add.iter().filter(|c| !is_all(c)) {
            set.insert(parse_cap(c)?);
        }
        if self.cap_drop.iter().any(is_all) {
            set.clear();
        }
        for c in self.cap_drop.iter().filter(|c| !is_all(c)) {
            set.remove(&parse_cap(c)?);
        }
        let mut caps: Vec<String> = set.iter().map(|c| c.to_string()).collect();
        caps.sort();
        let seccomp = self.seccomp_setting(&caps, seccomp_opt)?;
        Ok(SecuritySpec {
            caps,
            privileged: self.privileged,
            no_new_privs: !self.privileged,
            seccomp,
        })
    }
}

impl SecurityRequest {
    /// The seccomp setting, a custom profile checked and compiled for the
    /// container's capabilities `caps`.
    fn seccomp_setting(&self, caps: &[String], seccomp: &str) -> Result<Seccomp, Error> {
        let bad = |reason: String| Error::InvalidArgument {
            field: "security_opt",
            reason,
        };
        if !self.seccomp_profile.is_empty() {
            // "custom" is what replies say beside the profile: a spec read
            // back can be sent again.
            if !seccomp.is_empty() && seccomp != "custom" {
                return Err(bad(format!(
                    "seccomp={seccomp} and a seccomp profile: give one or the other"
                )));
            }
            if self.privileged {
                return Err(bad(
                    "a seccomp profile with --privileged: a privileged container runs unconfined"
                        .into(),
                ));
            }
            let custom = Seccomp::Custom(self.seccomp_profile.clone());
            custom
                .program(caps)
                .map_err(|e| bad(format!("seccomp profile: {e}")))?;
            return Ok(custom);
        }
        match seccomp {
            "" | "default" if self.privileged => Ok(Seccomp::Unconfined),
            "" | "default" => Ok(Seccomp::Default),
            "unconfined" => Ok(Seccomp::Unconfined),
            other => Err(bad(format!(
                "seccomp={}: use seccomp=default, seccomp=unconfined, or send a profile's \
                 content in seccomp_profile (rsupctl reads seccomp=FILE itself)",
                quote(other)
            ))),
        }
    }

    /// The value of the last `seccomp=` in `security_opt` ("" when none);
    /// refuses an entry rsup does not support.
    fn seccomp_opt(&self) -> Result<&str, Error> {
        let supported = |o: &String| {
            o.starts_with("seccomp=")
                || o.starts_with("seccomp:")
                || matches!(
                    o.as_str(),
                    "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"
                )
        };
        if let Some(bad) = self.security_opt.iter().find(|o| !supported(o)) {
            return Err(Error::InvalidArgument {
                field: "security_opt",
                reason: format!(
                    "{} (supported: seccomp=default|unconfined, no-new-privileges; a profile goes in seccomp_profile)",
                    quote(bad)
                ),
            });
        }
        Ok(self
            .security_opt
            .iter()
            .rev()
            .find_map(|o| {
                o.strip_prefix("seccomp=")
                    .or_else(|| o.strip_prefix("seccomp:"))
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seccomp_requests() {
        let req = |seccomp: &str, profile: &str, privileged: bool| SecurityRequest {
            security_opt: if seccomp.is_empty() {
                Vec::new()
            } else {
                vec![format!("seccomp={seccomp}")]
            },
            seccomp_profile: profile.into(),
            privileged,
            ..Default::default()
        };
        let ok = |r: SecurityRequest| r.validate().expect("valid").seccomp;
        assert_eq!(ok(req("", "", false)), Seccomp::Default);
        assert_eq!(ok(req("default", "", false)), Seccomp::Default);
        assert_eq!(ok(req("unconfined", "", false)), Seccomp::Unconfined);
        assert_eq!(ok(req("", "", true)), Seccomp::Unconfined);
        let good = r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#;
        assert_eq!(ok(req("", good, false)), Seccomp::Custom(good.into()));
        for (r, why) in [
            (req("/etc/p.json", "", false), "rsupctl reads seccomp=FILE"),
            (req("unconfined", good, false), "one or the other"),
            (req("", good, true), "--privileged"),
            (req("", "{", false), "seccomp profile: not a valid profile"),
        ] {
            match r.validate() {
                Err(Error::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "security_opt");
                    assert!(reason.contains(why), "{reason}");
                }
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn docker_cap_rules() {
        let d = SecurityRequest::default().validate().expect("default");
        assert_eq!(d.caps.len(), 14);
        assert!(d.no_new_privs);
        let r = SecurityRequest {
            cap_add: vec!["net_admin".into()],
            cap_drop: vec!["CAP_CHOWN".into(), "KILL".into()],
            ..Default::default()
        }
        .validate()
        .expect("add/drop");
        assert!(r.caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!r.caps.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(r.caps.len(), 13);
        let none = SecurityRequest {
            cap_drop: vec!["ALL".into()],
            ..Default::default()
        }
        .validate()
        .expect("drop all");
        assert!(none.caps.is_empty());
        let p = SecurityRequest {
            privileged: true,
            ..Default::default()
        }
        .validate()
        .expect("privileged");
        assert!(p.caps.len() > 30 && !p.no_new_privs);
        assert!(
            SecurityRequest {
                cap_add: vec!["FLY".into()],
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn security_opt_takes_what_rsup_implements() {
        let opts = |o: &[&str]| SecurityRequest {
            security_opt: o.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let seccomp = |o: &[&str]| opts(o).validate().expect("valid").seccomp;
        assert_eq!(seccomp(&[]), Seccomp::Default);
        assert_eq!(seccomp(&["seccomp:unconfined"]), Seccomp::Unconfined);
        assert_eq!(
            seccomp(&["seccomp=unconfined", "no-new-privileges", "seccomp=default"]),
            Seccomp::Default,
            "the last seccomp= wins"
        );
        for nnp in [
            "no-new-privileges",
            "no-new-privileges:true",
            "no-new-privileges=true",
        ] {
            assert!(opts(&[nnp]).validate().expect(nnp).no_new_privs);
        }
        for bad in ["apparmor=x", "label=disable", "no-new-privileges=false", ""] {
            match opts(&["seccomp=default", bad]).validate() {
                Err(
                    e @ Error::InvalidArgument {
                        field: "security_opt",
                        ..
                    },
                ) => assert!(e.to_string().starts_with("invalid security_opt: "), "{e}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
