//! Test hosts in network namespaces, built with iproute2.
//!
//! A [`ClientHost`] is a namespace joined to the root namespace by a veth pair: the root side is
//! the firewall's interface, the namespace side is the client. Both ends get addresses from a
//! documentation range and the client routes everything through the firewall side. Dropping the
//! value deletes the namespace and the veth pair, also when a test fails.
//!
//! This file uses only `std`, so the xtask demo includes it as well.

use std::io;
use std::net::Ipv4Addr;
use std::process::{Command, Output};

/// A client namespace joined to the root namespace by a veth pair.
#[derive(Debug)]
pub struct ClientHost {
    /// Name of the network namespace.
    pub namespace: String,
    /// The root-namespace end of the veth pair, where the XDP program attaches.
    pub host_interface: String,
    /// Address of the root-namespace end.
    pub host_addr: Ipv4Addr,
    /// Address of the client.
    pub client_addr: Ipv4Addr,
}

impl ClientHost {
    /// Creates namespace `namespace` and a veth pair named `host_interface` (root side) and
    /// `<host_interface>c` (client side), on the /24 of `host_addr` and `client_addr`.
    ///
    /// Names must be at most 14 bytes so the client side fits the kernel's 15-byte limit. A
    /// leftover namespace or interface of the same name, from an earlier run that was killed, is
    /// removed first.
    pub fn create(
        namespace: &str,
        host_interface: &str,
        host_addr: Ipv4Addr,
        client_addr: Ipv4Addr,
    ) -> io::Result<Self> {
        let peer = format!("{host_interface}c");
        if peer.len() > 15 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {peer:?} is longer than 15 bytes"),
            ));
        }
        remove_leftovers(namespace, host_interface);
        ensure_subnet_unused(host_addr)?;

        // Build the value first, so that Drop cleans up whatever a failing step left behind.
        let host = Self {
            namespace: namespace.to_owned(),
            host_interface: host_interface.to_owned(),
            host_addr,
            client_addr,
        };
        let host_cidr = format!("{host_addr}/24");
        let client_cidr = format!("{client_addr}/24");
        let gateway = host_addr.to_string();
        ip(&["netns", "add", namespace])?;
        ip(&["link", "add", host_interface, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", namespace])?;
        ip(&["addr", "add", &host_cidr, "dev", host_interface])?;
        ip(&["link", "set", host_interface, "up"])?;
        host.ip_in(&["addr", "add", &client_cidr, "dev", &peer])?;
        host.ip_in(&["link", "set", &peer, "up"])?;
        host.ip_in(&["link", "set", "lo", "up"])?;
        host.ip_in(&["route", "add", "default", "via", &gateway])?;
        Ok(host)
    }

    /// Runs `program` with `args` inside the namespace and returns its output.
    pub fn run(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        self.command(program).args(args).output()
    }

    /// Builds a command that runs `program` inside the namespace, for callers that need to
    /// spawn it or set its standard streams.
    pub fn command(&self, program: &str) -> Command {
        command_in(&self.namespace, program)
    }

    fn ip_in(&self, args: &[&str]) -> io::Result<()> {
        let mut full = vec!["-n", self.namespace.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }
}

impl Drop for ClientHost {
    fn drop(&mut self) {
        remove_leftovers(&self.namespace, &self.host_interface);
    }
}

/// Fails if the root namespace already has an address or a route in the /24 of `addr`.
///
/// A test network must not overlap a real one: the machine's own uplink may sit in a
/// documentation range, and taking its gateway's address would cut the machine off.
fn ensure_subnet_unused(addr: Ipv4Addr) -> io::Result<()> {
    let [a, b, c, _] = addr.octets();
    let subnet = format!("{a}.{b}.{c}.0/24");
    let addresses = Command::new("ip").args(["-4", "-o", "addr", "show", "to", &subnet]).output()?;
    let routes = Command::new("ip").args(["-4", "route", "show", "root", &subnet]).output()?;
    // `ip -o addr` prints "<index>: <interface>    inet <cidr> ..."; keep the interface and the
    // address. A route line starts with its destination.
    let mut users: Vec<String> = String::from_utf8_lossy(&addresses.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some(format!("address {} on {}", fields.get(3)?, fields.get(1)?))
        })
        .collect();
    users.extend(
        String::from_utf8_lossy(&routes.stdout)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| format!("route {}", line.trim())),
    );
    if users.is_empty() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "the test network {subnet} is already in use on this host ({}); remove that address \
             or wait for the other test run to finish",
            users.join(", ")
        ),
    ))
}

/// Builds a command that runs `program` inside `namespace`.
pub fn command_in(namespace: &str, program: &str) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", namespace, program]);
    command
}

/// Deletes a namespace and a root-side interface if they exist. Errors are ignored because either
/// may already be gone: deleting the namespace also deletes the veth pair.
fn remove_leftovers(namespace: &str, host_interface: &str) {
    let _ = Command::new("ip").args(["netns", "del", namespace]).output();
    let _ = Command::new("ip").args(["link", "del", host_interface]).output();
}

/// Runs `ip` with `args` and turns a non-zero exit into an error carrying its stderr.
fn ip(args: &[&str]) -> io::Result<()> {
    let output = Command::new("ip").args(args).output()?;
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// Returns whether the process runs with effective user id 0.
pub fn is_root() -> bool {
    // /proc/self/status has a line "Uid: <real> <effective> <saved> <fs>".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
