//! The agent of the kernel-assisted API firewall: a reverse proxy that rate-limits clients and
//! pushes offenders into the XDP blocklist.

// Denied, not forbidden, so that `kernel::batch` can issue the bpf(2) call that aya lacks and
// `kernel::table` can map the XDP program's ban table.
#![deny(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod bans;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod events;
pub mod kernel;
pub mod limits;
pub mod network;
pub mod oauth;
pub mod proxy;
pub mod reload;
pub mod routes;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod threat;
pub mod tokens;
pub mod validation;
pub mod tls;

/// The global allocator of the agent's binaries. The proxy allocates and frees many small
/// buffers per request: in perf profiles of the edge bench agent under wrk on 2 cores, glibc's
/// malloc and free took about 10% of the proxy's samples and mimalloc about 6%.
pub use mimalloc::MiMalloc;
