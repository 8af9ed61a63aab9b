//! The resources part of a container spec: the cgroup limits a user asks
//! for at create or `update`, checked against what the kernel and this host
//! take (memory at least 6 MiB and memory+swap not below memory, CPUs
//! above 0 and at most the host's, shares 2-262144, a pids limit in the
//! kernel's range) and applied over the limits in force
//! ([`ResourcesRequest::merge`]).

use super::invalid;
use crate::bounds;
use crate::cgroups::Limits;
use crate::error::Error;

/// Resource limits as requested: `None` leaves a field as it is (unlimited
/// at create).
#[derive(Debug, Clone, Copy, Default)]
pub struct ResourcesRequest {
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<i64>,
    pub pids_limit: Option<i64>,
}

/// Docker's lowest memory limit.
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// CPUs of this host, the upper bound of `cpus`.
pub fn host_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl ResourcesRequest {
    /// Applies the set fields over `base` and validates the result.
    pub fn merge(&self, base: Limits) -> Result<Limits, Error> {
        let mut l = base;
        if let Some(m) = self.memory {
            if m < MIN_MEMORY {
                return Err(invalid(
                    "resources.memory_bytes",
                    format!(
                        "{m} is below the minimum of 6 MiB ({MIN_MEMORY} bytes); give bytes or a size such as 256m or 1g"
                    ),
                ));
            }
            l.memory = Some(m as u64);
        }
        if let Some(s) = self.memory_swap {
            l.memory_swap = match s {
                -1 => Some(u64::MAX),
                s if s < 0 => {
                    return Err(invalid(
                        "resources.memory_swap_bytes",
                        format!(
                            "{s} is negative; give -1 for unlimited swap or bytes of memory+swap"
                        ),
                    ));
                }
                s => Some(s as u64),
            };
        }
        if let (Some(swap), mem) = (l.memory_swap, l.memory)
            && swap != u64::MAX
        {
            match mem {
                None => {
                    return Err(invalid(
                        "resources.memory_swap_bytes",
                        "a memory+swap limit needs a memory limit too",
                    ));
                }
                Some(m) if swap < m => {
                    return Err(invalid(
                        "resources.memory_swap_bytes",
                        format!(
                            "{swap} is below the memory limit {m}: memory-swap is memory plus swap"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(c) = self.cpus {
            let max = host_cpus();
            if !(c > 0.0 && c <= max as f64) {
                return Err(invalid(
                    "resources.cpus",
                    format!(
                        "{c} is out of range: give a number of CPUs above 0 and at most {max} (this host's CPUs), e.g. 0.5"
                    ),
                ));
            }
            l.cpus = Some(c);
        }
        if let Some(sh) = self.cpu_shares {
            l.cpu_shares = match sh {
                0 => None,
                2..=262_144 => Some(sh as u64),
                _ => {
                    return Err(invalid(
                        "resources.cpu_shares",
                        format!("{sh} is out of range: give 2-262144 (1024 is the default weight)"),
                    ));
                }
            };
        }
        if let Some(p) = self.pids_limit {
            l.pids = match p {
                0 => None,
                p if p < 0 => {
                    return Err(invalid(
                        "resources.pids_limit",
                        format!("{p} is negative; give a number of processes, or 0 for no limit"),
                    ));
                }
                p => Some(bounds::count(
                    "resources.pids_limit",
                    p as u64,
                    &bounds::PIDS_LIMIT,
                    "processes",
                )?),
            };
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::invalid_field;

    #[test]
    fn pids_limit_has_the_kernels_range() {
        let l = |p: i64| {
            ResourcesRequest {
                pids_limit: Some(p),
                ..Default::default()
            }
            .merge(Limits::default())
        };
        assert_eq!(l(0).expect("unlimited").pids, None);
        assert_eq!(l(4_194_304).expect("largest").pids, Some(4_194_304));
        for bad in [-1, 4_194_305, i64::MAX] {
            assert_eq!(invalid_field(l(bad)), "resources.pids_limit", "{bad}");
        }
    }

    #[test]
    fn resources_are_validated_with_their_field() {
        let field = |r: ResourcesRequest| match r.merge(Limits::default()) {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let r = ResourcesRequest::default;
        assert_eq!(
            field(ResourcesRequest {
                memory: Some(-1),
                ..r()
            }),
            "resources.memory_bytes"
        );
        assert_eq!(
            field(ResourcesRequest {
                memory: Some(1024),
                ..r()
            }),
            "resources.memory_bytes"
        );
        assert_eq!(
            field(ResourcesRequest {
                cpus: Some(0.0),
                ..r()
            }),
            "resources.cpus"
        );
        assert_eq!(
            field(ResourcesRequest {
                cpus: Some(f64::NAN),
                ..r()
            }),
            "resources.cpus"
        );
        assert_eq!(
            field(ResourcesRequest {
                cpus: Some(host_cpus() as f64 + 1.0),
                ..r()
            }),
            "resources.cpus"
        );
        assert_eq!(
            field(ResourcesRequest {
                pids_limit: Some(-5),
                ..r()
            }),
            "resources.pids_limit"
        );
        assert_eq!(
            field(ResourcesRequest {
                cpu_shares: Some(1),
                ..r()
            }),
            "resources.cpu_shares"
        );
        assert_eq!(
            field(ResourcesRequest {
                memory_swap: Some(1 << 30),
                ..r()
            }),
            "resources.memory_swap_bytes"
        );
        assert_eq!(
            field(ResourcesRequest {
                memory: Some(64 << 20),
                memory_swap: Some(32 << 20),
                ..r()
            }),
            "resources.memory_swap_bytes"
        );
        let ok = ResourcesRequest {
            memory: Some(32 << 20),
            cpus: Some(0.5),
            pids_limit: Some(64),
            memory_swap: Some(-1),
            ..r()
        }
        .merge(Limits::default())
        .expect("valid");
        assert_eq!(ok.memory, Some(32 << 20));
        assert_eq!(ok.memory_swap, Some(u64::MAX));
        // An update changes only what it sets.
        let up = ResourcesRequest {
            memory: Some(64 << 20),
            ..r()
        }
        .merge(ok)
        .expect("update");
        assert_eq!(
            (up.memory, up.cpus, up.pids),
            (Some(64 << 20), Some(0.5), Some(64))
        );
    }
}
