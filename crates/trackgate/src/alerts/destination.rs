//! Where alerts may go: a webhook's URL is HTTPS, and its host is not on this machine or its
//! private networks unless the operator allows it (`alerts.allow_private_destinations`), so an
//! organization admin cannot make trackgate call into the network it runs in (SSRF). The check
//! runs when a rule is made (a clear error) and again on every connection, through the resolver
//! the webhook client uses: a name that resolves elsewhere later is still refused.

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};

/// May trackgate call this address? Not loopback, private (RFC 1918, unique local), link-local,
/// shared (RFC 6598), unspecified, multicast, broadcast, documentation or benchmarking ranges,
/// nor an IPv4 address in IPv6 clothing that is one of those.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

/// A webhook URL as given, checked: HTTPS, a host, no credentials; an IP literal must be public
/// unless `allow_private`.
pub fn webhook_url(text: &str, allow_private: bool) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`webhook` is not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!("`webhook` must be an https:// URL, not {}://", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("`webhook` must not carry credentials: the signature authenticates trackgate".into());
    }
    let host = url.host_str().ok_or("`webhook` has no host")?;
    // IP literals are connected to without the resolver: checked here.
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        check_ip(ip, allow_private)?;
    }
    Ok(url)
}

fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(format!(
            "{ip} is a loopback, private or reserved address: webhooks go to public addresses \
             unless `alerts.allow_private_destinations` is set"
        ))
    }
}

/// Resolve `host` (port 443 unless given) and check every address it names.
pub async fn check_host(host: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host:?} resolves to no address"));
    }
    for a in &addrs {
        check_ip(a.ip(), allow_private).map_err(|e| format!("{host:?} resolves to {e}"))?;
    }
    Ok(addrs)
}

/// The webhook client's resolver: every name is resolved and checked before a connection.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs = check_host(name.as_str(), 0, allow_private).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_reserved_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn webhook_urls_are_https_without_credentials_and_not_private() {
        assert!(webhook_url("https://hooks.example.com/tg?x=1", false).is_ok());
        let e = webhook_url("http://hooks.example.com/", false).unwrap_err();
        assert!(e.contains("must be an https:// URL"), "{e}");
        let e = webhook_url("https://user:pw@hooks.example.com/", false).unwrap_err();
        assert!(e.contains("credentials"), "{e}");
        let e = webhook_url("https://127.0.0.1:8443/", false).unwrap_err();
        assert!(
            e.contains("127.0.0.1 is a loopback, private or reserved address"),
            "{e}"
        );
        let e = webhook_url("https://[::ffff:169.254.169.254]/", false).unwrap_err();
        assert!(e.contains("reserved"), "{e}");
        assert!(webhook_url("https://127.0.0.1:8443/", true).is_ok());
        assert!(webhook_url("not a url", false).unwrap_err().contains("is not a URL"));
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        let e = check_host("localhost", 443, false).await.unwrap_err();
        assert!(e.contains("\"localhost\" resolves to"), "{e}");
        assert!(check_host("localhost", 443, true).await.is_ok());
    }
}
