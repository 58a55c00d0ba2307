//! The agent of the kernel-assisted API firewall: a reverse proxy that rate-limits clients and
//! pushes offenders into the XDP blocklist.

#![forbid(unsafe_code)]

pub mod kernel;
