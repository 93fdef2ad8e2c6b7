//! The SSRF guard. An endpoint's host is resolved and every address checked
//! when it is registered; at delivery the connection is made only to
//! addresses that pass the same check (a resolver of our own, so a name
//! that later resolves to a private address is refused then too), and
//! redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use futures_util::future::LocalBoxFuture;
use url::Url;

/// Whether a webhook may connect to `ip`: not loopback, private, link-local,
/// shared (CGNAT), unspecified, multicast, broadcast or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80)
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
