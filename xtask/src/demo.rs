//! `cargo xtask demo`: the whole loop on real traffic.
//!
//! Two client namespaces talk to an agent in the root namespace through two veth pairs with the
//! XDP program attached. The legitimate client stays under the rate limit. The abusive one floods
//! until the agent bans it, and keeps trying while the kernel drops its packets until the ban
//! expires and it is served again.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[path = "../../tests/src/agent.rs"]
#[allow(dead_code, reason = "shared with the integration tests, which use more of it")]
pub(crate) mod agent;

use agent::{Agent, AgentSettings, CurlOutcome, Upstream, curl, free_port};
use crate::netns::{self, ClientHost};

// Documentation ranges (RFC 5737). 192.0.2.0/24 is left alone because some hosts, virtual
// machines above all, use it for their real uplink.
const LEGIT_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const LEGIT_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const ABUSE_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const ABUSE_CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

const LIMIT_REQUESTS: u32 = 10;
const LIMIT_WINDOW_SECONDS: u64 = 10;
const STRIKES: u32 = 3;
const BAN_SECONDS: u64 = 15;
/// Time between two requests of the legitimate client: about 5 requests per 10 s window, half the
/// limit.
const LEGIT_INTERVAL: Duration = Duration::from_secs(2);
/// The demo gives up if the abuser is not served again within this time.
const DEMO_TIMEOUT: Duration = Duration::from_secs(90);

/// Counters of one client's requests.
#[derive(Default)]
struct ClientCounts {
    served: AtomicU64,
    rejected: AtomicU64,
    timed_out: AtomicU64,
    failed: AtomicU64,
}

impl ClientCounts {
    fn record(&self, outcome: &CurlOutcome) {
        let counter = match outcome {
            CurlOutcome::Status(200) => &self.served,
            CurlOutcome::Status(429) => &self.rejected,
            CurlOutcome::TimedOut => &self.timed_out,
            _ => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Prints a line prefixed with the seconds since the demo's traffic started.
fn say(start: Instant, message: &str) {
    println!("[{:5.1}s] {message}", start.elapsed().as_secs_f64());
}

pub fn run() -> Result<()> {
    if !crate::is_root() {
        bail!("the demo needs root for network namespaces and XDP; run `cargo xtask demo` as root");
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("failed to install the Ctrl-C handler")?;

    println!("==> creating the hosts");
    let legit = ClientHost::create("fwdemo-legit", "fwdemo-l", LEGIT_HOST, LEGIT_CLIENT)?;
    let abuser = ClientHost::create("fwdemo-abuse", "fwdemo-a", ABUSE_HOST, ABUSE_CLIENT)?;
    println!("    firewall host: {} ({LEGIT_HOST}/24) and {} ({ABUSE_HOST}/24), root namespace", legit.host_interface, abuser.host_interface);
    println!("    legitimate client: namespace {}, {LEGIT_CLIENT}", legit.namespace);
    println!("    abusive client:    namespace {}, {ABUSE_CLIENT}", abuser.namespace);

    let upstream = Upstream::start();
    println!("==> upstream API on {}", upstream.addr);
    let listen = SocketAddr::from((LEGIT_HOST, free_port(LEGIT_HOST)));
    let agent = Agent::start(AgentSettings {
        name: "demo".to_owned(),
        interfaces: vec![legit.host_interface.clone(), abuser.host_interface.clone()],
        listen,
        upstream: upstream.addr,
        rate_limit_requests: LIMIT_REQUESTS,
        rate_limit_window_seconds: LIMIT_WINDOW_SECONDS,
        strikes: STRIKES,
        ban_seconds: BAN_SECONDS,
    });
    println!(
        "==> firewall-agent on {listen}, XDP on {} and {}\n    limit {LIMIT_REQUESTS} requests per {LIMIT_WINDOW_SECONDS} s per client; {STRIKES} rejected requests ban the client for {BAN_SECONDS} s",
        legit.host_interface, abuser.host_interface
    );
    for line in agent.log().lines().filter(|line| line.contains("mode")) {
        println!("    agent: {}", line.trim());
    }

    let outcome = drive_traffic(&agent, &legit, &abuser, &interrupted);
    // The guards tear down in reverse order: agent, upstream, namespaces.
    drop(agent);
    drop(upstream);
    println!("==> removed the agent, the upstream, the namespaces and the veth pairs");
    outcome
}

/// Milestones of the abusive client: its ban, the expiry and the first response after it.
#[derive(Default)]
struct AbuseStory {
    banned_at: Option<Instant>,
    ban_origin: Option<String>,
    expired_at: Option<Instant>,
    served_again: Option<CurlOutcome>,
    drops_while_banned: u64,
}

fn drive_traffic(
    agent: &Agent,
    legit: &ClientHost,
    abuser: &ClientHost,
    interrupted: &Arc<AtomicBool>,
) -> Result<()> {
    let url = format!("http://{}/api/items", agent.settings.listen);
    let legit_counts = Arc::new(ClientCounts::default());
    let abuse_counts = Arc::new(ClientCounts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let abuse_done = Arc::new(AtomicBool::new(false));
    let story = Arc::new(Mutex::new(AbuseStory::default()));
    let start = Instant::now();
    println!("==> traffic: the legitimate client sends one request every {} ms, the abusive client as fast as it can", LEGIT_INTERVAL.as_millis());

    let legit_thread = {
        let (counts, stop, url) = (Arc::clone(&legit_counts), Arc::clone(&stop), url.clone());
        let (namespace, interrupted) = (legit.namespace.clone(), Arc::clone(interrupted));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let outcome = curl(netns::command_in(&namespace, "curl"), &url, 2);
                // Ctrl-C in a terminal also ends curl, which is no failure of the firewall.
                if interrupted.load(Ordering::Relaxed) {
                    break;
                }
                if outcome != CurlOutcome::Status(200) {
                    say(start, &format!("legitimate client {LEGIT_CLIENT} not served: {}", describe(&outcome)));
                }
                counts.record(&outcome);
                thread::sleep(LEGIT_INTERVAL);
            }
        })
    };
    let abuse_thread = {
        let (counts, stop, done) = (Arc::clone(&abuse_counts), Arc::clone(&stop), Arc::clone(&abuse_done));
        let (namespace, story) = (abuser.namespace.clone(), Arc::clone(&story));
        let interrupted = Arc::clone(interrupted);
        thread::spawn(move || {
            let mut timed_out_before = false;
            while !stop.load(Ordering::Relaxed) {
                let outcome = curl(netns::command_in(&namespace, "curl"), &url, 1);
                if interrupted.load(Ordering::Relaxed) {
                    break;
                }
                counts.record(&outcome);
                if outcome == CurlOutcome::TimedOut {
                    timed_out_before = true;
                } else if timed_out_before {
                    // The first response after the ban: the former abuser is served again.
                    say(start, &format!("abusive client {ABUSE_CLIENT} served again: {}", describe(&outcome)));
                    if let Ok(mut story) = story.lock() {
                        story.served_again = Some(outcome);
                    }
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            done.store(true, Ordering::Relaxed);
        })
    };

    let abuser_key = ABUSE_CLIENT.to_string();
    while !abuse_done.load(Ordering::Relaxed) {
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
        if start.elapsed() > DEMO_TIMEOUT {
            println!("the abusive client was not served again within {} s; tearing down", DEMO_TIMEOUT.as_secs());
            break;
        }
        thread::sleep(Duration::from_secs(1));
        // Ctrl-C in a terminal also ends the agent, so fwctl would find nothing to ask.
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
        let ban = agent.ban_entry(&abuser_key);
        let drops = agent.dropped_packets(ABUSE_CLIENT);
        let mut story = story.lock().map_err(|_| anyhow::anyhow!("demo state lock poisoned"))?;
        match (&ban, story.banned_at, story.expired_at) {
            (Some(ban), None, _) => {
                story.banned_at = Some(Instant::now());
                story.ban_origin = ban["origin"].as_str().map(str::to_owned);
                say(start, &format!("BANNED {abuser_key}: origin {}, for {BAN_SECONDS} s; its packets now die in XDP", story.ban_origin.as_deref().unwrap_or("?")));
            }
            (None, Some(_), None) => {
                story.expired_at = Some(Instant::now());
                // The program counts drops only for banned sources, so every drop of this
                // source happened during its ban.
                story.drops_while_banned = drops;
                say(start, &format!("ban on {abuser_key} expired and was swept"));
            }
            _ => {}
        }
        say(start, &format!(
            "legitimate: {} served, {} failed | abusive: {} served, {} rejected (429), {} timed out | kernel drops from {abuser_key}: {drops} packets",
            ClientCounts::get(&legit_counts.served),
            ClientCounts::get(&legit_counts.failed) + ClientCounts::get(&legit_counts.rejected) + ClientCounts::get(&legit_counts.timed_out),
            ClientCounts::get(&abuse_counts.served),
            ClientCounts::get(&abuse_counts.rejected),
            ClientCounts::get(&abuse_counts.timed_out),
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = legit_thread.join();
    let _ = abuse_thread.join();
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted before the end of the demo");
    }

    let story = story.lock().map_err(|_| anyhow::anyhow!("demo state lock poisoned"))?;
    print_summary(&legit_counts, &abuse_counts, &story)
}

fn describe(outcome: &CurlOutcome) -> String {
    match outcome {
        CurlOutcome::Status(code) => format!("HTTP {code}"),
        CurlOutcome::TimedOut => "connect timed out".to_owned(),
        CurlOutcome::Failed(reason) => format!("failed ({reason})"),
    }
}

fn print_summary(legit: &ClientCounts, abuse: &ClientCounts, story: &AbuseStory) -> Result<()> {
    let legit_served = ClientCounts::get(&legit.served);
    let legit_other = ClientCounts::get(&legit.rejected) + ClientCounts::get(&legit.timed_out) + ClientCounts::get(&legit.failed);
    println!("\nsummary");
    println!("  legitimate client {LEGIT_CLIENT}: {} requests, {legit_served} served, {legit_other} not served", legit_served + legit_other);
    println!(
        "  abusive client {ABUSE_CLIENT}: {} served, {} rejected with 429, {} connects timed out while banned",
        ClientCounts::get(&abuse.served),
        ClientCounts::get(&abuse.rejected),
        ClientCounts::get(&abuse.timed_out),
    );
    match (story.banned_at, story.expired_at) {
        (Some(_), Some(_)) => println!(
            "  banned by {} for {BAN_SECONDS} s; the kernel dropped {} packets from it meanwhile",
            story.ban_origin.as_deref().unwrap_or("?"),
            story.drops_while_banned
        ),
        (Some(_), None) => println!("  banned, but the ban did not expire during the demo"),
        _ => println!("  never banned"),
    }
    match &story.served_again {
        Some(outcome) => println!("  after the ban: {}", describe(outcome)),
        None => println!("  after the ban: not served again"),
    }

    let mut problems = Vec::new();
    if legit_served == 0 || legit_other > 0 {
        problems.push("the legitimate client was not always served");
    }
    if story.banned_at.is_none() || story.ban_origin.as_deref() != Some("rate_limit") {
        problems.push("the abusive client was not banned by the rate limit");
    }
    if story.drops_while_banned == 0 {
        problems.push("the kernel dropped nothing from the banned client");
    }
    if story.served_again != Some(CurlOutcome::Status(200)) {
        problems.push("the former abuser was not served again after the ban");
    }
    if problems.is_empty() {
        println!("  result: every step behaved as expected");
        return Ok(());
    }
    bail!("demo failed: {}", problems.join("; "))
}
