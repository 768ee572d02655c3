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
}

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
    fn malformed_payloads_are_refused() {
        assert_eq!(NetAddr::from_bytes(&[]), None);
        assert_eq!(NetAddr::from_bytes(&[FAMILY_V4, 32, 1, 2, 3]), None);
        assert_eq!(NetAddr::from_bytes(&[FAMILY_V4, 33, 1, 2, 3, 4]), None);
        assert_eq!(NetAddr::from_bytes(&[9, 8, 1, 2, 3, 4]), None);
        assert_eq!(NetAddr::from_bytes(&[FAMILY_V6, 128, 1, 2, 3, 4]), None);
    }
}
