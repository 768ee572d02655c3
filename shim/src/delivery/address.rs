//! Where a webhook may be sent. A partner chooses the URL, and the shim runs inside the
//! operator's network: without a check, a webhook could make it POST to the database host, a
//! cloud metadata service (169.254.169.254) or anything else only the shim can reach. Every
//! address a delivery would connect to is checked here, both those a host name resolves to
//! (the [`GuardedResolver`]: a name can be re-pointed after the extension checked the URL)
//! and literal IPs in URLs, which never reach a resolver. Which addresses are public is the
//! contract's rule (`apikey_contract::address`), the one the extension applies to URLs.

use apikey_contract::address::is_public;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};

/// A refused address, as the error of a connection attempt. Its text is what the delivery
/// records as the attempt's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedAddress(pub IpAddr);

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "address {} is private, loopback or reserved; set APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE=true to allow",
            self.0
        )
    }
}

impl std::error::Error for RefusedAddress {}

/// `Ok` when a webhook may connect to `ip` (always, when private addresses are allowed).
pub fn check(ip: IpAddr, allow_private: bool) -> Result<(), RefusedAddress> {
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(RefusedAddress(ip))
    }
}

/// Resolves host names with the system resolver and keeps only the addresses a webhook may
/// connect to. A name with no such address fails with the first refusal, so the attempt's
/// error says which address was refused. Filtering (rather than refusing a name with any
/// private address) is safe because the connection is only ever made to what is returned.
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let allow_private = self.allow_private;
        Box::pin(async move {
            // Port 0: the connector puts the URL's port on each address.
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let mut kept = Vec::with_capacity(resolved.len());
            for addr in resolved {
                match check(addr.ip(), allow_private) {
                    Ok(()) => kept.push(addr),
                    Err(e) => {
                        refused.get_or_insert(e);
                    }
                }
            }
            match (kept.is_empty(), refused) {
                (true, Some(refused)) => Err(refused.into()),
                _ => Ok(Box::new(kept.into_iter()) as Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass_unless_private_ones_are_allowed() {
        // (address, allowed by default). The full table of the rule is the contract's.
        let cases = [
            ("8.8.8.8", true),
            ("2606:4700:4700::1111", true),
            ("::ffff:8.8.8.8", true),
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("224.0.0.1", false),
            ("192.0.2.1", false),
            ("::", false),
            ("::1", false),
            ("fe80::1", false),
            ("fd00::1", false),
            ("ff02::1", false),
            ("2001:db8::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:10.0.0.1", false),
        ];
        for (text, public) in cases {
            let ip: IpAddr = text.parse().expect("a test address");
            assert_eq!(check(ip, false).is_ok(), public, "{text}");
            assert_eq!(
                check(ip, true),
                Ok(()),
                "{text} with private addresses allowed"
            );
        }
        assert_eq!(
            check("127.0.0.1".parse().unwrap(), false)
                .unwrap_err()
                .to_string(),
            "address 127.0.0.1 is private, loopback or reserved; set APIKEY_SHIM_WEBHOOK_ALLOW_PRIVATE=true to allow"
        );
    }

    #[tokio::test]
    async fn the_resolver_keeps_only_public_addresses() {
        let guarded = GuardedResolver {
            allow_private: false,
        };
        let name: Name = "localhost".parse().expect("a name");
        let error = match guarded.resolve(name).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        let refused = error
            .downcast_ref::<RefusedAddress>()
            .unwrap_or_else(|| panic!("not a refusal: {error}"));
        assert!(refused.0.is_loopback(), "{refused:?}");

        let open = GuardedResolver {
            allow_private: true,
        };
        let name: Name = "localhost".parse().expect("a name");
        let addrs: Vec<SocketAddr> = open.resolve(name).await.expect("resolved").collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
