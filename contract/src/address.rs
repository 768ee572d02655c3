//! Which IP addresses a webhook may be sent to when private targets are refused: the
//! extension checks an endpoint's URL when it is created, the shim every address a name
//! resolves to when it delivers (a name can be re-pointed after the check).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is a globally routed unicast address: not loopback, private (RFC 1918),
/// shared (CGNAT, 100.64/10), link-local, unique-local, unspecified, multicast, broadcast,
/// reserved, benchmarking, documentation or protocol-assignment space, a cloud's host-internal
/// service address, and not an IPv4 address of those kinds wrapped in IPv6 (mapped, SIIT
/// translated, compatible, NAT64 well-known prefix, 6to4). NAT64 local-use space is refused
/// whatever it embeds: its translator is inside the sender's own network.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        // The former 6to4 relay anycast (RFC 7526): whichever relay answers is not the
        // endpoint's owner.
        || (a == 192 && b == 88 && c == 99)
        // Azure's wire server: reachable from every Azure VM, it hands out the VM's secrets.
        || ip == Ipv4Addr::new(168, 63, 129, 16)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    if let Some(v4) = embedded_v4(&segments) {
        return is_public_v4(v4);
    }
    // `::` and `::1` were judged above, as the IPv4-compatible 0.0.0.0 and 0.0.0.1.
    !(ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00
        || (segments[0] & 0xffc0) == 0xfe80
        || (segments[0] & 0xffc0) == 0xfec0
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)
        // IETF protocol assignments (RFC 2928): Teredo, ORCHID, benchmarking, AMT and more,
        // none of them an endpoint's own address.
        || (segments[0] == 0x2001 && segments[1] < 0x0200)
        // Documentation (RFC 9637).
        || (segments[0] == 0x3fff && segments[1] < 0x1000)
        // SRv6 segment identifiers (RFC 9602): they address functions of an operator's routers.
        || segments[0] == 0x5f00
        // NAT64 local-use (RFC 8215).
        || (segments[0] == 0x0064 && segments[1] == 0xff9b && segments[2] == 0x0001)
        || segments[0] == 0x0100 && segments[1..4] == [0, 0, 0])
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), SIIT-translated
/// (`::ffff:0:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4
/// (`2002:aabb:ccdd::`) address.
fn embedded_v4(s: &[u16; 8]) -> Option<Ipv4Addr> {
    let tail =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match s {
        // `::` and `::1` land in 0.0.0.0/8, refused like the unspecified and loopback
        // addresses they are.
        [0, 0, 0, 0, 0, 0xffff | 0, hi, lo] => Some(tail(*hi, *lo)),
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => Some(tail(*hi, *lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(tail(*hi, *lo)),
        [0x2002, hi, lo, ..] => Some(tail(*hi, *lo)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "140.82.112.3",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:4860:4860::8888",
            "2a00::1",
            "::ffff:0:808:808",
            "2001:200::1",
            "3fff:1000::1",
            "5f01::1",
            "64:ff9b:2::1",
            "168.63.129.17",
            "192.88.98.1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn private_loopback_and_special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.1",
            "203.0.113.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "100::1",
            "::ffff:127.0.0.1",
            "::ffff:0.0.0.0",
            "::ffff:198.51.100.1",
            "::ffff:100.64.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "64:ff9b:1::1",
            "64:ff9b:1:ffff::808:808",
            "::ffff:0:7f00:1",
            "::ffff:0:a9fe:a9fe",
            "::ffff:0:a00:1",
            "168.63.129.16",
            "::ffff:168.63.129.16",
            "192.88.99.1",
            "2001::1",
            "2001:2::1",
            "2001:10::1",
            "2001:1ff::1",
            "3fff::1",
            "3fff:fff::1",
            "5f00::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
