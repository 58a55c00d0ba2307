//! Batched ban loading (`BPF_MAP_UPDATE_BATCH`) into the XDP program's real maps, read back
//! through the agent's `Blocklist` trait, and the interface check that runs before loading. No
//! frame is run.
//!
//! Loading a program needs root; outside CI the tests are skipped, with a message, when not
//! run as root. Run with `cargo xtask build-ebpf && cargo test -p integration-tests --test
//! kernel_batch`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use firewall_agent::kernel::{
    Blocklist, KernelBan, KernelError, KernelFirewall, KernelSettings, check_privileges,
};
use firewall_agent::network::IpNetwork;
use integration_tests::netns::is_root;

fn load(test: &str, bans_max_entries: u32) -> Option<KernelFirewall> {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run {test} as root: loading an XDP program needs CAP_BPF and CAP_NET_ADMIN"
        );
        eprintln!("skipping {test}: loading an XDP program needs root");
        return None;
    }
    check_privileges().expect("root has the capabilities to load an XDP program");
    let settings = KernelSettings {
        pin: false,
        bans_max_entries,
        ..KernelSettings::default()
    };
    let firewall = KernelFirewall::load(&settings)
        .expect("the embedded XDP object loads; build it first with `cargo xtask build-ebpf`");
    Some(firewall)
}

/// Returns the `index`-th IPv4 address from 198.18.0.0 (RFC 2544 benchmarking range). These
/// are map keys only, never the source of a frame.
fn v4(index: u32) -> IpAddr {
    Ipv4Addr::from(0xc612_0000 + index).into()
}

/// Returns the `index`-th address of 2001:db8::/32.
fn v6(index: u32) -> IpAddr {
    Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000_u128 + u128::from(index)).into()
}

fn ban(address: IpAddr, expires_at: Option<SystemTime>) -> KernelBan {
    KernelBan {
        network: IpNetwork::host(address),
        expires_at,
    }
}

/// Reads the bans in the kernel maps, by network.
fn kernel_bans(firewall: &KernelFirewall) -> HashMap<IpNetwork, Option<SystemTime>> {
    firewall
        .kernel_bans()
        .expect("the ban maps are readable")
        .into_iter()
        .map(|ban| (ban.network, ban.expires_at))
        .collect()
}

/// Asserts that `actual` is within a second of `expected`: the kernel keeps expiries on the
/// boot clock, so the wall-clock expiry read back is converted twice.
fn assert_near(actual: Option<SystemTime>, expected: SystemTime, network: IpNetwork) {
    let actual = actual.unwrap_or_else(|| panic!("{network} has no expiry"));
    let gap = actual
        .duration_since(expected)
        .or_else(|_| expected.duration_since(actual))
        .unwrap_or_default();
    assert!(
        gap < Duration::from_secs(1),
        "{network}: {actual:?} vs {expected:?}"
    );
}

#[test]
fn batched_bans_read_back_whole() {
    let Some(firewall) = load("batched_bans_read_back_whole", 100_000) else {
        return;
    };
    let expires_at = SystemTime::now() + Duration::from_secs(3600);
    // More than two chunks of 4,096, so that the batch spans several system calls.
    let mut bans: Vec<KernelBan> = (0..10_000)
        .map(|index| ban(v4(index), Some(expires_at)))
        .collect();
    bans.extend((0..5_000).map(|index| ban(v6(index), None)));
    let range: IpNetwork = "203.0.113.0/24".parse().expect("valid range");
    bans.push(KernelBan {
        network: range,
        expires_at: Some(expires_at),
    });

    firewall.ban_all(&bans).expect("every ban fits");

    let stored = kernel_bans(&firewall);
    assert_eq!(stored.len(), bans.len());
    for index in 0..10_000 {
        let network = IpNetwork::host(v4(index));
        assert_near(stored[&network], expires_at, network);
    }
    for index in 0..5_000 {
        let network = IpNetwork::host(v6(index));
        assert_eq!(stored.get(&network), Some(&None), "{network}");
    }
    assert_near(stored[&range], expires_at, range);
}

#[test]
fn batch_replaces_bans_already_in_the_map() {
    let Some(firewall) = load("batch_replaces_bans_already_in_the_map", 100_000) else {
        return;
    };
    let soon = SystemTime::now() + Duration::from_secs(60);
    let later = SystemTime::now() + Duration::from_secs(7200);
    let first: Vec<KernelBan> = (0..3_000).map(|index| ban(v4(index), Some(soon))).collect();
    firewall.ban_all(&first).expect("first batch fits");

    // The first half of the second batch is already in the map and the second half is new.
    let second: Vec<KernelBan> = (1_500..4_500)
        .map(|index| ban(v4(index), Some(later)))
        .collect();
    firewall.ban_all(&second).expect("second batch fits");

    let stored = kernel_bans(&firewall);
    assert_eq!(stored.len(), 4_500);
    for index in 0..1_500 {
        let network = IpNetwork::host(v4(index));
        assert_near(stored[&network], soon, network);
    }
    for index in 1_500..4_500 {
        let network = IpNetwork::host(v4(index));
        assert_near(stored[&network], later, network);
    }
}

#[test]
fn full_map_reports_applied_count() {
    const CAPACITY: u32 = 5_000;
    let Some(firewall) = load("full_map_reports_applied_count", CAPACITY) else {
        return;
    };
    let bans: Vec<KernelBan> = (0..CAPACITY + 1_000)
        .map(|index| ban(v4(index), None))
        .collect();

    let error = firewall.ban_all(&bans).expect_err("1,000 bans do not fit");

    let KernelError::BansStopped {
        applied,
        total,
        ref source,
    } = error
    else {
        panic!("expected BansStopped, got {error:?}");
    };
    assert_eq!(applied, CAPACITY as usize);
    assert_eq!(total, bans.len());
    assert!(
        matches!(
            **source,
            KernelError::MapFull {
                max_entries: CAPACITY,
                ..
            }
        ),
        "{source:?}"
    );
    assert!(error.is_map_full());
    assert!(
        error.to_string().contains("applied 5000 of 6000"),
        "{error}"
    );
    assert_eq!(kernel_bans(&firewall).len(), CAPACITY as usize);
}

/// An interface that exists only in another network namespace is found once the process has
/// entered it with `setns`, as `nsenter --net` does, although `/sys/class/net` still lists the
/// interfaces of the namespace sysfs was mounted in.
#[test]
fn interface_check_follows_the_network_namespace() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root: it creates a network namespace"
        );
        eprintln!("skipping interface_check_follows_the_network_namespace: needs root");
        return;
    }
    let namespace = "fwifcheck";
    let interface = "fwifcheck0";
    let ip = |args: &[&str]| {
        let status = std::process::Command::new("ip")
            .args(args)
            .status()
            .expect("run ip");
        assert!(status.success(), "ip {args:?} failed");
    };
    // Deletes the namespace, and the veth pair with it, however the test ends.
    struct Namespace(&'static str);
    impl Drop for Namespace {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", self.0])
                .status();
        }
    }
    drop(Namespace(namespace));
    ip(&["netns", "add", namespace]);
    let _namespace = Namespace(namespace);
    let peer = format!("{interface}p");
    ip(&[
        "-n", namespace, "link", "add", interface, "type", "veth", "peer", "name", &peer,
    ]);

    let settings = KernelSettings {
        interfaces: vec![interface.to_owned()],
        ..KernelSettings::default()
    };
    let in_root = firewall_agent::kernel::check_interfaces(&settings);
    // A thread of its own enters the namespace, so the test process stays where it was.
    let in_namespace = std::thread::spawn({
        let settings = settings.clone();
        move || {
            let handle =
                std::fs::File::open(format!("/run/netns/{namespace}")).expect("open the namespace");
            nix::sched::setns(handle, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("enter the namespace");
            firewall_agent::kernel::check_interfaces(&settings)
        }
    })
    .join()
    .expect("the namespace thread finishes");

    assert!(
        matches!(in_root, Err(KernelError::InterfaceNotFound { .. })),
        "{in_root:?}"
    );
    assert!(in_namespace.is_ok(), "{in_namespace:?}");
}
