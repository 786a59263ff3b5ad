//! Naming policy: which principal names are valid, which names a principal's certificate
//! carries, and source-address restrictions of tokens.

use std::net::IpAddr;
use std::str::FromStr;

/// A value of a request that breaks the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A principal name outside the allowed character set or length.
    #[error("invalid principal name {name:?}: use 1 to 63 lower-case letters, digits and '-', starting with a letter or digit")]
    BadPrincipal { name: String },
    /// A DNS name that is not a valid host name.
    #[error("invalid DNS name {name:?}: use dot-separated labels of lower-case letters, digits and '-', 253 characters at most")]
    BadDnsName { name: String },
    /// A name the keyserver uses for itself.
    #[error("principal name {name:?} is reserved for the keyserver's own server certificates; pick another name")]
    ReservedPrincipal { name: String },
    /// A source restriction that is neither an address nor a CIDR block.
    #[error("invalid source address or CIDR {input:?}: expected for example 10.1.2.3, 10.1.0.0/16 or fd00::/8")]
    BadCidr { input: String },
}

/// Principal under which the keyserver records its own server certificates. No token or
/// admin certificate can be made for it, and it cannot be revoked.
pub const KEYSERVER_PRINCIPAL: &str = "keyserver";

/// Returns whether `name` is reserved for the keyserver itself.
pub fn is_reserved(name: &str) -> bool {
    name == KEYSERVER_PRINCIPAL
}

/// Checks that `name` can be a principal: one DNS label, so that it is also a host name,
/// and not reserved.
///
/// # Errors
///
/// [`PolicyError::ReservedPrincipal`] for a reserved name, [`PolicyError::BadPrincipal`]
/// for one that is not a DNS label.
pub fn validate_principal(name: &str) -> Result<(), PolicyError> {
    if is_reserved(name) {
        return Err(PolicyError::ReservedPrincipal {
            name: name.to_string(),
        });
    }
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(PolicyError::BadPrincipal {
            name: name.to_string(),
        })
    }
}

/// Checks that `name` is a lower-case DNS host name.
///
/// # Errors
///
/// [`PolicyError::BadDnsName`] otherwise.
pub fn validate_dns_name(name: &str) -> Result<(), PolicyError> {
    let valid = !name.is_empty() && name.len() <= 253 && name.split('.').all(is_dns_label);
    if valid {
        Ok(())
    } else {
        Err(PolicyError::BadDnsName {
            name: name.to_string(),
        })
    }
}

fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(allowed)
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Returns the DNS names of a principal's certificate: the principal itself, then
/// `principal.suffix` when the keyserver has a suffix, then the extra names an admin set.
/// Names a node puts in its CSR never appear here.
pub fn certificate_names(
    principal: &str,
    dns_suffix: Option<&str>,
    extra: &[String],
) -> Vec<String> {
    let mut names = vec![principal.to_string()];
    if let Some(suffix) = dns_suffix {
        names.push(format!("{principal}.{suffix}"));
    }
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// An address block that a token's redemption must come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceNet {
    network: IpAddr,
    prefix_len: u8,
}

impl SourceNet {
    /// Returns whether `addr` lies in the block. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, canonical_ip(addr)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                mask_bits(u32::from(net).into(), 32, self.prefix_len)
                    == mask_bits(u32::from(a).into(), 32, self.prefix_len)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                mask_bits(u128::from(net), 128, self.prefix_len)
                    == mask_bits(u128::from(a), 128, self.prefix_len)
            }
            _ => false,
        }
    }
}

fn mask_bits(value: u128, width: u8, prefix_len: u8) -> u128 {
    if prefix_len == 0 {
        return 0;
    }
    let host_bits = u32::from(width - prefix_len);
    (value >> host_bits) << host_bits
}

/// Returns `addr` with an IPv4-mapped IPv6 address turned into plain IPv4, so that a
/// dual-stack listener and an IPv4 CIDR agree.
pub fn canonical_ip(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for SourceNet {
    type Err = PolicyError;

    /// Parses `ADDR/LEN` or a bare address, which means a single host.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || PolicyError::BadCidr {
            input: input.to_string(),
        };
        let (addr_part, len_part) = match input.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (input, None),
        };

        let network = canonical_ip(addr_part.parse::<IpAddr>().map_err(|_| error())?);
        let max_len = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len_part {
            Some(len) => len.parse::<u8>().map_err(|_| error())?,
            None => max_len,
        };
        if prefix_len > max_len {
            return Err(error());
        }
        Ok(Self {
            network,
            prefix_len,
        })
    }
}

impl std::fmt::Display for SourceNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_names() {
        for good in ["node-1", "a", "lb01", &"x".repeat(63)] {
            assert!(validate_principal(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "Node", "a.b", "a_b", &"x".repeat(64)] {
            assert!(validate_principal(bad).is_err(), "{bad}");
        }
        assert_eq!(
            validate_principal("keyserver"),
            Err(PolicyError::ReservedPrincipal {
                name: "keyserver".into()
            })
        );
    }

    #[test]
    fn dns_names() {
        assert!(validate_dns_name("node-1.spike.internal").is_ok());
        assert!(validate_dns_name("node..internal").is_err());
        assert!(validate_dns_name("*.spike.internal").is_err());
    }

    #[test]
    fn certificate_names_from_policy() {
        let names = certificate_names("node-1", Some("spike.internal"), &["lb.example".into()]);
        assert_eq!(names, ["node-1", "node-1.spike.internal", "lb.example"]);
        assert_eq!(certificate_names("node-1", None, &[]), ["node-1"]);
    }

    #[test]
    fn source_net_contains() {
        let cases = [
            ("10.0.0.0/8", "10.200.1.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::1", "127.0.0.1", false),
        ];
        for (net, addr, expected) in cases {
            let net: SourceNet = net.parse().unwrap();
            assert_eq!(
                net.contains(addr.parse().unwrap()),
                expected,
                "{net} {addr}"
            );
        }
    }

    #[test]
    fn source_net_rejects_bad_input() {
        for input in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "host/8",
            "10.0.0.0/x",
        ] {
            assert!(input.parse::<SourceNet>().is_err(), "{input}");
        }
    }
}
