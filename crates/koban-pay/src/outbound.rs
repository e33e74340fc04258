//! Requests to addresses a merchant chose (webhook endpoints), guarded against server-side
//! request forgery: a merchant must not be able to make Koban call its own network.
//!
//! - Outside `--dev` only `https://` is accepted, verified against the platform's roots (plus
//!   the operator's own authorities, `--tls-ca-file`); `--dev` also accepts `http://`.
//! - Every address the host resolves to must be public: loopback, private, shared (carrier
//!   NAT), link-local (cloud metadata at 169.254.169.254), multicast, broadcast, documentation,
//!   benchmarking, reserved and unspecified addresses are refused, for IPv4 and IPv6 alike,
//!   and IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by
//!   that address. Teredo is refused. Loopback is allowed in `--dev` only.
//! - The connection goes to an address that was checked; nothing resolves the name again.
//! - Connecting is bounded ([`CONNECT_TIMEOUT`]), redirects are not followed (a 3xx is not a
//!   success), and the response body is never read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Longest wait for the TCP connection to one address and its TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest URL accepted.
const URL_MAX: usize = 500;

/// Why a call to a merchant's address got no HTTP answer, as a merchant's delivery log shows
/// it (`code`); the detail goes to the service's log only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The URL or an address it resolves to is refused (see the module's list).
    Refused,
    /// The host name does not resolve.
    Unresolved,
    /// No address of the host accepted a connection.
    Unreachable,
    /// The TLS handshake failed: an untrusted or mismatched certificate, most often.
    Tls,
    /// Connected, but no HTTP answer came back.
    NoResponse,
    /// The whole attempt took longer than it may.
    TimedOut,
}

impl Failure {
    pub fn code(self) -> &'static str {
        match self {
            Failure::Refused => "address_refused",
            Failure::Unresolved => "dns_failed",
            Failure::Unreachable => "connect_failed",
            Failure::Tls => "tls_failed",
            Failure::NoResponse => "no_response",
            Failure::TimedOut => "timed_out",
        }
    }
}

/// A failure and its detail for the log.
pub type Failed = (Failure, String);

/// A checked URL: scheme, host, port and the path with its query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    /// The `Host` header's value.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Parses an endpoint URL and refuses what can be refused before resolving the name: a scheme
/// other than https (or http in `dev`), credentials in the URL, an address literal of a
/// refused class, a malformed host, port or path.
pub fn parse(url: &str, dev: bool) -> Result<Target, &'static str> {
    if url.len() > URL_MAX || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL is too long or holds spaces or control characters");
    }
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        if !dev {
            return Err("the URL must start with https://");
        }
        (false, rest)
    } else {
        return Err(if dev {
            "the URL must start with https:// or http://"
        } else {
            "the URL must start with https://"
        });
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if path.contains('#') {
        return Err("the URL must not have a fragment");
    }
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    if path.parse::<hyper::Uri>().is_err() {
        return Err("the URL's path is not valid");
    }
    if authority.contains('@') {
        return Err("the URL must not hold a user name or password");
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("the host is not valid")?;
        let port = match after {
            "" => default_port,
            _ => after
                .strip_prefix(':')
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or("the port is not valid")?,
        };
        host.parse::<Ipv6Addr>()
            .map_err(|_| "the host is not valid")?;
        (host.to_owned(), port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (
                host.to_owned(),
                port.parse::<u16>().map_err(|_| "the port is not valid")?,
            ),
            None => (authority.to_owned(), default_port),
        }
    };
    if port == 0 {
        return Err("the port is not valid");
    }
    let host = host.to_ascii_lowercase();
    if let Ok(ip) = host.parse::<IpAddr>() {
        check(ip, dev)?;
    } else if !is_dns_name(&host) {
        return Err("the host is not valid");
    } else if (host == "localhost" || host.ends_with(".localhost")) && !dev {
        return Err("the host is a loopback address");
    }
    Ok(Target {
        tls,
        host,
        port,
        path,
    })
}

fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        // Top-level names start with a letter; `2130706433` or `0x7f000001` would be read
        // as IPv4 addresses by some resolvers.
        && host
            .split('.')
            .next_back()
            .is_some_and(|tld| tld.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// Refuses an address Koban must not call: the class it belongs to, or `Ok` for a public one
/// (and for loopback in `dev`).
pub fn check(ip: IpAddr, dev: bool) -> Result<(), &'static str> {
    match refused_class(ip) {
        Some("a loopback address") if dev => Ok(()),
        Some(class) => Err(class),
        None => Ok(()),
    }
}

/// The refused class of `ip`, or `None` for a public address.
pub fn refused_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_unspecified() || a == 0 => "an unspecified address",
        _ if ip.is_private() => "a private address",
        (100, 64..=127, _) => "a shared (carrier-grade NAT) address",
        _ if ip.is_link_local() => "a link-local or metadata address",
        _ if ip.is_multicast() => "a multicast address",
        _ if ip.is_broadcast() => "a broadcast address",
        (192, 0, 0) => "an IETF protocol address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address",
        (192, 88, 99) => "a 6to4 relay address",
        (240..=255, _, _) => "a reserved address",
        _ => return None,
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // Forms that carry an IPv4 address are judged by it.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    Some(match s {
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_unspecified() => "an unspecified address",
        // IPv4-compatible (deprecated) ::a.b.c.d
        [0, 0, 0, 0, 0, 0, hi, lo] => return refused_v4(embedded(hi, lo)),
        // NAT64, well-known and local-use prefixes.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return refused_v4(embedded(hi, lo)),
        [0x64, 0xff9b, 1, ..] => "a NAT64 local-use address",
        // 6to4: 2002:a.b.c.d::/48
        [0x2002, hi, lo, ..] => return refused_v4(embedded(hi, lo)),
        [0x2001, 0, ..] => "a Teredo address",
        [0x2001, 0xdb8, ..] | [0x3fff, 0..=0x0fff, ..] => "a documentation address",
        [0x2001, 0x2, 0, ..] => "a benchmarking address",
        [0x2001, 0x10..=0x2f, ..] => "an ORCHID address",
        [0x0100, 0, 0, 0, ..] => "a discard-only address",
        [x, ..] if x & 0xfe00 == 0xfc00 => "a unique local (private) address",
        [x, ..] if x & 0xffc0 == 0xfe80 => "a link-local address",
        [x, ..] if x & 0xffc0 == 0xfec0 => "a site-local address",
        [x, ..] if x & 0xff00 == 0xff00 => "a multicast address",
        // Only global unicast (2000::/3) is public; the rest is reserved.
        [x, ..] if x & 0xe000 != 0x2000 => "a reserved address",
        _ => return None,
    })
}

/// Resolves `target` and checks every address it has: one refused address refuses the whole
/// name, so a name cannot mix a public address with an internal one.
pub async fn resolve(target: &Target, dev: bool) -> Result<Vec<SocketAddr>, Failed> {
    let unresolved = |why: &str| (Failure::Unresolved, why.to_owned());
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        check(ip, dev).map_err(|class| (Failure::Refused, format!("the host is {class}")))?;
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    let found = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::lookup_host((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| unresolved("the host name did not resolve in time"))?
    .map_err(|_| unresolved("the host name does not resolve"))?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(unresolved("the host name has no address"));
    }
    for addr in &addrs {
        check(addr.ip(), dev)
            .map_err(|class| (Failure::Refused, format!("the host resolves to {class}")))?;
    }
    Ok(addrs)
}

/// A connection to a checked address, plain or TLS.
pub enum Stream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

/// Connects to the first of `addrs` that answers, then does the TLS handshake for
/// `target.host` when the target is https.
pub async fn connect(
    target: &Target,
    addrs: &[SocketAddr],
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Stream, Failed> {
    let mut tcp = None;
    for addr in addrs {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await
        {
            tcp = Some(stream);
            break;
        }
    }
    let tcp = tcp.ok_or_else(|| (Failure::Unreachable, "could not connect".to_owned()))?;
    if !target.tls {
        return Ok(Stream::Plain(tcp));
    }
    let tls_failed = |why: String| (Failure::Tls, why);
    let name = ServerName::try_from(target.host.clone())
        .map_err(|_| tls_failed("the host is not a valid TLS server name".to_owned()))?;
    let handshake = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| tls_failed("the TLS handshake timed out".to_owned()))?
        .map_err(|e| tls_failed(format!("the TLS handshake failed: {e}")))?;
    Ok(Stream::Tls(Box::new(stream)))
}

/// The TLS client settings: the platform's root certificates (read once, from the system's
/// store), plus the authorities in `extra_pem` (PEM), with ring as the crypto provider and
/// HTTP/1.1 only.
///
/// ring rather than rustls's default aws-lc-rs keeps the build lean (aws-lc-rs compiles a
/// large C library); the cost is no post-quantum key exchange on these connections, which is
/// why rustls marks ring's provider deprecated.
#[allow(deprecated)]
pub fn tls_config(extra_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(pem) = extra_pem {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "the CA file is not PEM certificates".to_owned())?;
        if certs.is_empty() {
            return Err("the CA file holds no certificate".to_owned());
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|_| "the CA file holds a certificate that is not valid".to_owned())?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<&'static str> {
        refused_class(ip.parse().unwrap())
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "93.184.215.14",
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn every_internal_class_is_refused_in_both_families() {
        let cases = [
            ("127.0.0.1", "a loopback address"),
            ("127.255.0.9", "a loopback address"),
            ("0.0.0.0", "an unspecified address"),
            ("0.1.2.3", "an unspecified address"),
            ("10.0.0.1", "a private address"),
            ("172.16.5.4", "a private address"),
            ("172.31.255.255", "a private address"),
            ("192.168.1.1", "a private address"),
            ("100.64.0.1", "a shared (carrier-grade NAT) address"),
            ("100.100.100.200", "a shared (carrier-grade NAT) address"),
            ("169.254.169.254", "a link-local or metadata address"),
            ("224.0.0.1", "a multicast address"),
            ("239.255.255.250", "a multicast address"),
            ("255.255.255.255", "a broadcast address"),
            ("240.0.0.1", "a reserved address"),
            ("192.0.0.170", "an IETF protocol address"),
            ("192.0.2.1", "a documentation address"),
            ("198.51.100.7", "a documentation address"),
            ("203.0.113.9", "a documentation address"),
            ("198.18.0.1", "a benchmarking address"),
            ("::1", "a loopback address"),
            ("::", "an unspecified address"),
            ("fc00::1", "a unique local (private) address"),
            ("fd00:ec2::254", "a unique local (private) address"),
            ("fe80::1", "a link-local address"),
            ("fec0::1", "a site-local address"),
            ("ff02::1", "a multicast address"),
            ("2001:db8::1", "a documentation address"),
            ("2001::1", "a Teredo address"),
            ("100::1", "a discard-only address"),
            ("4000::1", "a reserved address"),
            // IPv6 forms that carry an internal IPv4 address.
            ("::ffff:127.0.0.1", "a loopback address"),
            ("::ffff:169.254.169.254", "a link-local or metadata address"),
            ("::ffff:10.0.0.1", "a private address"),
            ("::127.0.0.1", "a loopback address"),
            ("64:ff9b::a9fe:a9fe", "a link-local or metadata address"),
            ("2002:7f00:1::", "a loopback address"),
            ("2002:c0a8:101::1", "a private address"),
        ];
        for (ip, expected) in cases {
            assert_eq!(class(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn loopback_is_allowed_in_dev_only_and_nothing_else_is() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(check(lo, true).is_ok());
        assert!(check(lo, false).is_err());
        assert!(check("::ffff:127.0.0.1".parse().unwrap(), true).is_ok());
        assert!(check("10.0.0.1".parse().unwrap(), true).is_err());
        assert!(check("169.254.169.254".parse().unwrap(), true).is_err());
    }

    #[test]
    fn urls_are_parsed_and_refused_before_resolving() {
        let target = parse("https://hooks.example.com/koban?x=1", false).unwrap();
        assert_eq!(
            target,
            Target {
                tls: true,
                host: "hooks.example.com".into(),
                port: 443,
                path: "/koban?x=1".into()
            }
        );
        assert_eq!(target.authority(), "hooks.example.com");
        let target = parse("https://[2001:4860::1]:8443", false).unwrap();
        assert_eq!((target.port, target.path.as_str()), (8443, "/"));
        assert_eq!(target.authority(), "[2001:4860::1]:8443");
        assert_eq!(
            parse("http://127.0.0.1:9000/h", true).unwrap().authority(),
            "127.0.0.1:9000"
        );
        for (url, dev) in [
            ("http://hooks.example.com/x", false),
            ("ftp://hooks.example.com/x", true),
            ("https://127.0.0.1/x", false),
            ("https://localhost/x", false),
            ("https://a.localhost/x", false),
            ("https://[::1]/x", false),
            ("https://[::ffff:7f00:1]/x", false),
            ("https://169.254.169.254/latest", true),
            ("https://10.0.0.1/x", true),
            ("https://0x7f000001/x", false),
            ("https://2130706433/x", false),
            ("https://user:pass@hooks.example.com/x", false),
            ("https://evil.example@10.0.0.1/x", true),
            ("https://hooks.example.com:0/x", false),
            ("https://hooks.example.com:99999/x", false),
            ("https://hooks.example.com/x#frag", false),
            ("https://hooks example.com/x", false),
            ("https:///x", false),
            ("https://[::1/x", true),
        ] {
            assert!(parse(url, dev).is_err(), "{url} (dev {dev})");
        }
        assert!(parse(&format!("https://a.example/{}", "x".repeat(600)), false).is_err());
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_outside_dev() {
        let target = Target {
            tls: true,
            host: "localhost".into(),
            port: 443,
            path: "/".into(),
        };
        let (failure, why) = resolve(&target, false).await.unwrap_err();
        assert_eq!(failure, Failure::Refused);
        assert!(why.contains("loopback"), "{why}");
        assert!(!resolve(&target, true).await.unwrap().is_empty());
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        assert!(tls_config(Some(b"not a certificate")).is_err());
        assert!(tls_config(None).is_ok());
    }
}
