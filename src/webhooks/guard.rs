//! The SSRF guard. An endpoint's host is resolved and every address checked
//! when it is registered; at delivery the connection is made only to
//! addresses that pass the same check (a resolver of our own, so a name
//! that later resolves to a private address is refused then too), and
//! redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use futures_util::future::LocalBoxFuture;
use url::Url;

/// Whether a webhook may connect to `ip`: no address in a special-purpose
/// range (loopback, private, shared, link-local, documentation, benchmark,
/// protocol, relay, multicast, reserved), and no IPv6 form that reaches
/// IPv4 except where the IPv4 address inside is itself public (mapped and
/// the well-known NAT64 prefix; 6to4, Teredo, IPv4-compatible and local
/// NAT64 are refused whole).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

/// IPv4 ranges a webhook may not reach (IANA special-purpose registry).
const REFUSED_V4: &[(u32, u8)] = &[
    (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
    (0x0a00_0000, 8),  // 10.0.0.0/8 private
    (0x6440_0000, 10), // 100.64.0.0/10 shared (CGNAT)
    (0x7f00_0000, 8),  // 127.0.0.0/8 loopback
    (0xa9fe_0000, 16), // 169.254.0.0/16 link-local
    (0xac10_0000, 12), // 172.16.0.0/12 private
    (0xc000_0000, 24), // 192.0.0.0/24 protocol assignments
    (0xc000_0200, 24), // 192.0.2.0/24 documentation
    (0xc058_6300, 24), // 192.88.99.0/24 6to4 relay anycast
    (0xc0a8_0000, 16), // 192.168.0.0/16 private
    (0xc612_0000, 15), // 198.18.0.0/15 benchmarking
    (0xc633_6400, 24), // 198.51.100.0/24 documentation
    (0xcb00_7100, 24), // 203.0.113.0/24 documentation
    (0xe000_0000, 4),  // 224.0.0.0/4 multicast
    (0xf000_0000, 4),  // 240.0.0.0/4 reserved and broadcast
];

/// IPv6 ranges a webhook may not reach.
const REFUSED_V6: &[(u128, u8)] = &[
    (0, 96),                      // ::/96 unspecified, loopback, IPv4-compatible
    (0x0064_ff9b_0001 << 80, 48), // 64:ff9b:1::/48 local-use NAT64
    (0x0100 << 112, 64),          // 100::/64 discard
    (0x2001_0000 << 96, 32),      // 2001::/32 Teredo
    (0x2001_0db8 << 96, 32),      // 2001:db8::/32 documentation
    (0x2002 << 112, 16),          // 2002::/16 6to4
    (0xfc00 << 112, 7),           // fc00::/7 unique local
    (0xfe80 << 112, 10),          // fe80::/10 link-local
    (0xfec0 << 112, 10),          // fec0::/10 site-local
    (0xff00 << 112, 8),           // ff00::/8 multicast
];

/// The IPv4 address an IPv6 address stands for, where it is a form whose
/// IPv4 part can be judged on its own: `::ffff:a.b.c.d` and the well-known
/// NAT64 prefix `64:ff9b::/96`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    const NAT64: u128 = 0x0064_ff9b << 96;
    let bits = u128::from(ip);
    if in_range(bits, NAT64, 96, 128) {
        return Some(Ipv4Addr::from(bits as u32));
    }
    ip.to_ipv4_mapped()
}

fn in_range<T>(ip: T, net: T, prefix: u8, width: u32) -> bool
where
    T: Copy + std::ops::BitXor<Output = T> + std::ops::Shr<u32, Output = T> + PartialEq + From<u8>,
{
    let host_bits = width - u32::from(prefix);
    host_bits >= width || (ip ^ net) >> host_bits == T::from(0)
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    !REFUSED_V4
        .iter()
        .any(|&(net, prefix)| in_range(bits, net, prefix, 32))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    !REFUSED_V6
        .iter()
        .any(|&(net, prefix)| in_range(bits, net, prefix, 128))
}

/// Why a webhook URL may not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("must be an absolute http or https URL")]
    NotHttp,
    #[error("must not carry credentials")]
    Credentials,
    #[error("host does not resolve: {0}")]
    Unresolvable(String),
    #[error("resolves to a loopback, private or link-local address ({0}); set WEBHOOK_ALLOW_PRIVATE_TARGETS=true to allow it")]
    Private(IpAddr),
}

/// The URL's shape: absolute http(s), with a host, without credentials.
pub fn check_shape(raw: &str) -> Result<Url, Refusal> {
    let url = Url::parse(raw).map_err(|_| Refusal::NotHttp)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(Refusal::NotHttp);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::Credentials);
    }
    Ok(url)
}

/// How long a registration waits for the host to resolve.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Resolves the URL's host and checks every address (unless
/// `allow_private`).
pub async fn check_target(url: &Url, allow_private: bool) -> Result<(), Refusal> {
    if allow_private {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| Refusal::Unresolvable("no answer in time".into()))?
            .map_err(|e| Refusal::Unresolvable(e.to_string()))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Refusal::Unresolvable("no address".into()));
    }
    match addrs.iter().find(|a| !is_public(a.ip())) {
        Some(a) => Err(Refusal::Private(a.ip())),
        None => Ok(()),
    }
}

/// Whether a POST to `url` may go out as far as its host is a literal
/// address: a resolver never sees a literal IP, so the check is made here,
/// before each send. A named host is left to [`GuardedResolver`].
pub fn literal_target_allowed(url: &str, allow_private: bool) -> bool {
    if allow_private {
        return true;
    }
    match Url::parse(url).ok().as_ref().and_then(Url::host) {
        Some(url::Host::Ipv4(v4)) => is_public(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => is_public(IpAddr::V6(v6)),
        Some(url::Host::Domain(_)) => true,
        None => false,
    }
}

/// The delivery client's resolver: the system's, keeping only the
/// addresses a webhook may reach (all of them when private targets are
/// allowed). A host with none left fails to connect.
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl actix_tls::connect::Resolve for GuardedResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn std::error::Error>>> {
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| self.allow_private || is_public(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(allowed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} should be refused");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} should be allowed");
        }
    }

    /// Every special-purpose range a webhook must not reach, one address
    /// at each edge, and public neighbours just outside them.
    #[test]
    fn every_special_range_is_refused_at_both_edges() {
        let refused = [
            ("0.0.0.0/8", "0.0.0.0", "0.255.255.255"),
            ("10.0.0.0/8", "10.0.0.0", "10.255.255.255"),
            ("100.64.0.0/10 shared", "100.64.0.0", "100.127.255.255"),
            ("127.0.0.0/8", "127.0.0.0", "127.255.255.255"),
            ("169.254.0.0/16", "169.254.0.0", "169.254.255.255"),
            ("172.16.0.0/12", "172.16.0.0", "172.31.255.255"),
            ("192.0.0.0/24 protocol", "192.0.0.0", "192.0.0.255"),
            ("192.0.2.0/24 doc", "192.0.2.0", "192.0.2.255"),
            ("192.88.99.0/24 6to4 relay", "192.88.99.0", "192.88.99.255"),
            ("192.168.0.0/16", "192.168.0.0", "192.168.255.255"),
            ("198.18.0.0/15 benchmark", "198.18.0.0", "198.19.255.255"),
            ("198.51.100.0/24 doc", "198.51.100.0", "198.51.100.255"),
            ("203.0.113.0/24 doc", "203.0.113.0", "203.0.113.255"),
            ("224.0.0.0/4 multicast", "224.0.0.0", "239.255.255.255"),
            ("240.0.0.0/4 reserved", "240.0.0.0", "255.255.255.255"),
            ("::/128", "::", "::"),
            ("::1/128", "::1", "::1"),
            ("::/96 IPv4-compatible", "::0.0.0.2", "::255.255.255.255"),
            (
                "::ffff:0:0/96 mapped",
                "::ffff:10.0.0.1",
                "::ffff:127.0.0.1",
            ),
            ("64:ff9b::/96 NAT64", "64:ff9b::", "64:ff9b::ffff:ffff"),
            (
                "64:ff9b:1::/48 local NAT64",
                "64:ff9b:1::",
                "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
            ),
            ("100::/64 discard", "100::", "100::ffff:ffff:ffff:ffff"),
            (
                "2001::/32 Teredo",
                "2001::",
                "2001:0:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
            (
                "2001:db8::/32 doc",
                "2001:db8::",
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
            (
                "2002::/16 6to4",
                "2002::",
                "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
            (
                "fc00::/7 unique local",
                "fc00::",
                "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
            (
                "fe80::/10 link-local",
                "fe80::",
                "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
            (
                "fec0::/10 site-local",
                "fec0::",
                "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
            (
                "ff00::/8 multicast",
                "ff00::",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
        ];
        for (range, low, high) in refused {
            for ip in [low, high] {
                assert!(
                    !is_public(ip.parse().unwrap()),
                    "{ip} ({range}) must be refused"
                );
            }
        }
        for ip in [
            "1.1.1.1",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.88.98.255",
            "192.88.100.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "64:ff9b:2::1",
            "2001:1::1",
            "2003::1",
            "2606:4700::1111",
            "fbff::1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} must be allowed");
        }
    }

    #[test]
    fn a_literal_ip_url_is_checked_at_send_time_too() {
        for (url, allowed) in [
            ("http://127.0.0.1:9/h", false),
            ("http://[::1]:9/h", false),
            ("http://[64:ff9b::a00:1]/h", false),
            ("https://8.8.8.8/h", true),
            ("https://shop.example/h", true),
        ] {
            assert_eq!(literal_target_allowed(url, false), allowed, "{url}");
            assert!(
                literal_target_allowed(url, true),
                "{url} with private allowed"
            );
        }
    }

    #[test]
    fn only_absolute_http_urls_without_credentials_pass() {
        assert!(check_shape("https://shop.example/hooks").is_ok());
        assert!(check_shape("http://127.0.0.1:9000/h").is_ok());
        for bad in [
            "",
            "shop.example/hooks",
            "ftp://x/y",
            "https://",
            "http://u:p@x/",
        ] {
            assert!(check_shape(bad).is_err(), "{bad} should be refused");
        }
    }

    #[tokio::test]
    async fn a_literal_private_target_is_refused_unless_allowed() {
        let url = check_shape("http://127.0.0.1:1/h").unwrap();
        assert!(matches!(
            check_target(&url, false).await,
            Err(Refusal::Private(_))
        ));
        assert_eq!(check_target(&url, true).await, Ok(()));
        let named = check_shape("http://localhost:1/h").unwrap();
        assert!(check_target(&named, false).await.is_err());
    }
}
