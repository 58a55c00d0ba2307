//! `fwctl bans import` against the real agent: one admin request per file, bad lines and
//! rejected bans reported with their line numbers, and the bans in the kernel maps, also after a
//! restart. The agent attaches to a veth pair of its own that has no addresses and carries no
//! traffic, so these tests need no namespace and no test subnet.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output};

use firewall_agent::kernel::{Blocklist, PinnedBlocklist};
use integration_tests::agent::{Agent, AgentSettings, Upstream, free_port};
use integration_tests::netns::is_root;

/// A veth pair without addresses for the agent to attach to, removed on drop.
struct Veth(String);

impl Veth {
    fn create(name: &str) -> Self {
        let _ = Command::new("ip").args(["link", "del", name]).output();
        let peer = format!("{name}p");
        let status = Command::new("ip")
            .args(["link", "add", name, "type", "veth", "peer", "name", &peer])
            .status()
            .expect("run ip link add");
        assert!(status.success(), "ip link add {name} failed");
        let status = Command::new("ip")
            .args(["link", "set", name, "up"])
            .status()
            .expect("run ip link set");
        assert!(status.success(), "ip link set {name} up failed");
        Self(name.to_owned())
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// An agent on its own veth. Field order is drop order: the agent stops before its interface
/// goes.
struct Setup {
    agent: Agent,
    _veth: Veth,
    _upstream: Upstream,
}

impl Setup {
    /// Returns `None`, after printing why, when not root outside CI.
    fn start(name: &str) -> Option<Self> {
        if !is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run {name} as root: the agent loads an XDP program"
            );
            eprintln!("skipping {name}: the agent needs root to load its XDP program");
            return None;
        }
        let veth = Veth::create(&format!("fwimp{name}"));
        let upstream = Upstream::start();
        let agent = Agent::start(AgentSettings {
            name: format!("import-{name}"),
            interfaces: vec![veth.0.clone()],
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST))),
            upstream: upstream.addr,
            rate_limit_requests: 100,
            rate_limit_window_seconds: 60,
            strikes: 3,
            ban_seconds: 600,
        });
        Some(Self {
            agent,
            _veth: veth,
            _upstream: upstream,
        })
    }

    /// Reads the bans in the agent's pinned kernel maps, as address or range text.
    fn kernel_bans(&self) -> HashSet<String> {
        PinnedBlocklist::open(&self.agent.pin_dir)
            .expect("the agent's pins open")
            .kernel_bans()
            .expect("the pinned ban maps are readable")
            .into_iter()
            .map(|ban| ban.network.to_string())
            .collect()
    }
}

fn import(agent: &Agent, file: &Path) -> Output {
    let file = file.to_str().expect("UTF-8 temporary path");
    agent.fwctl(&["bans", "import", file, "--ttl", "1h"])
}

#[test]
fn import_reports_lines_and_fills_kernel() {
    let Some(setup) = Setup::start("a") else {
        return;
    };
    let file = setup.agent.dir.join("bans.txt");
    let text = "# blocklist\n198.51.100.7\nnot-an-address\n2001:db8::/48\n127.0.0.1\n\
                198.51.100.130/25\n198.51.100.7\n";
    std::fs::write(&file, text).expect("write the import file");

    let output = import(&setup.agent, &file);

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a bad line fails the import");
    assert!(
        stdout.contains("applied 4 bans; 1 invalid lines, 1 bans rejected"),
        "{stdout}"
    );
    let path = file.display();
    assert!(stderr.contains(&format!("{path}:3: ")), "{stderr}");
    assert!(stderr.contains(&format!("{path}:5: 127.0.0.1:")), "{stderr}");
    assert!(stderr.contains("allowlisted"), "{stderr}");
    for address in ["198.51.100.7", "2001:db8::/48", "198.51.100.128/25"] {
        assert!(setup.agent.is_banned(address), "{address} is stored");
    }
    let kernel = setup.kernel_bans();
    for address in ["198.51.100.7", "2001:db8::/48", "198.51.100.128/25"] {
        assert!(kernel.contains(address), "{address} in {kernel:?}");
    }
    assert!(!kernel.contains("127.0.0.1"), "{kernel:?}");
}

#[test]
fn large_import_survives_restart() {
    const COUNT: u32 = 20_000;
    let Some(mut setup) = Setup::start("b") else {
        return;
    };
    // 198.18.0.0/15 (RFC 2544): map keys only, no frame is ever sent from them. The file is
    // larger than the 64 KiB limit of the other admin requests.
    let address = |index: u32| Ipv4Addr::from(0xc612_0000 + index).to_string();
    let text: String = (0..COUNT).map(|index| address(index) + "\n").collect();
    let file = setup.agent.dir.join("bans.txt");
    std::fs::write(&file, text).expect("write the import file");

    let output = import(&setup.agent, &file);

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(setup.kernel_bans().len(), COUNT as usize);

    setup.agent.stop();
    setup.agent.spawn();

    let kernel = setup.kernel_bans();
    assert_eq!(kernel.len(), COUNT as usize);
    assert!(kernel.contains(&address(0)));
    assert!(kernel.contains(&address(COUNT - 1)));
    assert!(setup.agent.is_banned(&address(COUNT - 1)));
}
