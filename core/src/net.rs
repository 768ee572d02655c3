//! IP addresses and networks in the layout PostgreSQL stores `inet` and `cidr` values in, and
//! the test `inet <<= cidr` that a key's `allowed_cidrs` needs. Doing it here keeps a
//! verification of an allow-listed key free of SPI.

/// `inet_struct` family codes (`PGSQL_AF_INET`, `PGSQL_AF_INET6`): AF_INET + 0 and + 1.
const FAMILY_V4: u8 = 2;
const FAMILY_V6: u8 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetAddr {
    family: u8,
    bits: u8,
    addr: [u8; 16],
}

impl NetAddr {
    /// Reads the payload of an `inet` / `cidr` varlena (after its header): family, mask bits,
    /// then 4 or 16 address bytes. `None` for anything PostgreSQL itself would not produce.
    pub fn from_bytes(payload: &[u8]) -> Option<NetAddr> {
        let (&family, rest) = payload.split_first()?;
        let (&bits, rest) = rest.split_first()?;
        let len = match family {
            FAMILY_V4 => 4,
            FAMILY_V6 => 16,
            _ => return None,
        };
        if rest.len() < len || usize::from(bits) > len * 8 {
            return None;
        }
        let mut addr = [0u8; 16];
        addr[..len].copy_from_slice(&rest[..len]);
        Some(NetAddr { family, bits, addr })
    }

    /// `self <<= network`, as PostgreSQL's `network_subeq` defines it: same family, a mask at
    /// least as long as the network's, and the same leading `network.bits` bits.
    pub fn is_within(&self, network: &NetAddr) -> bool {
        self.family == network.family
            && self.bits >= network.bits
            && same_prefix(&self.addr, &network.addr, usize::from(network.bits))
    }

    /// The network failures from this address are grouped by: its /24 for IPv4 (an
    /// IPv4-mapped IPv6 address counts as that IPv4 address), its /64 for IPv6. These are
    /// what one customer or host is handed, so a sender hopping between its own addresses
    /// still counts as one.
    pub fn sender_network(&self) -> NetAddr {
        let (family, bits, v4) = match self.family {
            FAMILY_V6 if self.addr[..12] == V4_MAPPED => (FAMILY_V4, 24, Some(&self.addr[12..])),
            FAMILY_V6 => (FAMILY_V6, 64, None),
            _ => (FAMILY_V4, 24, Some(&self.addr[..4])),
        };
        let mut addr = [0u8; 16];
        match v4 {
            Some(v4) => addr[..3].copy_from_slice(&v4[..3]),
            None => addr[..8].copy_from_slice(&self.addr[..8]),
        }
        NetAddr { family, bits, addr }
    }

    /// The bytes `from_bytes` reads: family, mask bits, 4 or 16 address bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = if self.family == FAMILY_V4 { 4 } else { 16 };
        let mut bytes = vec![self.family, self.bits];
        bytes.extend_from_slice(&self.addr[..len]);
        bytes
    }
}

/// The first 12 bytes of an IPv4-mapped IPv6 address, `::ffff:a.b.c.d`.
const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

fn same_prefix(a: &[u8; 16], b: &[u8; 16], bits: usize) -> bool {
    let whole = bits / 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        (a[whole] ^ b[whole]) & mask == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4], bits: u8) -> NetAddr {
        let mut payload = vec![FAMILY_V4, bits];
        payload.extend_from_slice(&a);
        NetAddr::from_bytes(&payload).unwrap()
    }

    fn v6(a: [u8; 16], bits: u8) -> NetAddr {
        let mut payload = vec![FAMILY_V6, bits];
        payload.extend_from_slice(&a);
        NetAddr::from_bytes(&payload).unwrap()
    }

    #[test]
    fn containment_follows_network_subeq() {
        let net = v4([10, 1, 0, 0], 16);
        assert!(v4([10, 1, 2, 3], 32).is_within(&net));
        assert!(v4([10, 1, 0, 0], 16).is_within(&net), "equal network");
        assert!(!v4([10, 2, 0, 1], 32).is_within(&net));
        assert!(
            !v4([10, 1, 0, 0], 8).is_within(&net),
            "wider mask is not inside"
        );
        assert!(v4([192, 168, 7, 9], 32).is_within(&v4([0, 0, 0, 0], 0)));
        // A mask that ends inside a byte: 10.1.128.0/17 holds 10.1.200.1, not 10.1.100.1.
        let odd = v4([10, 1, 128, 0], 17);
        assert!(v4([10, 1, 200, 1], 32).is_within(&odd));
        assert!(!v4([10, 1, 100, 1], 32).is_within(&odd));
    }

    #[test]
    fn families_never_match() {
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[10, 1, 2, 3]);
        assert!(!v6(mapped, 128).is_within(&v4([10, 0, 0, 0], 8)));
        assert!(!v4([10, 1, 2, 3], 32).is_within(&v6([0; 16], 0)));
        let mut net = [0u8; 16];
        net[..2].copy_from_slice(&[0x20, 0x01]);
        let mut ip = net;
        ip[15] = 1;
        assert!(v6(ip, 128).is_within(&v6(net, 16)));
    }

    #[test]
    fn senders_are_grouped_by_their_slash_24_or_slash_64() {
        assert_eq!(
            v4([198, 51, 100, 7], 32).sender_network(),
            v4([198, 51, 100, 0], 24)
        );
        assert_eq!(
            v4([198, 51, 100, 7], 32).sender_network(),
            v4([198, 51, 100, 250], 32).sender_network()
        );
        assert_ne!(
            v4([198, 51, 100, 7], 32).sender_network(),
            v4([198, 51, 101, 7], 32).sender_network()
        );
        let mut mapped = [0u8; 16];
        mapped[10..].copy_from_slice(&[0xff, 0xff, 198, 51, 100, 9]);
        assert_eq!(v6(mapped, 128).sender_network(), v4([198, 51, 100, 0], 24));
        let mut ip = [
            0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        let mut net = [0u8; 16];
        net[..8].copy_from_slice(&ip[..8]);
        assert_eq!(v6(ip, 128).sender_network(), v6(net, 64));
        ip[15] ^= 1;
        ip[8] ^= 0x80;
        assert_eq!(v6(ip, 128).sender_network(), v6(net, 64), "same /64");
        ip[7] ^= 1;
        assert_ne!(v6(ip, 128).sender_network(), v6(net, 64), "another /64");
        // ::fffe:a.b.c.d is not mapped: it stays IPv6.
        mapped[11] = 0xfe;
        assert_eq!(v6(mapped, 128).sender_network(), v6([0; 16], 64));
    }

    #[test]
    fn bytes_round_trip() {
        for payload in [
            vec![FAMILY_V4, 24, 198, 51, 100, 0],
            [vec![FAMILY_V6, 64], vec![0x20; 16]].concat(),
        ] {
            let addr = NetAddr::from_bytes(&payload).unwrap();
            assert_eq!(addr.to_bytes(), payload);
        }
    }

    #[test]
    fn malformed_payloads_are_refused() {
        assert_eq!(NetAddr::from_bytes(&[]), None);
        assert_eq!(NetAddr::from_bytes(&[FAMILY_V4, 32, 1, 2, 3]), None);
        assert_eq!(NetAddr::from_bytes(&[FAMILY_V4, 33, 1, 2, 3, 4]), None);
        assert_eq!(NetAddr::from_bytes(&[9, 8, 1, 2, 3, 4]), None);
        assert_eq!(NetAddr::from_bytes(&[FAMILY_V6, 128, 1, 2, 3, 4]), None);
    }
}
