//! The XDP program run on crafted frames through `BPF_PROG_TEST_RUN`.
//!
//! Every test loads its own copy of the program with fresh maps, feeds it frames, and checks the
//! returned action, the verdict counters and the per-source counters, both read through the
//! agent's `Blocklist` trait. No interface is involved, but loading a program needs root; outside
//! CI the tests are skipped, with a message, when not run as root.
//!
//! Run with `cargo xtask build-ebpf && cargo test -p integration-tests --test xdp_test_run`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use firewall_agent::kernel::{
    Blocklist, KernelBan, KernelError, KernelFirewall, KernelSettings, PinnedBlocklist,
    SourceTotal, XDP_DROP, XDP_PASS, check_privileges,
};
use firewall_agent::network::IpNetwork;
use firewall_common::{BanKeyV4, BanKeyV6, BanValue, PacketCounter, SourceCounters, Verdict};
use integration_tests::frames::{
    ETHERNET_HEADER_LEN, ETHERTYPE_8021AD, ETHERTYPE_8021Q, ETHERTYPE_IPV4, ETHERTYPE_IPV6,
    FrameBuilder, IPV4_HEADER_LEN, IPV6_HEADER_LEN, ipv4_packet, ipv6_packet,
};
use integration_tests::netns::is_root;

const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OTHER_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const THIRD_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 30);
const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x1);

const HOUR: Duration = Duration::from_secs(3600);

/// Loads a fresh program with `settings`, or returns `None` after printing why when the test
/// does not run as root outside CI.
fn load_with(test: &str, settings: &KernelSettings) -> Option<KernelFirewall> {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run {test} as root: loading an XDP program needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"
        );
        eprintln!("skipping {test}: loading an XDP program needs root");
        return None;
    }
    check_privileges().expect("root has the capabilities to load an XDP program");
    let firewall = KernelFirewall::load(settings)
        .expect("the embedded XDP object loads; build it first with `cargo xtask build-ebpf`");
    Some(firewall)
}

fn load(test: &str) -> Option<KernelFirewall> {
    load_with(test, &unpinned())
}

/// Default settings without pins, so that every test gets fresh maps of its own.
fn unpinned() -> KernelSettings {
    KernelSettings {
        pin: false,
        ..KernelSettings::default()
    }
}

fn in_an_hour() -> Option<SystemTime> {
    Some(SystemTime::now() + HOUR)
}

fn run(firewall: &mut KernelFirewall, frame: &[u8]) -> u32 {
    firewall
        .test_run(frame)
        .expect("BPF_PROG_TEST_RUN accepts the frame")
}

fn verdict_counter(firewall: &KernelFirewall, verdict: Verdict) -> PacketCounter {
    let totals = firewall
        .verdict_totals()
        .expect("the verdict counters are readable");
    let total = totals
        .iter()
        .find(|total| total.verdict == verdict)
        .expect("every verdict has a counter");
    total.counter
}

/// Asserts that exactly one frame of `frame_len` bytes was counted, under `verdict`.
fn assert_single_verdict(firewall: &KernelFirewall, verdict: Verdict, frame_len: usize) {
    let frame_len = u64::try_from(frame_len).expect("frame length fits u64");
    for other in Verdict::ALL {
        let counter = verdict_counter(firewall, other);
        if other == verdict {
            assert_eq!(counter.packets, 1, "packets counted as {}", other.label());
            assert_eq!(
                counter.bytes,
                frame_len,
                "bytes counted as {}",
                other.label()
            );
        } else {
            assert_eq!(counter.packets, 0, "packets counted as {}", other.label());
            assert_eq!(counter.bytes, 0, "bytes counted as {}", other.label());
        }
    }
}

fn sources(firewall: &KernelFirewall) -> Vec<SourceTotal> {
    firewall
        .top_sources(100)
        .expect("the per-source counters are readable")
}

/// Asserts that `addr` is the only source counted, with `expected` counters.
fn assert_single_source(firewall: &KernelFirewall, addr: IpAddr, expected: SourceCounters) {
    let sources = sources(firewall);
    assert_eq!(sources.len(), 1, "sources counted: {sources:?}");
    assert_eq!(sources[0].addr, addr);
    assert_eq!(sources[0].counters, expected);
}

fn passed_once(frame_len: usize) -> SourceCounters {
    SourceCounters {
        passed_packets: 1,
        passed_bytes: u64::try_from(frame_len).expect("frame length fits u64"),
        ..SourceCounters::default()
    }
}

fn dropped_once(frame_len: usize) -> SourceCounters {
    SourceCounters {
        dropped_packets: 1,
        dropped_bytes: u64::try_from(frame_len).expect("frame length fits u64"),
        ..SourceCounters::default()
    }
}

/// Asserts that a frame passed as malformed or not IP, without a per-source count.
fn assert_passed_unclassified(firewall: &mut KernelFirewall, frame: &[u8], verdict: Verdict) {
    assert_eq!(run(firewall, frame), XDP_PASS);
    assert_single_verdict(firewall, verdict, frame.len());
    assert!(sources(firewall).is_empty(), "no source is counted");
}

#[test]
fn unbanned_ipv4_passes() {
    let Some(mut firewall) = load("unbanned_ipv4_passes") else {
        return;
    };
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();

    assert_eq!(run(&mut firewall, &frame), XDP_PASS);

    assert_single_verdict(&firewall, Verdict::Passed, frame.len());
    assert_single_source(&firewall, CLIENT_V4.into(), passed_once(frame.len()));
}

#[test]
fn banned_ipv4_drops() {
    let Some(mut firewall) = load("banned_ipv4_drops") else {
        return;
    };
    firewall
        .ban(CLIENT_V4.into(), in_an_hour())
        .expect("ban inserted");
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();

    assert_eq!(run(&mut firewall, &frame), XDP_DROP);

    assert_single_verdict(&firewall, Verdict::DroppedBanned, frame.len());
    assert_single_source(&firewall, CLIENT_V4.into(), dropped_once(frame.len()));
}

#[test]
fn ban_of_other_source_passes() {
    let Some(mut firewall) = load("ban_of_other_source_passes") else {
        return;
    };
    firewall
        .ban(OTHER_CLIENT_V4.into(), None)
        .expect("ban inserted");
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();

    assert_eq!(run(&mut firewall, &frame), XDP_PASS);

    assert_single_verdict(&firewall, Verdict::Passed, frame.len());
    assert_single_source(&firewall, CLIENT_V4.into(), passed_once(frame.len()));
}

#[test]
fn unbanned_ipv6_passes() {
    let Some(mut firewall) = load("unbanned_ipv6_passes") else {
        return;
    };
    let frame = FrameBuilder::ipv6(CLIENT_V6, SERVER_V6).build();

    assert_eq!(run(&mut firewall, &frame), XDP_PASS);

    assert_single_verdict(&firewall, Verdict::Passed, frame.len());
    assert_single_source(&firewall, CLIENT_V6.into(), passed_once(frame.len()));
}

#[test]
fn banned_ipv6_drops() {
    let Some(mut firewall) = load("banned_ipv6_drops") else {
        return;
    };
    firewall
        .ban(CLIENT_V6.into(), in_an_hour())
        .expect("ban inserted");
    let frame = FrameBuilder::ipv6(CLIENT_V6, SERVER_V6).build();

    assert_eq!(run(&mut firewall, &frame), XDP_DROP);

    assert_single_verdict(&firewall, Verdict::DroppedBanned, frame.len());
    assert_single_source(&firewall, CLIENT_V6.into(), dropped_once(frame.len()));
}

#[test]
fn expired_ban_passes() {
    let Some(mut firewall) = load("expired_ban_passes") else {
        return;
    };
    let expired = SystemTime::now() - Duration::from_secs(1);
    firewall
        .ban(CLIENT_V4.into(), Some(expired))
        .expect("an expired ban is still inserted");
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();

    assert_eq!(run(&mut firewall, &frame), XDP_PASS);

    assert_single_verdict(&firewall, Verdict::Passed, frame.len());
    assert_single_source(&firewall, CLIENT_V4.into(), passed_once(frame.len()));
}

#[test]
fn ban_expiring_during_run_starts_passing() {
    let Some(mut firewall) = load("ban_expiring_during_run_starts_passing") else {
        return;
    };
    let expires_at = SystemTime::now() + Duration::from_secs(1);
    firewall
        .ban(CLIENT_V6.into(), Some(expires_at))
        .expect("ban inserted");
    let frame = FrameBuilder::ipv6(CLIENT_V6, SERVER_V6).build();

    assert_eq!(
        run(&mut firewall, &frame),
        XDP_DROP,
        "the ban holds before it expires"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        run(&mut firewall, &frame),
        XDP_PASS,
        "the ban lapses without the agent"
    );

    let dropped = verdict_counter(&firewall, Verdict::DroppedBanned);
    let passed = verdict_counter(&firewall, Verdict::Passed);
    assert_eq!(dropped.packets, 1);
    assert_eq!(passed.packets, 1);
    let sources = sources(&firewall);
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].counters.dropped_packets, 1);
    assert_eq!(sources[0].counters.passed_packets, 1);
}

#[test]
fn never_expiring_ban_drops() {
    let Some(mut firewall) = load("never_expiring_ban_drops") else {
        return;
    };
    firewall.ban(CLIENT_V6.into(), None).expect("ban inserted");
    let frame = FrameBuilder::ipv6(CLIENT_V6, SERVER_V6).build();

    assert_eq!(run(&mut firewall, &frame), XDP_DROP);

    assert_single_verdict(&firewall, Verdict::DroppedBanned, frame.len());
    assert_single_source(&firewall, CLIENT_V6.into(), dropped_once(frame.len()));
}

#[test]
fn unban_restores_passing() {
    let Some(mut firewall) = load("unban_restores_passing") else {
        return;
    };
    firewall.ban(CLIENT_V4.into(), None).expect("ban inserted");
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();
    assert_eq!(run(&mut firewall, &frame), XDP_DROP);

    assert!(firewall.unban(CLIENT_V4.into()).expect("ban removed"));
    assert!(
        !firewall
            .unban(CLIENT_V4.into())
            .expect("second removal is not an error")
    );
    assert_eq!(run(&mut firewall, &frame), XDP_PASS);

    let frame_len = u64::try_from(frame.len()).expect("frame length fits u64");
    let expected = SourceCounters {
        passed_packets: 1,
        passed_bytes: frame_len,
        dropped_packets: 1,
        dropped_bytes: frame_len,
    };
    assert_single_source(&firewall, CLIENT_V4.into(), expected);
}

#[test]
fn truncated_ethernet_passes_as_truncated() {
    let Some(mut firewall) = load("truncated_ethernet_passes_as_truncated") else {
        return;
    };
    // BPF_PROG_TEST_RUN rejects frames shorter than 14 bytes, so the truncation is in a VLAN
    // tag: the header announces 802.1Q but the frame ends two bytes into the tag.
    let tagged = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4)
        .vlan(ETHERTYPE_8021Q, 7)
        .build();
    let frame = &tagged[..ETHERNET_HEADER_LEN + 2];

    assert_passed_unclassified(&mut firewall, frame, Verdict::PassedTruncated);
}

#[test]
fn frame_below_ethernet_header_is_rejected() {
    let Some(mut firewall) = load("frame_below_ethernet_header_is_rejected") else {
        return;
    };
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();

    let error = firewall
        .test_run(&frame[..ETHERNET_HEADER_LEN - 1])
        .expect_err("the kernel rejects a test run on a frame below 14 bytes");

    assert!(matches!(error, KernelError::TestRun { .. }), "{error:?}");
}

#[test]
fn truncated_ipv4_header_passes_as_truncated() {
    let Some(mut firewall) = load("truncated_ipv4_header_passes_as_truncated") else {
        return;
    };
    let full = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();
    // One byte short of the source address's end.
    let frame = &full[..ETHERNET_HEADER_LEN + 15];

    assert_passed_unclassified(&mut firewall, frame, Verdict::PassedTruncated);
}

#[test]
fn ipv4_options_beyond_frame_pass_as_truncated() {
    let Some(mut firewall) = load("ipv4_options_beyond_frame_pass_as_truncated") else {
        return;
    };
    let mut frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();
    // IHL 15 claims a 60-byte header, but the frame ends after 28 bytes of IP.
    frame[ETHERNET_HEADER_LEN] = 0x4f;

    assert_passed_unclassified(&mut firewall, &frame, Verdict::PassedTruncated);
}

#[test]
fn ipv4_ihl_below_five_passes_as_malformed() {
    let Some(mut firewall) = load("ipv4_ihl_below_five_passes_as_malformed") else {
        return;
    };
    firewall.ban(CLIENT_V4.into(), None).expect("ban inserted");
    let mut frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();
    frame[ETHERNET_HEADER_LEN] = 0x44;

    // Even a banned source passes: the header is invalid, so its address is not trusted.
    assert_passed_unclassified(&mut firewall, &frame, Verdict::PassedMalformed);
}

#[test]
fn wrong_ip_version_passes_as_malformed() {
    let Some(mut firewall) = load("wrong_ip_version_passes_as_malformed") else {
        return;
    };
    let mut frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();
    // An IPv4 EtherType in front of a header that says version 6.
    frame[ETHERNET_HEADER_LEN] = 0x65;

    assert_passed_unclassified(&mut firewall, &frame, Verdict::PassedMalformed);
}

#[test]
fn truncated_invalid_ipv4_passes_as_malformed() {
    let Some(mut firewall) = load("truncated_invalid_ipv4_passes_as_malformed") else {
        return;
    };
    let full = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();
    // Ten bytes of IP header, so the frame is both truncated and invalid.
    let faults = [(0x65, "version 6"), (0x44, "IHL of 4")];

    for (runs, (version_ihl, fault)) in (1..).zip(faults) {
        let mut frame = full[..ETHERNET_HEADER_LEN + 10].to_vec();
        frame[ETHERNET_HEADER_LEN] = version_ihl;

        assert_eq!(run(&mut firewall, &frame), XDP_PASS, "{fault}");
        let malformed = verdict_counter(&firewall, Verdict::PassedMalformed);
        assert_eq!(malformed.packets, runs, "{fault}");
        let truncated = verdict_counter(&firewall, Verdict::PassedTruncated);
        assert_eq!(truncated.packets, 0, "{fault}");
    }
}

#[test]
fn truncated_ipv6_header_passes_as_truncated() {
    let Some(mut firewall) = load("truncated_ipv6_header_passes_as_truncated") else {
        return;
    };
    let full = FrameBuilder::ipv6(CLIENT_V6, SERVER_V6).build();
    let frame = &full[..ETHERNET_HEADER_LEN + IPV6_HEADER_LEN - 1];

    assert_passed_unclassified(&mut firewall, frame, Verdict::PassedTruncated);
}

#[test]
fn arp_passes_as_not_ip() {
    let Some(mut firewall) = load("arp_passes_as_not_ip") else {
        return;
    };
    let frame = FrameBuilder::arp_request(CLIENT_V4, SERVER_V4).build();

    assert_passed_unclassified(&mut firewall, &frame, Verdict::PassedNotIp);
}

#[test]
fn vlan_tagged_banned_ipv4_drops() {
    let Some(mut firewall) = load("vlan_tagged_banned_ipv4_drops") else {
        return;
    };
    firewall
        .ban(CLIENT_V4.into(), in_an_hour())
        .expect("ban inserted");
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4)
        .vlan(ETHERTYPE_8021Q, 42)
        .build();

    assert_eq!(run(&mut firewall, &frame), XDP_DROP);

    assert_single_verdict(&firewall, Verdict::DroppedBanned, frame.len());
    assert_single_source(&firewall, CLIENT_V4.into(), dropped_once(frame.len()));
}

#[test]
fn double_tagged_banned_ipv6_drops() {
    let Some(mut firewall) = load("double_tagged_banned_ipv6_drops") else {
        return;
    };
    firewall
        .ban(CLIENT_V6.into(), in_an_hour())
        .expect("ban inserted");
    let frame = FrameBuilder::ipv6(CLIENT_V6, SERVER_V6)
        .vlan(ETHERTYPE_8021AD, 100)
        .vlan(ETHERTYPE_8021Q, 42)
        .build();

    assert_eq!(run(&mut firewall, &frame), XDP_DROP);

    assert_single_verdict(&firewall, Verdict::DroppedBanned, frame.len());
    assert_single_source(&firewall, CLIENT_V6.into(), dropped_once(frame.len()));
}

#[test]
fn third_vlan_tag_passes_as_not_ip() {
    let Some(mut firewall) = load("third_vlan_tag_passes_as_not_ip") else {
        return;
    };
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4)
        .vlan(ETHERTYPE_8021AD, 100)
        .vlan(ETHERTYPE_8021Q, 42)
        .vlan(ETHERTYPE_8021Q, 43)
        .build();

    assert_passed_unclassified(&mut firewall, &frame, Verdict::PassedNotIp);
}

#[test]
fn ipv4_mapped_ban_drops_ipv4() {
    let Some(mut firewall) = load("ipv4_mapped_ban_drops_ipv4") else {
        return;
    };
    let mapped = IpAddr::V6(CLIENT_V4.to_ipv6_mapped());
    firewall.ban(mapped.into(), None).expect("ban inserted");
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();

    assert_eq!(run(&mut firewall, &frame), XDP_DROP);

    assert_single_verdict(&firewall, Verdict::DroppedBanned, frame.len());
    assert!(firewall.unban(CLIENT_V4.into()).expect("ban removed"));
}

#[test]
fn ipv4_mapped_ipv6_source_meets_ipv4_ban() {
    let Some(mut firewall) = load("ipv4_mapped_ipv6_source_meets_ipv4_ban") else {
        return;
    };
    firewall.ban(CLIENT_V4.into(), None).expect("ban inserted");
    let frame = FrameBuilder::ipv6(CLIENT_V4.to_ipv6_mapped(), SERVER_V6).build();

    assert_eq!(run(&mut firewall, &frame), XDP_DROP);

    assert_single_verdict(&firewall, Verdict::DroppedBanned, frame.len());
    assert_single_source(&firewall, CLIENT_V4.into(), dropped_once(frame.len()));
}

#[test]
fn ipv6_source_like_mapped_stays_ipv6() {
    let Some(mut firewall) = load("ipv6_source_like_mapped_stays_ipv6") else {
        return;
    };
    firewall
        .ban(THIRD_CLIENT_V4.into(), None)
        .expect("ban inserted");
    let [a, b, c, d] = THIRD_CLIENT_V4.octets();
    let (high, low) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
    // Each shares the last 32 bits with the banned IPv4 source but is not IPv4-mapped: the
    // first has a non-zero first half, the second a single set bit in it, and the third is
    // IPv4-compatible (`::a.b.c.d`).
    let lookalikes = [
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0xffff, high, low),
        Ipv6Addr::new(0, 0, 0, 1, 0, 0xffff, high, low),
        THIRD_CLIENT_V4.to_ipv6_compatible(),
    ];

    for source in lookalikes {
        let frame = FrameBuilder::ipv6(source, SERVER_V6).build();
        assert_eq!(run(&mut firewall, &frame), XDP_PASS, "source {source}");
    }

    firewall
        .ban(lookalikes[0].into(), None)
        .expect("ban inserted");
    let frame = FrameBuilder::ipv6(lookalikes[0], SERVER_V6).build();
    assert_eq!(run(&mut firewall, &frame), XDP_DROP);
}

#[test]
fn counters_add_up_over_frames() {
    let Some(mut firewall) = load("counters_add_up_over_frames") else {
        return;
    };
    let untagged = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();
    let tagged = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4)
        .vlan(ETHERTYPE_8021Q, 42)
        .build();

    assert_eq!(run(&mut firewall, &untagged), XDP_PASS);
    assert_eq!(run(&mut firewall, &tagged), XDP_PASS);

    let bytes = u64::try_from(untagged.len() + tagged.len()).expect("length fits u64");
    let passed = verdict_counter(&firewall, Verdict::Passed);
    assert_eq!(passed.packets, 2);
    assert_eq!(passed.bytes, bytes);
    let expected = SourceCounters {
        passed_packets: 2,
        passed_bytes: bytes,
        ..SourceCounters::default()
    };
    assert_single_source(&firewall, CLIENT_V4.into(), expected);
}

#[test]
fn top_sources_orders_by_packets() {
    let Some(mut firewall) = load("top_sources_orders_by_packets") else {
        return;
    };
    let sends = [(CLIENT_V4, 3), (OTHER_CLIENT_V4, 1), (THIRD_CLIENT_V4, 2)];
    for (source, count) in sends {
        let frame = FrameBuilder::ipv4(source, SERVER_V4).build();
        for _ in 0..count {
            assert_eq!(run(&mut firewall, &frame), XDP_PASS);
        }
    }

    let top = firewall
        .top_sources(2)
        .expect("the per-source counters are readable");

    let addrs: Vec<IpAddr> = top.iter().map(|source| source.addr).collect();
    assert_eq!(
        addrs,
        [IpAddr::from(CLIENT_V4), IpAddr::from(THIRD_CLIENT_V4)]
    );
    assert_eq!(top[0].counters.passed_packets, 3);
    assert_eq!(top[1].counters.passed_packets, 2);
}

#[test]
fn ban_map_capacity_comes_from_settings() {
    let settings = KernelSettings {
        bans_max_entries: 2,
        ..unpinned()
    };
    let Some(firewall) = load_with("ban_map_capacity_comes_from_settings", &settings) else {
        return;
    };
    firewall
        .ban(CLIENT_V4.into(), None)
        .expect("first ban fits");
    firewall
        .ban(OTHER_CLIENT_V4.into(), None)
        .expect("second ban fits");
    firewall
        .ban(CLIENT_V4.into(), in_an_hour())
        .expect("replacing a ban in a full map succeeds");

    let error = firewall
        .ban(THIRD_CLIENT_V4.into(), None)
        .expect_err("a third ban does not fit");

    assert!(
        matches!(error, KernelError::MapFull { max_entries: 2, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("bans_max_entries"));
}

#[test]
fn ipv4_header_with_options_passes() {
    let Some(mut firewall) = load("ipv4_header_with_options_passes") else {
        return;
    };
    // IHL 6 with four bytes of options (four no-operation options) before the payload.
    let mut frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();
    let options_at = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN;
    frame.splice(options_at..options_at, [1u8, 1, 1, 1]);
    frame[ETHERNET_HEADER_LEN] = 0x46;
    assert_eq!(&frame[12..14], &ETHERTYPE_IPV4.to_be_bytes());

    assert_eq!(run(&mut firewall, &frame), XDP_PASS);

    assert_single_verdict(&firewall, Verdict::Passed, frame.len());
    assert_single_source(&firewall, CLIENT_V4.into(), passed_once(frame.len()));
}

fn network(text: &str) -> IpNetwork {
    text.parse().expect("valid address or range")
}

#[test]
fn range_ban_drops_ipv4_source() {
    let Some(mut firewall) = load("range_ban_drops_ipv4_source") else {
        return;
    };
    firewall
        .ban(network("192.0.2.0/24"), in_an_hour())
        .expect("range ban inserted");
    let inside = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();
    let outside = FrameBuilder::ipv4(THIRD_CLIENT_V4, SERVER_V4).build();

    assert_eq!(run(&mut firewall, &inside), XDP_DROP);
    assert_eq!(run(&mut firewall, &outside), XDP_PASS);

    let totals = firewall.verdict_totals().expect("verdicts readable");
    let packets = |verdict: Verdict| totals[verdict as usize].counter.packets;
    assert_eq!(packets(Verdict::DroppedBannedRange), 1);
    assert_eq!(packets(Verdict::Passed), 1);
    assert_eq!(packets(Verdict::DroppedBanned), 0);
}

#[test]
fn range_ban_drops_ipv6_source() {
    let Some(mut firewall) = load("range_ban_drops_ipv6_source") else {
        return;
    };
    firewall
        .ban(network("2001:db8::/64"), None)
        .expect("range ban inserted");
    let inside = FrameBuilder::ipv6(CLIENT_V6, SERVER_V6).build();
    let outside_source: Ipv6Addr = "2001:db8:0:1::10".parse().expect("valid address");
    let outside = FrameBuilder::ipv6(outside_source, SERVER_V6).build();

    assert_eq!(run(&mut firewall, &inside), XDP_DROP);
    assert_eq!(run(&mut firewall, &outside), XDP_PASS);
    assert!(
        firewall
            .unban(network("2001:db8::/64"))
            .expect("range removed")
    );
    assert_eq!(run(&mut firewall, &inside), XDP_PASS);
}

#[test]
fn expired_range_ban_passes() {
    let Some(mut firewall) = load("expired_range_ban_passes") else {
        return;
    };
    let just_expired = SystemTime::now() - Duration::from_secs(1);
    firewall
        .ban(network("192.0.2.0/24"), Some(just_expired))
        .expect("range ban inserted");
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();

    assert_eq!(run(&mut firewall, &frame), XDP_PASS);
    assert_single_verdict(&firewall, Verdict::Passed, frame.len());
}

#[test]
fn allowlist_beats_exact_and_range_bans() {
    let Some(mut firewall) = load("allowlist_beats_exact_and_range_bans") else {
        return;
    };
    firewall.ban(CLIENT_V4.into(), None).expect("ban inserted");
    firewall
        .ban(network("192.0.2.0/24"), None)
        .expect("range ban inserted");
    firewall
        .allow(network("192.0.2.8/29"))
        .expect("allowlist entry inserted");
    let allowed = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();
    let banned = FrameBuilder::ipv4(OTHER_CLIENT_V4, SERVER_V4).build();

    assert_eq!(run(&mut firewall, &allowed), XDP_PASS);
    assert_eq!(run(&mut firewall, &banned), XDP_DROP);

    let totals = firewall.verdict_totals().expect("verdicts readable");
    assert_eq!(
        totals[Verdict::PassedAllowlisted as usize].counter.packets,
        1
    );
    assert_eq!(
        totals[Verdict::DroppedBannedRange as usize].counter.packets,
        1
    );

    assert!(
        firewall
            .disallow(network("192.0.2.8/29"))
            .expect("entry removed")
    );
    assert_eq!(run(&mut firewall, &allowed), XDP_DROP);
}

#[test]
fn allowlist_beats_ipv6_ban() {
    let Some(mut firewall) = load("allowlist_beats_ipv6_ban") else {
        return;
    };
    firewall.ban(CLIENT_V6.into(), None).expect("ban inserted");
    firewall
        .allow(CLIENT_V6.into())
        .expect("allowlist entry inserted");
    let frame = FrameBuilder::ipv6(CLIENT_V6, SERVER_V6).build();

    assert_eq!(run(&mut firewall, &frame), XDP_PASS);
    assert_single_verdict(&firewall, Verdict::PassedAllowlisted, frame.len());
}

#[test]
fn full_range_trie_reports_error() {
    let settings = KernelSettings {
        ban_ranges_max_entries: 1,
        ..unpinned()
    };
    let Some(firewall) = load_with("full_range_trie_reports_error", &settings) else {
        return;
    };
    firewall
        .ban(network("192.0.2.0/24"), None)
        .expect("first range fits");

    let error = firewall
        .ban(network("203.0.113.0/24"), None)
        .expect_err("a second range does not fit");

    assert!(
        matches!(error, KernelError::MapFull { max_entries: 1, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("ban_ranges_max_entries"));
}

/// IP protocol numbers (IANA) of the headers the fragment frames carry.
const IPPROTO_UDP: u8 = 17;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;

#[test]
fn every_ipv4_fragment_of_banned_source_drops() {
    let Some(mut firewall) = load("every_ipv4_fragment_of_banned_source_drops") else {
        return;
    };
    firewall.ban(CLIENT_V4.into(), None).expect("ban inserted");

    let mut first = ipv4_packet(CLIENT_V4, SERVER_V4, IPPROTO_UDP, &[0; 16]);
    first[6..8].copy_from_slice(&0x2000u16.to_be_bytes()); // more fragments, offset 0
    let mut later = ipv4_packet(CLIENT_V4, SERVER_V4, IPPROTO_UDP, &[0; 16]);
    later[6..8].copy_from_slice(&0x0002u16.to_be_bytes()); // last fragment, offset 16 bytes

    for packet in [first, later] {
        let frame = FrameBuilder::new(ETHERTYPE_IPV4, packet).build();
        assert_eq!(run(&mut firewall, &frame), XDP_DROP);
    }
    assert_eq!(
        verdict_counter(&firewall, Verdict::DroppedBanned).packets,
        2
    );
}

#[test]
fn ipv6_fragment_and_extension_chain_drop() {
    let Some(mut firewall) = load("ipv6_fragment_and_extension_chain_drop") else {
        return;
    };
    firewall.ban(CLIENT_V6.into(), None).expect("ban inserted");

    // A later fragment: fragment header (next header UDP, offset 8 units, no more fragments).
    let fragment_header = [IPPROTO_UDP, 0, 0, 0x40, 0, 0, 0, 1];
    let fragment = ipv6_packet(CLIENT_V6, SERVER_V6, IPV6_FRAGMENT, &fragment_header);
    // Hop-by-hop options, then a routing header, then the fragment header.
    let mut chain = vec![IPV6_ROUTING, 0, 1, 4, 0, 0, 0, 0];
    chain.extend_from_slice(&[IPV6_FRAGMENT, 0, 0, 0, 0, 0, 0, 0]);
    chain.extend_from_slice(&fragment_header);
    let chained = ipv6_packet(CLIENT_V6, SERVER_V6, IPV6_HOP_BY_HOP, &chain);

    for packet in [fragment, chained] {
        let frame = FrameBuilder::new(ETHERTYPE_IPV6, packet).build();
        assert_eq!(run(&mut firewall, &frame), XDP_DROP);
    }
    assert_eq!(
        verdict_counter(&firewall, Verdict::DroppedBanned).packets,
        2
    );
}

#[test]
fn qinq_tagged_range_ban_drops() {
    let Some(mut firewall) = load("qinq_tagged_range_ban_drops") else {
        return;
    };
    firewall
        .ban(network("192.0.2.0/28"), None)
        .expect("range ban inserted");
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4)
        .vlan(ETHERTYPE_8021AD, 100)
        .vlan(ETHERTYPE_8021Q, 7)
        .build();

    assert_eq!(run(&mut firewall, &frame), XDP_DROP);
    assert_single_verdict(&firewall, Verdict::DroppedBannedRange, frame.len());
}

#[test]
fn million_and_one_bans_report_full_map() {
    const CAPACITY: u32 = 1_000_000;
    let settings = KernelSettings {
        bans_max_entries: CAPACITY,
        ..unpinned()
    };
    let Some(mut firewall) = load_with("million_and_one_bans_report_full_map", &settings) else {
        return;
    };

    // IPv6 sources, because 2001:db8::/32 has room for a million documentation addresses.
    let source = |index: u32| {
        Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000_u128 + u128::from(index))
    };
    for index in 0..CAPACITY {
        firewall
            .ban(source(index).into(), None)
            .unwrap_or_else(|error| panic!("ban {index} of {CAPACITY} fits: {error}"));
    }
    let error = firewall
        .ban(source(CAPACITY).into(), None)
        .expect_err("ban 1,000,001 does not fit");

    assert!(
        matches!(
            error,
            KernelError::MapFull {
                max_entries: CAPACITY,
                ..
            }
        ),
        "{error:?}"
    );
    let frame = FrameBuilder::ipv6(source(CAPACITY), SERVER_V6).build();
    assert_eq!(run(&mut firewall, &frame), XDP_PASS);
    let frame = FrameBuilder::ipv6(source(CAPACITY - 1), SERVER_V6).build();
    assert_eq!(run(&mut firewall, &frame), XDP_DROP);
}

/// A pin directory of its own for one test, removed with its pins on drop.
struct TestPins(std::path::PathBuf);

impl TestPins {
    fn new(test: &str) -> Self {
        let path =
            std::path::PathBuf::from(format!("/sys/fs/bpf/fw-test-{}-{test}", std::process::id()));
        let _ = firewall_agent::kernel::remove_pins(&path);
        Self(path)
    }

    fn settings(&self, bans_max_entries: u32) -> KernelSettings {
        KernelSettings {
            pin: true,
            pin_dir: self.0.clone(),
            bans_max_entries,
            ..KernelSettings::default()
        }
    }
}

impl Drop for TestPins {
    fn drop(&mut self) {
        if let Err(error) = firewall_agent::kernel::remove_pins(&self.0) {
            eprintln!("failed to remove {}: {error}", self.0.display());
        }
    }
}

#[test]
fn pinned_bans_outlive_the_program() {
    if load("pinned_bans_outlive_the_program").is_none() {
        return;
    }
    let pins = TestPins::new("outlive");
    let first = KernelFirewall::load(&pins.settings(16)).expect("first load pins the maps");
    first.ban(CLIENT_V4.into(), None).expect("ban inserted");
    drop(first);

    let mut second = KernelFirewall::load(&pins.settings(16)).expect("second load reuses the pins");
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();

    assert_eq!(run(&mut second, &frame), XDP_DROP);
}

#[test]
fn pinned_map_of_other_capacity_is_rejected() {
    if load("pinned_map_of_other_capacity_is_rejected").is_none() {
        return;
    }
    let pins = TestPins::new("capacity");
    drop(KernelFirewall::load(&pins.settings(16)).expect("first load pins the maps"));

    let error = KernelFirewall::load(&pins.settings(32))
        .err()
        .expect("a capacity change must not reuse the pins");

    assert!(
        matches!(
            error,
            KernelError::PinnedCapacity {
                pinned: 16,
                configured: 32,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("fwctl detach"), "{error}");
}

#[test]
fn pins_of_other_schema_are_rejected() {
    if load("pins_of_other_schema_are_rejected").is_none() {
        return;
    }
    let pins = TestPins::new("schema");
    drop(KernelFirewall::load(&pins.settings(16)).expect("first load pins the maps"));
    let current = pins
        .0
        .join(format!("schema_v{}", firewall_common::PIN_SCHEMA_VERSION));
    std::fs::remove_dir(&current).expect("schema marker removed");
    std::fs::create_dir(pins.0.join("schema_v0")).expect("older schema marker created");

    let error = KernelFirewall::load(&pins.settings(16))
        .err()
        .expect("pins of another schema must not be reused");

    assert!(
        matches!(&error, KernelError::PinSchemaMismatch { found, .. } if found == "0"),
        "{error:?}"
    );
}

#[test]
fn loopback_allowlist_beats_ban() {
    let Some(mut firewall) = load("loopback_allowlist_beats_ban") else {
        return;
    };
    let loopback_client = Ipv4Addr::new(127, 0, 0, 5);
    firewall
        .allow(network("127.0.0.0/8"))
        .expect("allowlist entry inserted");
    firewall
        .ban(loopback_client.into(), None)
        .expect("ban inserted");
    firewall.ban(CLIENT_V4.into(), None).expect("ban inserted");
    let loopback = FrameBuilder::ipv4(loopback_client, SERVER_V4).build();
    let banned = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();

    // Loopback entries leave the summary at zero, so the banned source skips the trie, while a
    // loopback source is still looked up in it.
    assert_eq!(run(&mut firewall, &loopback), XDP_PASS);
    assert_eq!(run(&mut firewall, &banned), XDP_DROP);

    let totals = firewall.verdict_totals().expect("verdicts readable");
    assert_eq!(
        totals[Verdict::PassedAllowlisted as usize].counter.packets,
        1
    );
    assert_eq!(totals[Verdict::DroppedBanned as usize].counter.packets, 1);
}

#[test]
fn allowlist_of_other_family_keeps_ban() {
    let Some(mut firewall) = load("allowlist_of_other_family_keeps_ban") else {
        return;
    };
    firewall
        .allow(network("2001:db8::/32"))
        .expect("allowlist entry inserted");
    firewall.ban(CLIENT_V4.into(), None).expect("ban inserted");
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();

    assert_eq!(run(&mut firewall, &frame), XDP_DROP);
    assert_single_verdict(&firewall, Verdict::DroppedBanned, frame.len());
}

#[test]
fn allowlist_added_after_ban_wins() {
    let Some(mut firewall) = load("allowlist_added_after_ban_wins") else {
        return;
    };
    firewall.ban(CLIENT_V4.into(), None).expect("ban inserted");
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();
    assert_eq!(run(&mut firewall, &frame), XDP_DROP);

    firewall
        .allow(CLIENT_V4.into())
        .expect("allowlist entry inserted");

    assert_eq!(run(&mut firewall, &frame), XDP_PASS);
    let expected = SourceCounters {
        passed_packets: 1,
        passed_bytes: u64::try_from(frame.len()).expect("frame length fits u64"),
        dropped_packets: 1,
        dropped_bytes: u64::try_from(frame.len()).expect("frame length fits u64"),
    };
    assert_single_source(&firewall, CLIENT_V4.into(), expected);
}

#[test]
fn reban_keeps_drop_counts() {
    let Some(mut firewall) = load("reban_keeps_drop_counts") else {
        return;
    };
    firewall
        .ban(CLIENT_V4.into(), in_an_hour())
        .expect("ban inserted");
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();
    assert_eq!(run(&mut firewall, &frame), XDP_DROP);

    firewall
        .ban(CLIENT_V4.into(), Some(SystemTime::now() + 2 * HOUR))
        .expect("ban extended");
    assert_eq!(run(&mut firewall, &frame), XDP_DROP);

    let frame_len = u64::try_from(frame.len()).expect("frame length fits u64");
    let expected = SourceCounters {
        dropped_packets: 2,
        dropped_bytes: 2 * frame_len,
        ..SourceCounters::default()
    };
    assert_single_source(&firewall, CLIENT_V4.into(), expected);
}

#[test]
fn kernel_bans_read_back_expiry() {
    let Some(firewall) = load("kernel_bans_read_back_expiry") else {
        return;
    };
    let expires_at = SystemTime::now() + HOUR;
    firewall
        .ban(CLIENT_V4.into(), Some(expires_at))
        .expect("ban inserted");
    firewall
        .ban(network("2001:db8:1::/48"), None)
        .expect("range ban inserted");

    let mut bans = firewall.kernel_bans().expect("bans readable");
    bans.sort_by_key(|ban| ban.network.address());

    assert_eq!(bans.len(), 2, "{bans:?}");
    assert_eq!(bans[0].network, IpNetwork::host(CLIENT_V4.into()));
    let read_back = bans[0].expires_at.expect("the ban expires");
    let skew = read_back
        .duration_since(expires_at)
        .unwrap_or_else(|error| error.duration());
    assert!(skew < Duration::from_secs(1), "expiry off by {skew:?}");
    assert_eq!(bans[1].network, network("2001:db8:1::/48"));
    assert_eq!(bans[1].expires_at, None);
}

#[test]
fn pinned_blocklist_bans_without_agent() {
    if load("pinned_blocklist_bans_without_agent").is_none() {
        return;
    }
    let pins = TestPins::new("offline");
    drop(KernelFirewall::load(&pins.settings(16)).expect("first load pins the maps"));

    let pinned = PinnedBlocklist::open(&pins.0).expect("pinned maps open");
    pinned
        .ban(CLIENT_V4.into(), in_an_hour())
        .expect("ban written into the pinned map");
    drop(pinned);

    let mut firewall = KernelFirewall::load(&pins.settings(16)).expect("pins reused");
    let frame = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();
    assert_eq!(run(&mut firewall, &frame), XDP_DROP);
    let bans = firewall.kernel_bans().expect("bans readable");
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].network, IpNetwork::host(CLIENT_V4.into()));
}

#[test]
fn pinned_blocklist_needs_pins() {
    if load("pinned_blocklist_needs_pins").is_none() {
        return;
    }
    let pins = TestPins::new("missing");

    let error = PinnedBlocklist::open(&pins.0)
        .err()
        .expect("a directory without pins must not open");

    assert!(matches!(error, KernelError::NoPins { .. }), "{error:?}");
    assert!(error.to_string().contains("--pin-dir"), "{error}");
}

/// Returns `count` addresses of 198.51.100.0/24 and 203.0.113.0/24 that fall in one bucket of
/// the firewall's exact IPv4 ban table, found with its seed and size.
fn colliding_addresses(firewall: &KernelFirewall, count: usize) -> Vec<Ipv4Addr> {
    let state = firewall.ban_table_state();
    assert_ne!(
        state.ready, 0,
        "the table is ready once the program is loaded"
    );
    let bucket = |addr: Ipv4Addr| {
        firewall_common::ban_bucket_index(
            u32::from_ne_bytes(addr.octets()),
            state.seed,
            state.bucket_bits,
        )
    };
    let candidates = (1..=254u8)
        .map(|last| Ipv4Addr::new(198, 51, 100, last))
        .chain((1..=254u8).map(|last| Ipv4Addr::new(203, 0, 113, last)));
    let mut by_bucket: std::collections::HashMap<u32, Vec<Ipv4Addr>> =
        std::collections::HashMap::new();
    for addr in candidates {
        let same = by_bucket.entry(bucket(addr)).or_default();
        same.push(addr);
        if same.len() == count {
            return same.clone();
        }
    }
    panic!("508 addresses over the table's buckets give no bucket {count} of them");
}

/// Settings with room for 64 exact bans, so the table has 32 buckets of 4 slots.
fn small_table() -> KernelSettings {
    KernelSettings {
        bans_max_entries: 64,
        ..unpinned()
    }
}

#[test]
fn full_bucket_bans_overflow_and_drop() {
    let Some(mut firewall) = load_with("full_bucket_bans_overflow_and_drop", &small_table()) else {
        return;
    };
    assert_eq!(firewall.ban_table_state().bucket_bits, 5);
    // Seven addresses of one bucket: four fill its slots, two overflow, one stays unbanned.
    let addrs = colliding_addresses(&firewall, 7);
    for addr in &addrs[..6] {
        firewall.ban((*addr).into(), None).expect("ban inserted");
    }
    assert_eq!(firewall.ban_table_state().overflow_v4, 2);
    // Banning an overflowed address again keeps the count exact.
    firewall
        .ban(addrs[5].into(), in_an_hour())
        .expect("ban replaced");
    assert_eq!(firewall.ban_table_state().overflow_v4, 2);

    let frame = |addr: Ipv4Addr| FrameBuilder::ipv4(addr, SERVER_V4).build();
    for addr in &addrs[..6] {
        assert_eq!(run(&mut firewall, &frame(*addr)), XDP_DROP, "{addr}");
    }
    assert_eq!(run(&mut firewall, &frame(addrs[6])), XDP_PASS);

    // Drops of slotted and overflowed bans are both counted per source.
    let frame_len = frame(addrs[0]).len();
    for addr in [addrs[0], addrs[5]] {
        let total = sources(&firewall)
            .into_iter()
            .find(|source| source.addr == IpAddr::V4(addr))
            .expect("the banned source is counted");
        assert_eq!(total.counters, dropped_once(frame_len), "{addr}");
    }

    // A slot freed by an unban goes to the next new ban of the bucket.
    assert!(firewall.unban(addrs[0].into()).expect("ban removed"));
    assert_eq!(run(&mut firewall, &frame(addrs[0])), XDP_PASS);
    assert_eq!(firewall.ban_table_state().overflow_v4, 2);
    firewall.ban(addrs[6].into(), None).expect("ban inserted");
    assert_eq!(firewall.ban_table_state().overflow_v4, 2);
    assert_eq!(run(&mut firewall, &frame(addrs[6])), XDP_DROP);

    // Removing the overflowed bans brings the count to zero, and they pass again.
    for addr in [addrs[4], addrs[5]] {
        assert!(firewall.unban(addr.into()).expect("ban removed"));
        assert_eq!(run(&mut firewall, &frame(addr)), XDP_PASS, "{addr}");
    }
    assert_eq!(firewall.ban_table_state().overflow_v4, 0);
    for addr in [addrs[1], addrs[2], addrs[3], addrs[6]] {
        assert_eq!(run(&mut firewall, &frame(addr)), XDP_DROP, "{addr}");
    }
}

#[test]
fn batched_duplicates_overflow_once() {
    let Some(mut firewall) = load_with("batched_duplicates_overflow_once", &small_table()) else {
        return;
    };
    let addrs = colliding_addresses(&firewall, 6);
    // Every address twice in one batch: the second ban of each finds the first one's place.
    let bans: Vec<KernelBan> = addrs
        .iter()
        .chain(&addrs)
        .map(|addr| KernelBan {
            network: IpNetwork::host((*addr).into()),
            expires_at: None,
        })
        .collect();
    firewall.ban_all(&bans).expect("bans inserted");

    assert_eq!(firewall.ban_table_state().overflow_v4, 2);
    for addr in &addrs {
        let frame = FrameBuilder::ipv4(*addr, SERVER_V4).build();
        assert_eq!(run(&mut firewall, &frame), XDP_DROP, "{addr}");
    }
    let listed = firewall.kernel_bans().expect("bans readable");
    assert_eq!(listed.len(), 6);
}

#[test]
fn unspecified_ipv4_ban_uses_hash_map() {
    // `0.0.0.0` marks a free slot of the table, so its ban must live outside the table.
    let Some(mut firewall) = load("unspecified_ipv4_ban_uses_hash_map") else {
        return;
    };
    firewall
        .ban(Ipv4Addr::UNSPECIFIED.into(), None)
        .expect("ban inserted");
    assert_eq!(firewall.ban_table_state().overflow_v4, 1);

    let frame = FrameBuilder::ipv4(Ipv4Addr::UNSPECIFIED, SERVER_V4).build();
    assert_eq!(run(&mut firewall, &frame), XDP_DROP);
    let other = FrameBuilder::ipv4(CLIENT_V4, SERVER_V4).build();
    assert_eq!(run(&mut firewall, &other), XDP_PASS);
}

#[test]
fn restart_recounts_unslotted_bans() {
    if load("restart_recounts_unslotted_bans").is_none() {
        return;
    }
    let pins = TestPins::new("recount");
    let first = KernelFirewall::load(&pins.settings(16)).expect("first load pins the maps");
    first.ban(CLIENT_V4.into(), None).expect("ban inserted");
    drop(first);

    // A writer that stopped between the hash map and the table left this ban without a slot.
    {
        let data = aya::maps::MapData::from_pin(pins.0.join(firewall_common::MAP_BANS_V4))
            .expect("the pinned hash map opens");
        let mut bans: aya::maps::HashMap<_, BanKeyV4, BanValue> =
            aya::maps::Map::from_map_data(data)
                .expect("a map")
                .try_into()
                .expect("the hash map of exact IPv4 bans");
        bans.insert(
            BanKeyV4 {
                addr: OTHER_CLIENT_V4.octets(),
            },
            BanValue::new(firewall_common::BAN_NEVER_EXPIRES),
            0,
        )
        .expect("ban written into the hash map only");

        let data = aya::maps::MapData::from_pin(pins.0.join(firewall_common::MAP_BANS_V6))
            .expect("the pinned hash map opens");
        let mut bans: aya::maps::HashMap<_, BanKeyV6, BanValue> =
            aya::maps::Map::from_map_data(data)
                .expect("a map")
                .try_into()
                .expect("the hash map of exact IPv6 bans");
        bans.insert(
            BanKeyV6 {
                addr: CLIENT_V6.octets(),
            },
            BanValue::new(firewall_common::BAN_NEVER_EXPIRES),
            0,
        )
        .expect("ban written into the hash map only");
    }

    let mut second = KernelFirewall::load(&pins.settings(16)).expect("second load reuses the pins");
    assert_eq!(second.ban_table_state().overflow_v4, 1);
    assert_eq!(second.ban_table_state().overflow_v6, 1);
    for addr in [CLIENT_V4, OTHER_CLIENT_V4] {
        let frame = FrameBuilder::ipv4(addr, SERVER_V4).build();
        assert_eq!(run(&mut second, &frame), XDP_DROP, "{addr}");
    }
    let frame = FrameBuilder::ipv6(CLIENT_V6, SERVER_V6).build();
    assert_eq!(run(&mut second, &frame), XDP_DROP);
    // Lifting it finds it by its bucket's count, and it passes again.
    assert!(second.unban(OTHER_CLIENT_V4.into()).expect("ban removed"));
    assert_eq!(second.ban_table_state().overflow_v4, 0);
    let frame = FrameBuilder::ipv4(OTHER_CLIENT_V4, SERVER_V4).build();
    assert_eq!(run(&mut second, &frame), XDP_PASS);
}

#[test]
fn metrics_report_ban_table_overflow() {
    let Some(firewall) = load_with("metrics_report_ban_table_overflow", &small_table()) else {
        return;
    };
    for addr in colliding_addresses(&firewall, 5) {
        firewall.ban(addr.into(), None).expect("ban inserted");
    }

    let metrics = firewall_agent::telemetry::Metrics::new(std::sync::Arc::new(firewall));
    let text = metrics.encode().expect("metrics encode");

    assert!(
        text.contains("firewall_kernel_ban_table_overflow{family=\"ipv4\"} 1\n"),
        "{text}"
    );
}

/// Returns `count` addresses of 2001:db8::/64 that fall in one bucket of the firewall's exact
/// IPv6 ban table.
fn colliding_v6_addresses(firewall: &KernelFirewall, count: usize) -> Vec<Ipv6Addr> {
    let state = firewall.ban_table_state();
    let bucket = |addr: Ipv6Addr| {
        let octets = addr.octets();
        let high = u64::from_ne_bytes(octets[..8].try_into().expect("8 bytes"));
        let low = u64::from_ne_bytes(octets[8..].try_into().expect("8 bytes"));
        firewall_common::ban_bucket_index_v6([high, low], state.seed, state.bucket_bits)
    };
    let mut by_bucket: std::collections::HashMap<u32, Vec<Ipv6Addr>> =
        std::collections::HashMap::new();
    for last in 1..=1024u16 {
        let addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last);
        let same = by_bucket.entry(bucket(addr)).or_default();
        same.push(addr);
        if same.len() == count {
            return same.clone();
        }
    }
    panic!("1,024 addresses over the table's buckets give no bucket {count} of them");
}

#[test]
fn full_ipv6_bucket_bans_overflow_and_drop() {
    let Some(mut firewall) = load_with("full_ipv6_bucket_bans_overflow_and_drop", &small_table())
    else {
        return;
    };
    let addrs = colliding_v6_addresses(&firewall, 7);
    for addr in &addrs[..6] {
        firewall.ban((*addr).into(), None).expect("ban inserted");
    }
    let state = firewall.ban_table_state();
    assert_eq!(state.overflow_v6, 2);
    assert_eq!(state.overflow_v4, 0);

    let frame = |addr: Ipv6Addr| FrameBuilder::ipv6(addr, SERVER_V6).build();
    for addr in &addrs[..6] {
        assert_eq!(run(&mut firewall, &frame(*addr)), XDP_DROP, "{addr}");
    }
    assert_eq!(run(&mut firewall, &frame(addrs[6])), XDP_PASS);

    // Drops of slotted and overflowed bans are both counted per source.
    let frame_len = frame(addrs[0]).len();
    for addr in [addrs[0], addrs[5]] {
        let total = sources(&firewall)
            .into_iter()
            .find(|source| source.addr == IpAddr::V6(addr))
            .expect("the banned source is counted");
        assert_eq!(total.counters, dropped_once(frame_len), "{addr}");
    }

    for addr in [addrs[0], addrs[4], addrs[5]] {
        assert!(firewall.unban(addr.into()).expect("ban removed"));
        assert_eq!(run(&mut firewall, &frame(addr)), XDP_PASS, "{addr}");
    }
    assert_eq!(firewall.ban_table_state().overflow_v6, 0);
    for addr in [addrs[1], addrs[2], addrs[3]] {
        assert_eq!(run(&mut firewall, &frame(addr)), XDP_DROP, "{addr}");
    }
}

#[test]
fn batched_ipv6_duplicates_overflow_once() {
    let Some(mut firewall) = load_with("batched_ipv6_duplicates_overflow_once", &small_table())
    else {
        return;
    };
    let addrs = colliding_v6_addresses(&firewall, 6);
    let bans: Vec<KernelBan> = addrs
        .iter()
        .chain(&addrs)
        .map(|addr| KernelBan {
            network: IpNetwork::host((*addr).into()),
            expires_at: None,
        })
        .collect();
    firewall.ban_all(&bans).expect("bans inserted");

    assert_eq!(firewall.ban_table_state().overflow_v6, 2);
    for addr in &addrs {
        let frame = FrameBuilder::ipv6(*addr, SERVER_V6).build();
        assert_eq!(run(&mut firewall, &frame), XDP_DROP, "{addr}");
    }
}

#[test]
fn unspecified_ipv6_ban_uses_hash_map() {
    let Some(mut firewall) = load("unspecified_ipv6_ban_uses_hash_map") else {
        return;
    };
    firewall
        .ban(Ipv6Addr::UNSPECIFIED.into(), None)
        .expect("ban inserted");
    assert_eq!(firewall.ban_table_state().overflow_v6, 1);

    let frame = FrameBuilder::ipv6(Ipv6Addr::UNSPECIFIED, SERVER_V6).build();
    assert_eq!(run(&mut firewall, &frame), XDP_DROP);
    let other = FrameBuilder::ipv6(CLIENT_V6, SERVER_V6).build();
    assert_eq!(run(&mut firewall, &other), XDP_PASS);
}
