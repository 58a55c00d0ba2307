//! The capability check that runs before the XDP program is loaded.

use std::fs;

use super::KernelError;

/// Status file of the calling process, which lists its capability sets.
const STATUS_PATH: &str = "/proc/self/status";

// Capability numbers from the kernel's `include/uapi/linux/capability.h`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Checks that the process may create the maps, load the XDP program and attach it.
///
/// Since Linux 5.8, CAP_BPF allows creating maps and loading programs. The XDP program moves
/// packet pointers by variable offsets (VLAN tags, the IPv4 header length), which the verifier
/// accepts only with CAP_PERFMON. Loading a networking program and attaching it to an interface
/// need CAP_NET_ADMIN. CAP_SYS_ADMIN implies CAP_BPF and CAP_PERFMON. The effective set is read
/// from `/proc/self/status`.
///
/// # Errors
///
/// [`KernelError::MissingCapabilities`] names every missing capability;
/// [`KernelError::ReadCapabilities`] and [`KernelError::ParseCapabilities`] report an unreadable
/// status file.
pub fn check_privileges() -> Result<(), KernelError> {
    let status =
        fs::read_to_string(STATUS_PATH).map_err(|source| KernelError::ReadCapabilities {
            path: STATUS_PATH,
            source,
        })?;
    let effective = parse_effective_capabilities(&status)
        .ok_or(KernelError::ParseCapabilities { path: STATUS_PATH })?;

    let missing = missing_capabilities(effective);
    if missing.is_empty() {
        return Ok(());
    }
    Err(KernelError::MissingCapabilities {
        missing: missing.join(", "),
        setcap: missing
            .iter()
            .map(|name| name.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(","),
    })
}

/// Reads the `CapEff:` bit mask (hexadecimal) from the text of `/proc/<pid>/status`.
fn parse_effective_capabilities(status: &str) -> Option<u64> {
    let mask = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(mask, 16).ok()
}

/// Returns the names of the capabilities that `effective` lacks, in a stable order.
fn missing_capabilities(effective: u64) -> Vec<&'static str> {
    let has = |capability: u32| effective & (1 << capability) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/self/status` of a root process on Linux 6.18 (41 capabilities), shortened.
    const ROOT_STATUS: &str = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\n\
                               CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                               CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";

    #[test]
    fn effective_mask_parsed_from_status() {
        assert_eq!(
            parse_effective_capabilities(ROOT_STATUS),
            Some(0x1ff_ffff_ffff)
        );
    }

    #[test]
    fn effective_mask_missing_or_invalid() {
        assert_eq!(
            parse_effective_capabilities("Name:\tcat\nCapPrm:\t0\n"),
            None
        );
        assert_eq!(parse_effective_capabilities("CapEff:\tnot-hex\n"), None);
    }

    #[test]
    fn root_lacks_nothing() {
        assert!(missing_capabilities(0x1ff_ffff_ffff).is_empty());
    }

    #[test]
    fn empty_set_lacks_all_three() {
        assert_eq!(
            missing_capabilities(0),
            ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        );
    }

    #[test]
    fn bpf_perfmon_and_net_admin_suffice() {
        let effective = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN);
        assert!(missing_capabilities(effective).is_empty());
    }

    #[test]
    fn sys_admin_covers_bpf_and_perfmon() {
        let effective = (1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN);
        assert!(missing_capabilities(effective).is_empty());
    }

    #[test]
    fn bpf_and_net_admin_lack_perfmon() {
        let effective = (1 << CAP_BPF) | (1 << CAP_NET_ADMIN);
        assert_eq!(missing_capabilities(effective), ["CAP_PERFMON"]);
    }
}
