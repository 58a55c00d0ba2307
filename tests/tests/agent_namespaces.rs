//! The agent and fwctl as real processes, with a client in a network namespace sending real TCP
//! through the XDP program.
//!
//! Every test here needs root. They run one at a time because they share the 203.0.113.0/24
//! test network.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::agent::{
    Agent, AgentSettings, CurlOutcome, Upstream, curl, free_port, fwctl_binary,
};
use integration_tests::netns::{ClientHost, is_root};

const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

static NETWORK: Mutex<()> = Mutex::new(());

/// A client namespace, an upstream and an agent with XDP on the client's link.
struct Bench {
    // Field order is drop order: stop the agent before removing its interface.
    agent: Agent,
    client: ClientHost,
    _upstream: Upstream,
    _network: MutexGuard<'static, ()>,
}

impl Bench {
    /// Returns `None`, after printing why, when not root outside CI.
    fn start(name: &str, limit: u32, strikes: u32, ban_seconds: u64) -> Option<Self> {
        if !is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "namespace tests need root, and CI must run them"
            );
            eprintln!("skipping {name}: needs root for network namespaces and XDP");
            return None;
        }
        let network = NETWORK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let interface = format!("fwt{name}");
        let client = ClientHost::create(&format!("fwt-{name}"), &interface, HOST_ADDR, CLIENT_ADDR)
            .expect("create the client namespace");
        let upstream = Upstream::start();
        let agent = Agent::start(AgentSettings {
            name: name.to_owned(),
            interfaces: vec![interface],
            listen: SocketAddr::from((HOST_ADDR, free_port(HOST_ADDR))),
            upstream: upstream.addr,
            rate_limit_requests: limit,
            rate_limit_window_seconds: 60,
            strikes,
            ban_seconds,
        });
        Some(Self {
            agent,
            client,
            _upstream: upstream,
            _network: network,
        })
    }

    fn url(&self) -> String {
        format!("http://{}/hello", self.agent.settings.listen)
    }

    /// Makes one request and returns the response head, with header names in lower case.
    fn response_headers(&self) -> String {
        let output = self
            .client
            .command("curl")
            .args([
                "--silent",
                "--max-time",
                "5",
                "--dump-header",
                "-",
                "--output",
                "/dev/null",
            ])
            .arg(self.url())
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| match line.split_once(':') {
                Some((name, value)) => format!("{}:{value}", name.to_ascii_lowercase()),
                None => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn request(&self, connect_timeout_seconds: u32) -> CurlOutcome {
        curl(
            self.client.command("curl"),
            &self.url(),
            connect_timeout_seconds,
        )
    }
}

/// Polls `condition` every 200 ms until it is true or `timeout` passes.
fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(200));
    }
    condition()
}

#[test]
fn namespace_client_reaches_upstream() {
    let Some(bench) = Bench::start("reach", 100, 5, 60) else {
        return;
    };

    assert_eq!(
        bench.request(3),
        CurlOutcome::Status(200),
        "{}",
        bench.agent.log()
    );
}

#[test]
fn manual_ban_drops_syns_then_remove_serves() {
    let Some(bench) = Bench::start("manual", 100, 5, 60) else {
        return;
    };
    let client = CLIENT_ADDR.to_string();
    assert_eq!(bench.request(3), CurlOutcome::Status(200));
    let drops_before = bench.agent.dropped_packets(CLIENT_ADDR);

    let added = bench.agent.fwctl(&["bans", "add", &client, "--ttl", "10m"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert!(bench.agent.is_banned(&client));
    assert_eq!(bench.request(2), CurlOutcome::TimedOut);
    let drops_banned = bench.agent.dropped_packets(CLIENT_ADDR);
    assert!(
        drops_banned > drops_before,
        "kernel drop counter for {client} did not rise: {drops_before} -> {drops_banned}"
    );

    let removed = bench.agent.fwctl(&["bans", "remove", &client]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert!(!bench.agent.is_banned(&client));
    assert_eq!(bench.request(3), CurlOutcome::Status(200));
}

#[test]
fn rate_limit_strikes_ban_client_in_kernel() {
    let limit = 3;
    let strikes = 2;
    let Some(bench) = Bench::start("strike", limit, strikes, 600) else {
        return;
    };
    let client = CLIENT_ADDR.to_string();

    let mut statuses = Vec::new();
    for _ in 0..limit + strikes {
        statuses.push(bench.request(2));
    }

    let served = statuses
        .iter()
        .filter(|s| **s == CurlOutcome::Status(200))
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == CurlOutcome::Status(429))
        .count();
    assert_eq!(served, limit as usize, "{statuses:?}");
    assert_eq!(limited, strikes as usize, "{statuses:?}");
    let ban = bench
        .agent
        .ban_entry(&client)
        .expect("the client is banned after its strikes");
    assert_eq!(ban["origin"].as_str(), Some("rate_limit"), "{ban}");
    assert_eq!(bench.request(2), CurlOutcome::TimedOut);
    assert!(bench.agent.dropped_packets(CLIENT_ADDR) > 0);
}

#[test]
fn sighup_reload_raises_limit_with_headers() {
    let Some(bench) = Bench::start("reload", 2, 100, 60) else {
        return;
    };

    let first = bench.response_headers();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        first.contains("ratelimit-policy: \"per-client-60s\";q=2;w=60"),
        "{first}"
    );
    assert!(
        first.contains("ratelimit: \"per-client-60s\";r=1;t="),
        "{first}"
    );
    assert_eq!(bench.request(3), CurlOutcome::Status(200));
    let limited = bench.response_headers();
    assert!(limited.starts_with("HTTP/1.1 429"), "{limited}");
    assert!(limited.contains("retry-after: "), "{limited}");

    let config = std::fs::read_to_string(&bench.agent.config_path).expect("read the config");
    let raised = config.replace("requests = 2\n", "requests = 5\n");
    assert_ne!(config, raised, "the config must set requests = 2");
    std::fs::write(&bench.agent.config_path, raised).expect("write the config");
    let pid = bench.agent.pid().expect("the agent runs").to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
    let reloaded = wait_until(Duration::from_secs(5), || {
        bench.agent.log().contains("config reloaded")
    });
    assert!(reloaded, "{}", bench.agent.log());

    // The two admitted requests still count: 3 of the new 5 are left.
    let after = bench.response_headers();
    assert!(after.starts_with("HTTP/1.1 200"), "{after}");
    assert!(
        after.contains("ratelimit-policy: \"per-client-60s\";q=5;w=60"),
        "{after}"
    );
    assert!(
        after.contains("ratelimit: \"per-client-60s\";r=2;t="),
        "{after}"
    );
}

#[test]
fn ban_survives_agent_restart() {
    let Some(mut bench) = Bench::start("restart", 100, 5, 60) else {
        return;
    };
    let client = CLIENT_ADDR.to_string();
    let added = bench.agent.fwctl(&["bans", "add", &client, "--ttl", "10m"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );

    bench.agent.stop();
    bench.agent.spawn();

    assert!(bench.agent.is_banned(&client), "{}", bench.agent.log());
    assert_eq!(bench.request(2), CurlOutcome::TimedOut);
    assert!(bench.agent.dropped_packets(CLIENT_ADDR) > 0);
}

#[test]
fn expired_ban_serves_client_again() {
    let Some(bench) = Bench::start("expiry", 100, 5, 60) else {
        return;
    };
    let client = CLIENT_ADDR.to_string();
    let added = bench.agent.fwctl(&["bans", "add", &client, "--ttl", "3s"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert_eq!(bench.request(1), CurlOutcome::TimedOut);

    let swept = wait_until(Duration::from_secs(10), || !bench.agent.is_banned(&client));

    assert!(swept, "the sweeper did not remove the expired ban");
    assert_eq!(bench.request(3), CurlOutcome::Status(200));
}

#[test]
fn xdp_stays_attached_until_fwctl_detach() {
    let Some(mut bench) = Bench::start("detach", 100, 5, 60) else {
        return;
    };
    let interface = bench.client.host_interface.clone();
    let attached = ip_link_show(&interface);
    assert!(
        attached.contains("xdp"),
        "no XDP program on {interface}: {attached}"
    );

    // While the agent runs, its open link descriptors would keep the program attached until it
    // exits, so fwctl refuses and leaves the pins alone.
    let pin_dir = bench.agent.pin_dir.display().to_string();
    let rejected = bench.agent.fwctl(&["detach", "--pin-dir", &pin_dir]);
    assert!(!rejected.status.success());
    assert!(
        String::from_utf8_lossy(&rejected.stderr).contains("an agent is running"),
        "{}",
        String::from_utf8_lossy(&rejected.stderr)
    );
    assert!(
        bench.agent.pin_dir.exists(),
        "fwctl removed the pins of a running agent"
    );

    // Pointed at another admin socket, fwctl still finds the agent by its open link.
    let elsewhere = Command::new(fwctl_binary())
        .args([
            "--socket",
            "/nonexistent/admin.sock",
            "detach",
            "--pin-dir",
            &pin_dir,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run fwctl");
    let stderr = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(!elsewhere.status.success(), "{stderr}");
    assert!(stderr.contains("has the XDP link"), "{stderr}");
    assert!(
        bench.agent.pin_dir.exists(),
        "fwctl removed the pins of an agent with another admin socket"
    );

    bench.agent.stop();
    assert!(
        bench
            .agent
            .log()
            .contains("stays attached through its pinned link"),
        "{}",
        bench.agent.log()
    );
    let after_stop = ip_link_show(&interface);
    assert!(
        after_stop.contains("xdp"),
        "the pinned link did not keep XDP on {interface}: {after_stop}"
    );

    let detached = bench.agent.fwctl(&["detach", "--pin-dir", &pin_dir]);
    assert!(
        detached.status.success(),
        "{}",
        String::from_utf8_lossy(&detached.stderr)
    );
    let after_detach = ip_link_show(&interface);
    assert!(
        !after_detach.contains("xdp"),
        "XDP still attached to {interface}: {after_detach}"
    );
    assert!(!bench.agent.pin_dir.exists(), "pins left in {pin_dir}");
}

#[test]
fn drops_continue_through_sigkill_and_restart() {
    let Some(mut bench) = Bench::start("sigkill", 100, 5, 600) else {
        return;
    };
    let client = CLIENT_ADDR.to_string();
    let added = bench.agent.fwctl(&["bans", "add", &client, "--ttl", "10m"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert_eq!(bench.request(2), CurlOutcome::TimedOut);

    let interface = bench.client.host_interface.clone();
    let (link_before, program_before) = xdp_link_on(&interface);

    // With the agent gone, a SYN that reached the host would meet a closed port and be reset at
    // once, so a connect timeout means XDP still drops it.
    bench.agent.kill();
    assert_eq!(bench.request(2), CurlOutcome::TimedOut);

    bench.agent.spawn();
    assert!(bench.agent.is_banned(&client), "{}", bench.agent.log());
    assert_eq!(bench.request(2), CurlOutcome::TimedOut);

    // The restarted agent swaps its program into the same link, so the interface is never
    // without the program, not even for the time of a detach and an attach.
    let (link_after, program_after) = xdp_link_on(&interface);
    assert_eq!(
        link_after, link_before,
        "the XDP link was replaced, not updated"
    );
    assert_ne!(
        program_after, program_before,
        "the restarted agent's program is not running"
    );
    assert!(
        bench
            .agent
            .log()
            .contains("pinned by an earlier agent, in place"),
        "{}",
        bench.agent.log()
    );

    let removed = bench.agent.fwctl(&["bans", "remove", &client]);
    assert!(removed.status.success());
    assert_eq!(bench.request(3), CurlOutcome::Status(200));
}

#[test]
fn range_ban_drops_client_subnet() {
    let Some(bench) = Bench::start("range", 100, 5, 60) else {
        return;
    };
    assert_eq!(bench.request(3), CurlOutcome::Status(200));

    let added = bench
        .agent
        .fwctl(&["bans", "add", "203.0.113.0/30", "--ttl", "10m"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert!(bench.agent.is_banned("203.0.113.0/30"));

    assert_eq!(bench.request(2), CurlOutcome::TimedOut);
}

#[test]
fn allowlist_beats_ban() {
    let Some(bench) = Bench::start("allow", 100, 5, 60) else {
        return;
    };
    let client = CLIENT_ADDR.to_string();
    let banned = bench
        .agent
        .fwctl(&["bans", "add", "203.0.113.0/30", "--ttl", "10m"]);
    assert!(banned.status.success());
    assert_eq!(bench.request(2), CurlOutcome::TimedOut);

    let allowed = bench.agent.fwctl(&["allow", "add", &client]);
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert_eq!(bench.request(3), CurlOutcome::Status(200));

    let rejected = bench.agent.fwctl(&["bans", "add", &client]);
    assert!(!rejected.status.success());
    assert!(
        String::from_utf8_lossy(&rejected.stderr).contains("allowlisted"),
        "{}",
        String::from_utf8_lossy(&rejected.stderr)
    );
}

/// Returns the id of the XDP link on `interface` and the id of the program it runs.
fn xdp_link_on(interface: &str) -> (u32, u32) {
    let link_output = ip_link_show(interface);
    let program = link_output
        .split("prog/xdp id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no XDP program on {interface}: {link_output}"));
    let link = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .find(|link| link.program_id() == program)
        .unwrap_or_else(|| panic!("no link runs XDP program {program} on {interface}"));
    (link.id(), program)
}

fn ip_link_show(interface: &str) -> String {
    let output = std::process::Command::new("ip")
        .args(["link", "show", "dev", interface])
        .output()
        .expect("run ip link show");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn expired_ban_passes_before_sweep() {
    let Some(mut bench) = Bench::start("sweepless", 100, 5, 60) else {
        return;
    };
    // Restart with a sweep interval far beyond the test, so only the kernel's expiry check can
    // let the client through.
    bench.agent.stop();
    let config = std::fs::read_to_string(&bench.agent.config_path).expect("read the config");
    let config = config.replace(
        "sweep_interval_seconds = 1",
        "sweep_interval_seconds = 3600",
    );
    std::fs::write(&bench.agent.config_path, config).expect("write the config");
    bench.agent.spawn();

    let client = CLIENT_ADDR.to_string();
    let added = bench.agent.fwctl(&["bans", "add", &client, "--ttl", "3s"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert_eq!(bench.request(1), CurlOutcome::TimedOut);

    let served = wait_until(Duration::from_secs(10), || {
        bench.request(1) == CurlOutcome::Status(200)
    });

    assert!(
        served,
        "the expired ban still dropped: {}",
        bench.agent.log()
    );
    assert!(
        !bench.agent.log().contains("ban expired"),
        "the sweeper ran: {}",
        bench.agent.log()
    );
}

#[test]
fn unpinned_agent_detaches_on_exit() {
    let Some(mut bench) = Bench::start("unpinned", 100, 5, 60) else {
        return;
    };
    let interface = bench.client.host_interface.clone();
    bench.agent.stop();
    let pin_dir = bench.agent.pin_dir.display().to_string();
    let detached = bench.agent.fwctl(&["detach", "--pin-dir", &pin_dir]);
    assert!(
        detached.status.success(),
        "{}",
        String::from_utf8_lossy(&detached.stderr)
    );
    let config = std::fs::read_to_string(&bench.agent.config_path).expect("read the config");
    let unpinned = config.replacen("pin_dir = ", "pin = false\npin_dir = ", 1);
    assert_ne!(
        config, unpinned,
        "the test config has no pin_dir line to unpin"
    );
    std::fs::write(&bench.agent.config_path, unpinned).expect("write the config");

    bench.agent.spawn();
    let attached = ip_link_show(&interface);
    bench.agent.stop();
    let after_stop = ip_link_show(&interface);

    assert!(
        attached.contains("xdp"),
        "no XDP program on {interface}: {attached}"
    );
    assert!(
        !after_stop.contains("xdp"),
        "an agent without pins left XDP on {interface}: {after_stop}"
    );
}

#[test]
fn fwctl_bans_through_pins_while_agent_stopped() {
    let Some(mut bench) = Bench::start("offline", 100, 5, 60) else {
        return;
    };
    let client = CLIENT_ADDR.to_string();
    assert_eq!(bench.request(3), CurlOutcome::Status(200));
    bench.agent.stop();

    let pin_dir = bench.agent.pin_dir.display().to_string();
    let added = bench.agent.fwctl(&[
        "bans",
        "add",
        &client,
        "--ttl",
        "10m",
        "--pin-dir",
        &pin_dir,
    ]);
    let stderr = String::from_utf8_lossy(&added.stderr);
    assert!(added.status.success(), "{stderr}");
    assert!(stderr.contains("the agent is not running"), "{stderr}");
    // With the agent stopped, a SYN that reached the host would meet a closed port and be reset
    // at once, so a connect timeout means XDP drops it.
    assert_eq!(bench.request(2), CurlOutcome::TimedOut);

    bench.agent.spawn();
    let ban = bench
        .agent
        .ban_entry(&client)
        .unwrap_or_else(|| panic!("ban of {client} not stored: {}", bench.agent.log()));
    assert_eq!(ban["origin"].as_str(), Some("manual"));
    let remaining = ban["remaining_seconds"].as_u64().unwrap_or(0);
    assert!(
        (500..=600).contains(&remaining),
        "the stored ban lost the kernel's expiry: {remaining} s left"
    );
    assert_eq!(bench.request(2), CurlOutcome::TimedOut);
    assert!(bench.agent.dropped_packets(CLIENT_ADDR) > 0);
}
