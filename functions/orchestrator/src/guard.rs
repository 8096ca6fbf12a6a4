//! The SSRF guard: outside local mode, the orchestrator's HTTP client never connects to
//! loopback, private, link-local (cloud metadata at 169.254.169.254), shared, multicast or
//! unspecified addresses, whatever a URL, its DNS answers or its redirects say.
//!
//! The check sits where it cannot be talked around:
//! - [`GuardedResolver`] filters every DNS answer the client gets, for the first URL and for
//!   every redirect alike, so a name that resolves to 127.0.0.1 (or flips to it after a
//!   first, harmless answer) is refused at connect time;
//! - an address written in the URL is never resolved, so [`check_url`] refuses it before
//!   the request, and [`redirect_policy`] before each redirect is followed.

use std::error::Error;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use std::sync::Arc;
use std::time::Duration;

use fave_common::state::Reach;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;

/// A URL or DNS answer that points where the orchestrator must not go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForbiddenAddress(pub String);

impl fmt::Display for ForbiddenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is a loopback, private, link-local or otherwise internal address",
            self.0
        )
    }
}

impl Error for ForbiddenAddress {}

/// Whether an address is one the orchestrator may connect to on a user's behalf.
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
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // Benchmarking, 198.18.0.0/15; reserved, 240.0.0.0/4.
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let own = !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local fc00::/7, link-local fe80::/10.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        // Discard-only 100::/64; documentation 2001:db8::/32.
        || ip.segments()[..4] == [0x100, 0, 0, 0]
        || ip.segments()[..2] == [0x2001, 0xdb8]);
    // An address that carries an IPv4 address reaches that one through a translator or a
    // tunnel (NAT64 to 169.254.169.254 is the metadata service): judged by what it embeds.
    own && embedded_v4(ip).into_iter().all(is_public_v4)
}

/// The IPv4 addresses an IPv6 address carries, by the forms that carry one:
/// IPv4-compatible `::a.b.c.d` (deprecated), SIIT's IPv4-translated `::ffff:0:a.b.c.d`,
/// NAT64's well-known `64:ff9b::/96` and local-use `64:ff9b:1::/48` (RFC 6052, 8215), 6to4
/// `2002:AABB:CCDD::/48` (RFC 3056) and Teredo `2001::/32`, whose server is in the second
/// and third groups and whose client is the last 32 bits inverted (RFC 4380).
fn embedded_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let last = v4(s[6], s[7]);
    match s {
        [0, 0, 0, 0, 0, 0, _, _] => vec![last],
        [0, 0, 0, 0, 0xffff, 0, _, _] => vec![last],
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => vec![last],
        [0x64, 0xff9b, 1, ..] => vec![last],
        [0x2002, hi, lo, ..] => vec![v4(hi, lo)],
        [0x2001, 0, hi, lo, ..] => vec![v4(hi, lo), v4(!s[6], !s[7])],
        _ => Vec::new(),
    }
}

/// Refuses a URL whose host is an address literal that is not public (names are checked
/// when they are resolved). `allow_internal` is local mode: anything goes.
pub fn check_url(url: &Url, allow_internal: bool) -> Result<(), ForbiddenAddress> {
    if allow_internal {
        return Ok(());
    }
    let ip = match url.host() {
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
        // "localhost" never needs DNS to mean loopback (RFC 6761), with or without the
        // root's trailing dot and in any case (found by the parser property tests).
        Some(Host::Domain(d)) if is_localhost(d) => {
            return Err(ForbiddenAddress(d.to_owned()));
        }
        _ => return Ok(()),
    };
    if is_public(ip) {
        Ok(())
    } else {
        Err(ForbiddenAddress(ip.to_string()))
    }
}

/// Whether URL parsers would disagree about which host `raw` names: a backslash is a path
/// separator to a WHATWG parser (this one, browsers) in an http(s) URL and part of the
/// authority to others, so `http://a.example\@10.0.0.1/` is `a.example` here and `10.0.0.1`
/// elsewhere. Such URLs are refused before they are parsed.
pub fn is_ambiguous(raw: &str) -> bool {
    raw.contains('\\')
}

fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Follows at most [`MAX_REDIRECTS`] redirects, none of them to an internal address.
pub fn redirect_policy(allow_internal: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match check_url(attempt.url(), allow_internal) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    })
}

/// The system resolver, with every internal address taken out of its answers (outside
/// local mode); a name left with none is a [`ForbiddenAddress`].
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_internal: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_internal = self.allow_internal;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_internal || is_public(a.ip()))
                .collect();
            if allowed.is_empty() && !found.is_empty() {
                let err: Box<dyn Error + Send + Sync> =
                    Box::new(ForbiddenAddress(format!("{host} ({})", found[0].ip())));
                return Err(err);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP clients for users' URLs (inputs, callbacks): a guarded one always, and in local
/// mode an unguarded one too. Which a request gets is decided by [`UserClients::for_reach`],
/// so a request accepted in cluster mode is guarded wherever it is driven.
#[derive(Debug, Clone)]
pub struct UserClients {
    guarded: reqwest::Client,
    unguarded: Option<reqwest::Client>,
}

impl UserClients {
    /// The clients of a replica in `local_mode`.
    pub fn new(local_mode: bool) -> Self {
        Self {
            guarded: client(false),
            unguarded: local_mode.then(|| client(true)),
        }
    }

    /// The client for a request of `reach`, and whether it may go to internal addresses:
    /// only when the request and this replica both allow it.
    pub fn for_reach(&self, reach: Option<Reach>) -> (&reqwest::Client, bool) {
        match &self.unguarded {
            Some(unguarded) if Reach::allows_internal(reach, true) => (unguarded, true),
            _ => (&self.guarded, false),
        }
    }
}

fn client(allow_internal: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(redirect_policy(allow_internal))
        .dns_resolver(Arc::new(GuardedResolver { allow_internal }))
        // Never through a proxy from HTTP_PROXY/HTTPS_PROXY/ALL_PROXY: the proxy would
        // resolve and connect, and the guard would see nothing of it.
        .no_proxy()
        .build()
        .expect("a client with a connect timeout and a redirect policy always builds")
}

/// Whether an error (of reqwest, say) was caused by the guard.
pub fn forbidden_in(mut e: &(dyn Error + 'static)) -> Option<ForbiddenAddress> {
    loop {
        if let Some(f) = e.downcast_ref::<ForbiddenAddress>() {
            return Some(f.clone());
        }
        e = e.source()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
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
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            // IPv6 forms that carry an internal IPv4 address.
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::10.0.0.1",
            "64:ff9b:1::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "::ffff:0:127.0.0.1",
            "::ffff:0:a9fe:a9fe",
            "::127.0.0.1",
            // Teredo: server 192.168.0.1, or client 127.0.0.1 (inverted: 80ff:fffe).
            "2001:0:c0a8:1:0:0:0:0",
            "2001:0:808:808:0:0:80ff:fffe",
            "2001:db8::1",
            "100::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
            "2002:808:808::1",
            // Teredo with public server 8.8.8.8 and client 1.1.1.1 (inverted fefe:fefe).
            "2001:0:808:808::fefe:fefe",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn address_literals_and_localhost_are_refused_outside_local_mode() {
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:8080/x",
            "http://[64:ff9b::7f00:1]/",
            "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[::ffff:0:7f00:1]/",
            "http://10.0.0.7/video.mp4",
            "http://LOCALHOST/x",
            "http://a.localhost/x",
            "http://LOCALHOST./x",
            "http://2130706433/x",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(check_url(&url, false).is_err(), "{url}");
            assert!(check_url(&url, true).is_ok(), "{url}");
        }
        let fine = Url::parse("https://example.com/v.mp4").unwrap();
        assert!(check_url(&fine, false).is_ok());
    }

    #[tokio::test]
    async fn a_redirect_to_an_internal_address_is_not_followed() {
        // A server on loopback (reachable because this client's resolver allows it, as in
        // local mode) that redirects to the cloud metadata address.
        let app = axum::Router::new().fallback(|| async {
            axum::response::Redirect::temporary("http://169.254.169.254/latest/meta-data/")
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/video.mp4", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::builder()
            .redirect(redirect_policy(false))
            .build()
            .unwrap();
        let err = client.get(&url).send().await.expect_err("not followed");
        let forbidden = forbidden_in(&err).expect("refused by the guard");
        assert_eq!(forbidden.0, "169.254.169.254");
    }

    #[tokio::test]
    async fn names_that_resolve_inside_are_refused() {
        let guarded = GuardedResolver {
            allow_internal: false,
        };
        let name: Name = "localhost".parse().unwrap();
        let err = guarded.resolve(name).await.err().expect("refused");
        assert!(forbidden_in(err.as_ref()).is_some(), "{err}");
        let open = GuardedResolver {
            allow_internal: true,
        };
        let addrs: Vec<SocketAddr> = open
            .resolve("localhost".parse().unwrap())
            .await
            .expect("resolves")
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
