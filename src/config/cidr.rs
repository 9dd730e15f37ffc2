//! IP networks in CIDR notation, as used by `listener.trusted_proxies`.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are treated as the IPv4 addresses they carry:
//! a dual-stack listener reports IPv4 peers that way, and an operator who trusts `10.0.0.0/8`
//! means those peers too.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network: an address with its host bits zero, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

/// Why a string is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an IP address")]
    Address(String),
    #[error("`{0}` is not a prefix length")]
    PrefixSyntax(String),
    #[error("prefix length {len} is too long for an {family} address (at most {max})")]
    PrefixTooLong {
        len: u8,
        family: &'static str,
        max: u8,
    },
    /// Rejected rather than silently masked: `10.0.0.1/8` is more often a typo than a wish to
    /// trust all of `10.0.0.0/8`.
    #[error("`{written}` has host bits set; the network is `{network}`")]
    HostBits { written: String, network: Cidr },
}

impl Cidr {
    /// A network from its address and prefix length; the address must have no host bits set.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Cidr, CidrError> {
        let max = max_prefix(addr);
        if prefix_len > max {
            let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
            return Err(CidrError::PrefixTooLong {
                len: prefix_len,
                family,
                max,
            });
        }
        let network = mask(addr, prefix_len);
        if network != addr {
            return Err(CidrError::HostBits {
                written: format!("{addr}/{prefix_len}"),
                network: Cidr::canonical(network, prefix_len),
            });
        }
        Ok(Cidr::canonical(network, prefix_len))
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `addr` is inside this network; IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = unmap(addr);
        addr.is_ipv4() == self.network.is_ipv4() && mask(addr, self.prefix_len) == self.network
    }

    /// Stores an IPv4-mapped IPv6 network as the IPv4 network it covers, so that `contains`
    /// needs only one comparison and `Display` shows the form people expect.
    fn canonical(network: IpAddr, prefix_len: u8) -> Cidr {
        match network {
            IpAddr::V6(v6) if prefix_len >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    network: IpAddr::V4(v4),
                    prefix_len: prefix_len - 96,
                },
                None => Cidr {
                    network,
                    prefix_len,
                },
            },
            _ => Cidr {
                network,
                prefix_len,
            },
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `10.0.0.0/8`, `fd00::/8`, or a bare address meaning just that host (/32 or /128).
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::Address(addr.to_string()))?;
        let prefix_len = match prefix {
            None => max_prefix(addr),
            // `u8::from_str` accepts a leading `+`; a prefix length never has one.
            Some(p) if p.starts_with('+') => return Err(CidrError::PrefixSyntax(p.to_string())),
            Some(p) => p
                .parse()
                .map_err(|_| CidrError::PrefixSyntax(p.to_string()))?,
        };
        Cidr::new(addr, prefix_len)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// `addr` with every bit after the first `prefix_len` cleared.
fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & keep))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & keep))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_displays_canonically() {
        let cases = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("192.168.1.7", "192.168.1.7/32"),
            ("::1", "::1/128"),
            ("::1/128", "::1/128"),
            ("fd00::/8", "fd00::/8"),
            ("FD00:0:0::/16", "fd00::/16"),
            ("::/0", "::/0"),
            // IPv4-mapped networks become the IPv4 network they cover.
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:10.1.2.3", "10.1.2.3/32"),
        ];
        for (input, want) in cases {
            let cidr: Cidr = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(cidr.to_string(), want, "{input}");
        }
    }

    #[test]
    fn rejects_invalid_networks() {
        let cases = [
            ("", "`` is not an IP address"),
            ("10.0.0/8", "`10.0.0` is not an IP address"),
            ("example.com/8", "`example.com` is not an IP address"),
            ("10.0.0.0/", "`` is not a prefix length"),
            ("10.0.0.0/x", "`x` is not a prefix length"),
            ("10.0.0.0/+8", "`+8` is not a prefix length"),
            ("10.0.0.0/-1", "`-1` is not a prefix length"),
            (
                "10.0.0.0/33",
                "prefix length 33 is too long for an IPv4 address (at most 32)",
            ),
            (
                "::/129",
                "prefix length 129 is too long for an IPv6 address (at most 128)",
            ),
            (
                "10.0.0.1/8",
                "`10.0.0.1/8` has host bits set; the network is `10.0.0.0/8`",
            ),
            (
                "fd00::1/8",
                "`fd00::1/8` has host bits set; the network is `fd00::/8`",
            ),
        ];
        for (input, want) in cases {
            let err = input.parse::<Cidr>().unwrap_err();
            assert_eq!(err.to_string(), want, "{input}");
        }
    }

    #[test]
    fn contains() {
        // (network, address, inside)
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("10.0.0.0/8", "::ffff:10.9.9.9", true),
            ("10.0.0.0/8", "::ffff:11.9.9.9", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7", "192.168.1.8", false),
            ("::1/128", "::1", true),
            ("::1/128", "127.0.0.1", false),
            ("fd00::/8", "fd12:3456::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::/0", "2001:db8::1", true),
            // A mapped address is IPv4 for matching, so an IPv6-only network does not hold it.
            ("::/0", "::ffff:10.0.0.1", false),
            ("::ffff:10.0.0.0/104", "10.1.1.1", true),
            ("::ffff:10.0.0.0/104", "::ffff:10.1.1.1", true),
            ("10.1.2.0/23", "10.1.3.255", true),
            ("10.1.2.0/23", "10.1.4.0", false),
        ];
        for (network, addr, want) in cases {
            let cidr: Cidr = network.parse().unwrap();
            assert_eq!(cidr.contains(ip(addr)), want, "{network} contains {addr}");
        }
    }

    #[test]
    fn accessors() {
        let cidr: Cidr = "172.16.0.0/12".parse().unwrap();
        assert_eq!(cidr.network(), ip("172.16.0.0"));
        assert_eq!(cidr.prefix_len(), 12);
        assert_eq!(Cidr::new(ip("172.16.0.0"), 12), Ok(cidr));
    }
}
