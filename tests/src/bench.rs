//! The process protocol of the proxies that `cargo xtask bench http` starts: the upstream
//! address comes first on the command line, the proxy prints its port on the first line of
//! stdout, and it serves until its stdin is closed.

use std::io::{BufRead, Write};
use std::net::SocketAddr;

use anyhow::{Context, Result};

/// Reads the upstream address, the first of `args`.
pub fn upstream_arg(args: &mut impl Iterator<Item = String>) -> Result<SocketAddr> {
    args.next()
        .context("missing the upstream address, such as 127.0.0.1:9000")?
        .parse()
        .context("invalid upstream address")
}

/// Prints the proxy's port for the bench and flushes it.
pub fn announce_port(port: u16) -> Result<()> {
    println!("{port}");
    std::io::stdout()
        .flush()
        .context("failed to print the port")
}

/// Blocks until the parent closes stdin.
pub fn wait_for_stdin_close() {
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
}
