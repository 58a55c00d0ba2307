//! Ethernet frames built byte by byte, to feed the XDP program through `BPF_PROG_TEST_RUN`.
//!
//! The IP packets carry protocol 253, which RFC 3692 reserves for experiments, so no parser
//! beyond the IP header has anything to read. Multi-byte fields are in network byte order.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Length of an untagged Ethernet header.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of one 802.1Q or 802.1ad tag.
pub const VLAN_TAG_LEN: usize = 4;
/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Tag protocol identifier of an 802.1Q (customer) VLAN tag.
pub const ETHERTYPE_8021Q: u16 = 0x8100;
/// Tag protocol identifier of an 802.1ad (service, "QinQ") VLAN tag.
pub const ETHERTYPE_8021AD: u16 = 0x88a8;

/// IP protocol number 253, reserved for experimentation and testing by RFC 3692.
pub const IP_PROTOCOL_EXPERIMENTAL: u8 = 253;

/// Locally administered MAC addresses (bit 1 of the first octet set), so they name no vendor.
const DESTINATION_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SOURCE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Payload of every IP packet built here.
const PAYLOAD: &[u8] = b"xdp-test";

/// An Ethernet frame under construction: optional VLAN tags, an EtherType and a payload.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    /// Tags from the outermost inwards, as (tag protocol identifier, VLAN id).
    vlan_tags: Vec<(u16, u16)>,
    ethertype: u16,
    payload: Vec<u8>,
}

impl FrameBuilder {
    /// Starts a frame carrying an IPv4 packet from `source` to `destination`.
    pub fn ipv4(source: Ipv4Addr, destination: Ipv4Addr) -> Self {
        Self::new(
            ETHERTYPE_IPV4,
            ipv4_packet(source, destination, IP_PROTOCOL_EXPERIMENTAL, PAYLOAD),
        )
    }

    /// Starts a frame carrying an IPv6 packet from `source` to `destination`.
    pub fn ipv6(source: Ipv6Addr, destination: Ipv6Addr) -> Self {
        Self::new(
            ETHERTYPE_IPV6,
            ipv6_packet(source, destination, IP_PROTOCOL_EXPERIMENTAL, PAYLOAD),
        )
    }

    /// Starts a frame carrying an ARP request from `sender` for `target`.
    pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Self {
        Self::new(ETHERTYPE_ARP, arp_request(sender, target))
    }

    /// Starts a frame with any EtherType and payload.
    pub fn new(ethertype: u16, payload: Vec<u8>) -> Self {
        Self {
            vlan_tags: Vec::new(),
            ethertype,
            payload,
        }
    }

    /// Adds a VLAN tag inside the tags added before. `tag_protocol` is
    /// [`ETHERTYPE_8021Q`] or [`ETHERTYPE_8021AD`]; `vlan_id` keeps its low 12 bits.
    pub fn vlan(mut self, tag_protocol: u16, vlan_id: u16) -> Self {
        self.vlan_tags.push((tag_protocol, vlan_id & 0x0fff));
        self
    }

    /// Offset of the IP header (or other payload) in the built frame.
    pub fn payload_offset(&self) -> usize {
        ETHERNET_HEADER_LEN + VLAN_TAG_LEN * self.vlan_tags.len()
    }

    /// Returns the frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(self.payload_offset() + self.payload.len());
        frame.extend_from_slice(&DESTINATION_MAC);
        frame.extend_from_slice(&SOURCE_MAC);

        // A tag is its protocol identifier, then the tag control field with priority 0, drop
        // eligible indicator 0 and the VLAN id. The next tag or the EtherType follows it.
        for &(tag_protocol, vlan_id) in &self.vlan_tags {
            frame.extend_from_slice(&tag_protocol.to_be_bytes());
            frame.extend_from_slice(&vlan_id.to_be_bytes());
        }
        frame.extend_from_slice(&self.ethertype.to_be_bytes());
        frame.extend_from_slice(&self.payload);
        frame
    }
}

/// Builds an IPv4 packet: a 20-byte header with a valid checksum, then `payload`.
pub fn ipv4_packet(
    source: Ipv4Addr,
    destination: Ipv4Addr,
    protocol: u8,
    payload: &[u8],
) -> Vec<u8> {
    let total_len =
        u16::try_from(IPV4_HEADER_LEN + payload.len()).expect("test payloads are far below 64 KiB");

    let mut packet = Vec::with_capacity(usize::from(total_len));
    packet.push(0x45); // version 4, IHL 5 words
    packet.push(0); // DSCP and ECN
    packet.extend_from_slice(&total_len.to_be_bytes());
    packet.extend_from_slice(&[0, 0]); // identification
    packet.extend_from_slice(&[0x40, 0]); // don't fragment, fragment offset 0
    packet.push(64); // time to live
    packet.push(protocol);
    packet.extend_from_slice(&[0, 0]); // checksum, filled in below
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&destination.octets());

    let checksum = internet_checksum(&packet);
    packet[10..12].copy_from_slice(&checksum.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// Builds an IPv6 packet: the 40-byte fixed header, then `payload`.
pub fn ipv6_packet(
    source: Ipv6Addr,
    destination: Ipv6Addr,
    next_header: u8,
    payload: &[u8],
) -> Vec<u8> {
    let payload_len = u16::try_from(payload.len()).expect("test payloads are far below 64 KiB");

    let mut packet = Vec::with_capacity(IPV6_HEADER_LEN + payload.len());
    packet.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, traffic class 0, flow label 0
    packet.extend_from_slice(&payload_len.to_be_bytes());
    packet.push(next_header);
    packet.push(64); // hop limit
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&destination.octets());
    packet.extend_from_slice(payload);
    packet
}

/// Builds the 28-byte ARP request for IPv4 over Ethernet (RFC 826).
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut packet = Vec::with_capacity(28);
    packet.extend_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    packet.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes()); // protocol type
    packet.push(6); // hardware address length
    packet.push(4); // protocol address length
    packet.extend_from_slice(&1u16.to_be_bytes()); // operation: request
    packet.extend_from_slice(&SOURCE_MAC);
    packet.extend_from_slice(&sender.octets());
    packet.extend_from_slice(&[0; 6]); // target hardware address, unknown
    packet.extend_from_slice(&target.octets());
    packet
}

/// Computes the Internet checksum (RFC 1071) of `bytes`: the one's complement of the one's
/// complement sum of its 16-bit words.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|word| match word {
            [high, low] => u32::from(u16::from_be_bytes([*high, *low])),
            [high] => u32::from(u16::from_be_bytes([*high, 0])),
            _ => 0,
        })
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const DESTINATION_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

    #[test]
    fn ipv4_header_checksum_verifies() {
        let packet = ipv4_packet(SOURCE_V4, DESTINATION_V4, IP_PROTOCOL_EXPERIMENTAL, PAYLOAD);
        // Summing a header that includes its own checksum gives zero after the complement.
        assert_eq!(internet_checksum(&packet[..IPV4_HEADER_LEN]), 0);
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // The worked example of RFC 1071, section 3: the sum is 0xddf2, so the checksum is its
        // complement.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&bytes), !0xddf2);
    }

    #[test]
    fn ipv4_frame_layout() {
        let frame = FrameBuilder::ipv4(SOURCE_V4, DESTINATION_V4).build();
        assert_eq!(
            frame.len(),
            ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + PAYLOAD.len()
        );
        assert_eq!(&frame[12..14], &ETHERTYPE_IPV4.to_be_bytes());
        assert_eq!(frame[14], 0x45);
        assert_eq!(&frame[26..30], &SOURCE_V4.octets());
        assert_eq!(&frame[30..34], &DESTINATION_V4.octets());
    }

    #[test]
    fn ipv6_frame_layout() {
        let source: Ipv6Addr = "2001:db8::10".parse().expect("valid address");
        let destination: Ipv6Addr = "2001:db8::1".parse().expect("valid address");
        let frame = FrameBuilder::ipv6(source, destination).build();
        assert_eq!(
            frame.len(),
            ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + PAYLOAD.len()
        );
        assert_eq!(&frame[12..14], &ETHERTYPE_IPV6.to_be_bytes());
        assert_eq!(frame[14] >> 4, 6);
        assert_eq!(&frame[22..38], &source.octets());
    }

    #[test]
    fn vlan_tags_nest_outermost_first() {
        let frame = FrameBuilder::ipv4(SOURCE_V4, DESTINATION_V4)
            .vlan(ETHERTYPE_8021AD, 100)
            .vlan(ETHERTYPE_8021Q, 0x1234)
            .build();
        assert_eq!(&frame[12..14], &ETHERTYPE_8021AD.to_be_bytes());
        assert_eq!(&frame[14..16], &100u16.to_be_bytes());
        assert_eq!(&frame[16..18], &ETHERTYPE_8021Q.to_be_bytes());
        // The VLAN id keeps 12 bits.
        assert_eq!(&frame[18..20], &0x0234u16.to_be_bytes());
        assert_eq!(&frame[20..22], &ETHERTYPE_IPV4.to_be_bytes());
        assert_eq!(frame[22], 0x45);
    }

    #[test]
    fn arp_request_layout() {
        let frame = FrameBuilder::arp_request(SOURCE_V4, DESTINATION_V4).build();
        assert_eq!(frame.len(), ETHERNET_HEADER_LEN + 28);
        assert_eq!(&frame[12..14], &ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(&frame[28..32], &SOURCE_V4.octets());
        assert_eq!(&frame[38..42], &DESTINATION_V4.octets());
    }
}
