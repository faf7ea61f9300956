//! Table tests for the policy model: every grammar case, every refusal, the bypass attempts of
//! THREATS.md §7 and §10-12 that can be decided without a network.
//! Never a network: every case is decided on values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

fn name(s: &str) -> HostName {
    HostName::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn named(n: &str, addr: &str, port: u16) -> Destination {
    Destination::named(name(n), ip(addr), port)
}

fn allow_net(rules: &[&str]) -> AllowNet {
    AllowNet::parse(rules).unwrap_or_else(|e| panic!("{rules:?}: {e}"))
}

fn policy(json: &str) -> NetworkPolicy {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    NetworkPolicy::from_json(&v).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn policy_err(json: &str) -> PolicyError {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    match NetworkPolicy::from_json(&v) {
        Ok(p) => panic!("{json} accepted as {p:?}"),
        Err(e) => e,
    }
}

const PUBLIC: &str = "93.184.216.34";

// ---------------------------------------------------------------- names

#[test]
fn names_normalise() {
    let cases = [
        ("example.com", "example.com"),
        ("EXAMPLE.COM", "example.com"),
        ("Example.Com.", "example.com"),
        ("BÜCHER.example.", "xn--bcher-kva.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example"),
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
        ("ｅｘａｍｐｌｅ．ｃｏｍ", "example.com"), // fullwidth letters and full stop
        ("example。com", "example.com"),           // ideographic full stop
        ("a-b_c.d9", "a-b_c.d9"),
        ("localhost", "localhost"),
        ("1.example", "1.example"),
        ("123.example.com", "123.example.com"),
        ("ex.123a", "ex.123a"),
        ("0xg.example", "0xg.example"),
    ];
    for (input, want) in cases {
        let got = HostName::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(got.as_str(), want, "input {input:?}");
    }
}

#[test]
fn idna_equivalence() {
    assert_eq!(name("BÜCHER.example."), name("xn--bcher-kva.example"));
    assert_eq!(name("bücher.EXAMPLE"), name("xn--bcher-kva.example."));
}

#[test]
fn names_refused() {
    let long_label = "a".repeat(64);
    let label63 = "a".repeat(63);
    let long_name = [label63.as_str(); 4].join("."); // 255
    let ok_name = format!("{}.{}.{}.{}", label63, label63, label63, "a".repeat(61)); // 253
    assert_eq!(HostName::parse(&ok_name).unwrap().as_str().len(), 253);
    assert!(HostName::parse(&format!("{label63}.com")).is_ok());

    type Check = fn(&PolicyError) -> bool;
    let cases: Vec<(String, Check)> = vec![
        ("".into(), |e| matches!(e, PolicyError::Empty { .. })),
        (".".into(), |e| matches!(e, PolicyError::EmptyLabel { .. })),
        ("example.com..".into(), |e| {
            matches!(e, PolicyError::EmptyLabel { .. })
        }),
        ("a..b".into(), |e| {
            matches!(e, PolicyError::EmptyLabel { .. })
        }),
        (".a.b".into(), |e| {
            matches!(e, PolicyError::EmptyLabel { .. })
        }),
        (format!("{long_label}.com"), |e| {
            matches!(e, PolicyError::LabelTooLong { len: 64, .. })
        }),
        (long_name.clone(), |e| {
            matches!(e, PolicyError::NameTooLong { len: 255, .. })
        }),
        ("evil\0.google.com".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: '\0', .. })
        }),
        ("evil.com\r\nx".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: '\r', .. })
        }),
        ("ev\til.com".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: '\t', .. })
        }),
        ("evil.com\u{7f}".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { .. })
        }),
        ("evil\u{85}.com".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { .. })
        }),
        ("ev il.com".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: ' ', .. })
        }),
        ("evil\u{3000}.com".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { .. })
        }),
        ("ev%69l.com".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: '%', .. })
        }),
        ("user@evil.com".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: '@', .. })
        }),
        ("evil.com/x".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: '/', .. })
        }),
        ("evil.com\\x".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: '\\', .. })
        }),
        ("evil.com:80".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: ':', .. })
        }),
        ("*.evil.com".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: '*', .. })
        }),
        ("ev\u{200b}il.com".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { .. })
        }),
        ("evil\u{202e}moc.com".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { .. })
        }),
        ("ev\u{ad}il.com".into(), |e| {
            !matches!(e, PolicyError::NonCanonicalIpv4 { .. })
        }), // soft hyphen: mapped away by UTS-46? must not be a bypass either way
        ("ev!l.com".into(), |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: '!', .. })
        }),
        ("ev＠il.com".into(), |e| {
            matches!(
                e,
                PolicyError::Idna { .. } | PolicyError::ForbiddenChar { .. }
            )
        }), // fullwidth @
        ("ev％il.com".into(), |e| {
            matches!(
                e,
                PolicyError::Idna { .. } | PolicyError::ForbiddenChar { .. }
            )
        }), // fullwidth %
        ("xn--a.com".into(), |e| {
            matches!(e, PolicyError::Idna { .. })
        }), // bad punycode
        ("127.0.0.1".into(), |e| {
            matches!(e, PolicyError::NotAName { .. })
        }),
        ("2130706433".into(), |e| {
            matches!(e, PolicyError::NonCanonicalIpv4 { .. })
        }),
    ];
    for (input, check) in cases {
        match HostName::parse(&input) {
            Ok(n) if input.contains('\u{ad}') => {
                // UTS-46 deletes U+00AD; the result must still be a plain, different name.
                assert_eq!(n.as_str(), "evil.com");
            }
            Ok(n) => panic!("{input:?} accepted as {n}"),
            Err(e) => {
                assert!(check(&e), "{input:?}: unexpected error {e:?}");
                let msg = e.to_string();
                assert!(
                    !msg.contains('\0') && !msg.contains('\r'),
                    "raw control in message: {msg:?}"
                );
            }
        }
    }
}

#[test]
fn error_messages_name_input_and_reason() {
    let e = HostName::parse("evil\0.google.com")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(r#""evil\0.google.com""#) && e.contains("NUL"),
        "{e}"
    );
    let e = Host::parse("0177.0.0.1").unwrap_err().to_string();
    assert!(e.contains("0177.0.0.1") && e.contains("canonical"), "{e}");
    let e = AllowNet::parse(&["ok.com", "a@b.com"])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("allow_net[1]: ") && e.contains("a@b.com") && e.contains("userinfo"),
        "{e}"
    );
}

// ---------------------------------------------------------------- IP literals

#[test]
fn ipv4_canonical_only() {
    for ok in [
        "0.0.0.0",
        "127.0.0.1",
        "255.255.255.255",
        "1.2.3.4",
        "10.0.0.1",
    ] {
        assert_eq!(Host::parse(ok).unwrap(), Host::Ip(ip(ok)), "{ok}");
        assert_eq!(parse_ip_literal(ok).unwrap(), ip(ok));
    }
    assert_eq!(
        Host::parse("127.0.0.1.").unwrap(),
        Host::Ip(ip("127.0.0.1"))
    );
    let refused = [
        "0177.0.0.1",
        "2130706433",
        "127.1",
        "127.0.1",
        "0x7f.0.0.1",
        "0X7F.0.0.1",
        "0x7f000001",
        "127.0.0.01",
        "127.0.0.1.1",
        "256.0.0.1",
        "1.2.3.04",
        "0x",
        "1.2.3.0x4",
        "foo.123",
        "foo.0x1f",
        "１２７.０.０.１", // fullwidth digits map to 127.0.0.1 but were not written so
        "127.0.0.1..",
    ];
    for bad in refused {
        match Host::parse(bad) {
            Err(PolicyError::NonCanonicalIpv4 { .. }) | Err(PolicyError::EmptyLabel { .. }) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
        assert!(parse_ip_literal(bad).is_err(), "{bad}");
    }
}

#[test]
fn ipv6_literals() {
    assert_eq!(Host::parse("[::1]").unwrap(), Host::Ip(ip("::1")));
    assert_eq!(
        Host::parse("[2001:DB8::1]").unwrap(),
        Host::Ip(ip("2001:db8::1"))
    );
    assert_eq!(Host::parse("[::1]").unwrap().to_string(), "[::1]");
    assert_eq!(parse_ip_literal("::1").unwrap(), ip("::1"));
    assert_eq!(parse_ip_literal("[::1]").unwrap(), ip("::1"));
    for bad in [
        "[::1",
        "[]",
        "[fe80::1%eth0]",
        "[fe80::1%25eth0]",
        "[::ffff:127.0.0.01]",
        "[:::1]",
        "[1.2.3.4]",
    ] {
        assert!(Host::parse(bad).is_err(), "{bad}");
    }
    assert!(matches!(
        Host::parse("[fe80::1%eth0]"),
        Err(PolicyError::ZoneId { .. })
    ));
    assert!(matches!(
        parse_ip_literal("fe80::1%eth0"),
        Err(PolicyError::ZoneId { .. })
    ));
    // Bare IPv6 is not a host.
    assert!(Host::parse("::1").is_err());
}

#[test]
fn ports() {
    for (s, p) in [("1", 1), ("80", 80), ("443", 443), ("65535", 65535)] {
        assert_eq!(parse_port(s).unwrap(), p);
    }
    for bad in [
        "",
        "0",
        "65536",
        "99999999999",
        "080",
        "+80",
        "-1",
        "8 0",
        "http",
        "0x50",
        "８０",
    ] {
        assert!(
            matches!(parse_port(bad), Err(PolicyError::InvalidPort { .. })),
            "{bad:?}"
        );
    }
}

// ---------------------------------------------------------------- allowNet grammar

#[test]
fn allow_net_grammar() {
    let n = |s: &str| RuleTarget::Domain(DomainPattern::Exact(name(s)));
    let w = |s: &str| RuleTarget::Domain(DomainPattern::Wildcard(name(s)));
    let cases: Vec<(&str, RuleTarget, Option<u16>, &str)> = vec![
        ("example.com", n("example.com"), None, "example.com"),
        ("Example.COM.", n("example.com"), None, "example.com"),
        (
            "example.com:443",
            n("example.com"),
            Some(443),
            "example.com:443",
        ),
        (
            "bücher.example:8080",
            n("xn--bcher-kva.example"),
            Some(8080),
            "xn--bcher-kva.example:8080",
        ),
        ("*.example.com", w("example.com"), None, "*.example.com"),
        (
            "*.Example.com.:443",
            w("example.com"),
            Some(443),
            "*.example.com:443",
        ),
        ("*.github.io", w("github.io"), None, "*.github.io"),
        (
            "localhost:3000",
            n("localhost"),
            Some(3000),
            "localhost:3000",
        ),
        ("1.2.3.4", RuleTarget::Ip(ip("1.2.3.4")), None, "1.2.3.4"),
        (
            "1.2.3.4:22",
            RuleTarget::Ip(ip("1.2.3.4")),
            Some(22),
            "1.2.3.4:22",
        ),
        ("[::1]", RuleTarget::Ip(ip("::1")), None, "[::1]"),
        (
            "[2001:db8::1]:443",
            RuleTarget::Ip(ip("2001:db8::1")),
            Some(443),
            "[2001:db8::1]:443",
        ),
        (
            "[2001:DB8:0:0::1]",
            RuleTarget::Ip(ip("2001:db8::1")),
            None,
            "[2001:db8::1]",
        ),
    ];
    for (input, target, port, display) in cases {
        let rule = NetRule::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(rule.target, target, "{input}");
        assert_eq!(rule.port, port, "{input}");
        assert_eq!(rule.to_string(), display, "{input}");
        assert_eq!(
            NetRule::parse(&rule.to_string()).unwrap(),
            rule,
            "{input} round trip"
        );
    }
}

#[test]
fn allow_net_refused() {
    type Check = fn(&PolicyError) -> bool;
    let cases: Vec<(&str, Check)> = vec![
        ("", |e| matches!(e, PolicyError::Empty { .. })),
        ("*", |e| matches!(e, PolicyError::InvalidRule { .. })),
        ("*:443", |e| matches!(e, PolicyError::InvalidRule { .. })),
        ("*.", |e| matches!(e, PolicyError::InvalidRule { .. })),
        ("*.com", |e| {
            matches!(e, PolicyError::WildcardOverPublicSuffix { .. })
        }),
        ("*.internal", |e| {
            matches!(e, PolicyError::WildcardOverPublicSuffix { .. })
        }),
        ("*.co.uk", |e| {
            matches!(e, PolicyError::WildcardOverPublicSuffix { .. })
        }),
        // PSL wildcard rule `*.ck`: every `x.ck` is a public suffix.
        ("*.anything.ck", |e| {
            matches!(e, PolicyError::WildcardOverPublicSuffix { .. })
        }),
        ("*.com.au:443", |e| {
            matches!(e, PolicyError::WildcardOverPublicSuffix { .. })
        }),
        ("*.*.example.com", |e| {
            matches!(e, PolicyError::InvalidRule { .. })
        }),
        ("a.*.example.com", |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: '*', .. })
        }),
        ("*example.com", |e| {
            matches!(
                e,
                PolicyError::InvalidRule { .. } | PolicyError::ForbiddenChar { .. }
            )
        }),
        ("**.example.com", |e| {
            matches!(
                e,
                PolicyError::InvalidRule { .. } | PolicyError::ForbiddenChar { .. }
            )
        }),
        ("*.1.2.3", |e| matches!(e, PolicyError::InvalidRule { .. })),
        ("example.com:", |e| {
            matches!(e, PolicyError::InvalidPort { .. })
        }),
        ("example.com:0", |e| {
            matches!(e, PolicyError::InvalidPort { .. })
        }),
        ("example.com:65536", |e| {
            matches!(e, PolicyError::InvalidPort { .. })
        }),
        ("example.com:0443", |e| {
            matches!(e, PolicyError::InvalidPort { .. })
        }),
        ("example.com:https", |e| {
            matches!(e, PolicyError::InvalidPort { .. })
        }),
        (":443", |e| matches!(e, PolicyError::Empty { .. })),
        ("https://example.com", |e| {
            matches!(e, PolicyError::InvalidRule { .. })
        }),
        ("user@example.com", |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: '@', .. })
        }),
        ("example.com/path", |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: '/', .. })
        }),
        ("evil\0.google.com", |e| {
            matches!(e, PolicyError::ForbiddenChar { ch: '\0', .. })
        }),
        ("0177.0.0.1", |e| {
            matches!(e, PolicyError::NonCanonicalIpv4 { .. })
        }),
        ("2130706433", |e| {
            matches!(e, PolicyError::NonCanonicalIpv4 { .. })
        }),
        ("2130706433:80", |e| {
            matches!(e, PolicyError::NonCanonicalIpv4 { .. })
        }),
        ("127.1", |e| {
            matches!(e, PolicyError::NonCanonicalIpv4 { .. })
        }),
        ("0x7f.0.0.1", |e| {
            matches!(e, PolicyError::NonCanonicalIpv4 { .. })
        }),
        ("::1", |e| matches!(e, PolicyError::InvalidIpv6 { .. })),
        ("2001:db8::1:443", |e| {
            matches!(e, PolicyError::InvalidIpv6 { .. })
        }),
        ("[::1", |e| matches!(e, PolicyError::InvalidRule { .. })),
        ("[::1]443", |e| matches!(e, PolicyError::InvalidRule { .. })),
        ("[::1]:", |e| matches!(e, PolicyError::InvalidPort { .. })),
        ("[::1]:70000", |e| {
            matches!(e, PolicyError::InvalidPort { .. })
        }),
        ("[fe80::1%eth0]", |e| {
            matches!(e, PolicyError::ZoneId { .. })
        }),
        ("[fe80::1%eth0]:443", |e| {
            matches!(e, PolicyError::ZoneId { .. })
        }),
        ("[example.com]", |e| {
            matches!(e, PolicyError::InvalidIpv6 { .. })
        }),
        ("[::ffff:127.0.0.1]", |e| {
            matches!(e, PolicyError::MappedIpv6 { .. })
        }),
        ("[::ffff:7f00:1]:80", |e| {
            matches!(e, PolicyError::MappedIpv6 { .. })
        }),
    ];
    for (input, check) in cases {
        match NetRule::parse(input) {
            Ok(r) => panic!("{input:?} accepted as {r}"),
            Err(e) => assert!(check(&e), "{input:?}: unexpected error {e:?} ({e})"),
        }
    }
}

#[test]
fn wildcard_never_matches_apex_or_lookalikes() {
    let an = allow_net(&["*.supabase.co"]);
    for (host, allowed) in [
        ("supabase.co", false),
        ("evilsupabase.co", false),
        ("supabase.co.evil.com", false),
        ("x-supabase.co", false),
        ("abc.supabase.co", true),
        ("a.b.supabase.co", true),
        ("ABC.SUPABASE.CO.", true),
    ] {
        let d = an.allows(&named(host, PUBLIC, 443));
        assert_eq!(d.is_allowed(), allowed, "{host}: {d}");
        if allowed {
            assert_eq!(d.rule, r#"allow_net "*.supabase.co""#);
        }
    }
}

#[test]
fn allow_net_matching() {
    let an = allow_net(&[
        "example.com:443",
        "api.example.org",
        "*.svc.example.net:5432",
        "1.2.3.4:22",
        "[2001:db8::1]",
    ]);
    let cases = [
        (named("example.com", PUBLIC, 443), Some("example.com:443")),
        (named("EXAMPLE.com.", PUBLIC, 443), Some("example.com:443")),
        (named("example.com", PUBLIC, 80), None),
        (named("www.example.com", PUBLIC, 443), None),
        (named("api.example.org", PUBLIC, 1), Some("api.example.org")),
        (
            named("api.example.org", PUBLIC, 65535),
            Some("api.example.org"),
        ),
        (
            named("db.svc.example.net", PUBLIC, 5432),
            Some("*.svc.example.net:5432"),
        ),
        (named("db.svc.example.net", PUBLIC, 5433), None),
        (named("svc.example.net", PUBLIC, 5432), None),
        (Destination::ip(ip("1.2.3.4"), 22), Some("1.2.3.4:22")),
        (Destination::ip(ip("1.2.3.4"), 23), None),
        (
            Destination::ip(ip("::ffff:1.2.3.4"), 22),
            Some("1.2.3.4:22"),
        ),
        (named("whatever.example", "1.2.3.4", 22), Some("1.2.3.4:22")),
        (
            Destination::ip(ip("2001:db8::1"), 8443),
            Some("[2001:db8::1]"),
        ),
        (Destination::ip(ip("2001:db8::2"), 8443), None),
        (Destination::ip(ip(PUBLIC), 443), None),
    ];
    for (dest, want) in cases {
        let d = an.allows(&dest);
        match want {
            Some(rule) => {
                assert!(d.is_allowed(), "{dest}: {d}");
                assert_eq!(d.rule, format!("allow_net \"{rule}\""), "{dest}");
            }
            None => assert_eq!(d, Decision::deny("allow_net: no rule matches"), "{dest}"),
        }
    }
    // Empty list: nothing.
    assert!(!allow_net(&[])
        .allows(&named("example.com", PUBLIC, 443))
        .is_allowed());
}

// ---------------------------------------------------------------- CIDRs

#[test]
fn cidrs() {
    for (input, want) in [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("1.2.3.4", "1.2.3.4/32"),
        ("1.2.3.4/32", "1.2.3.4/32"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("::/0", "::/0"),
        ("::1", "::1/128"),
    ] {
        assert_eq!(parse_cidr(input).unwrap().to_string(), want, "{input}");
    }
    for bad in [
        "",
        "/8",
        "10.0.0.0/",
        "10.0.0.0/33",
        "10.0.0.0/08",
        "10.0.0.0/+8",
        "010.0.0.0/8",
        "10.0/8",
        "167772160/8",
        "::/129",
        "fe80::%eth0/64",
        "::ffff:10.0.0.0/104",
        "10.0.0.0/8/8",
        "example.com/8",
    ] {
        assert!(parse_cidr(bad).is_err(), "{bad:?} accepted");
    }
    match parse_cidr("10.0.0.1/8") {
        Err(e @ PolicyError::NonCanonicalCidr { .. }) => {
            assert!(e.to_string().contains("10.0.0.0/8"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- network_policy

#[test]
fn network_policy_parsing() {
    assert_eq!(
        policy(r#"{"mode":"allow-all"}"#).mode(),
        NetworkMode::AllowAll
    );
    assert_eq!(
        policy(
            r#"{"mode":"deny-all","allowed_domains":null,"allowed_cidrs":null,"denied_cidrs":null}"#
        )
        .mode(),
        NetworkMode::DenyAll
    );
    assert_eq!(policy("null"), NetworkPolicy::allow_all());
    let p = policy(
        r#"{"mode":"custom","allowed_domains":["API.Example.com.","*.bücher.example"],"allowed_cidrs":["203.0.113.0/24"],"denied_cidrs":null}"#,
    );
    let spec = p.to_spec();
    assert_eq!(
        spec.allowed_domains,
        ["api.example.com", "*.xn--bcher-kva.example"]
    );
    assert_eq!(spec.allowed_cidrs, ["203.0.113.0/24"]);
    assert_eq!(NetworkPolicy::from_spec(&spec).unwrap(), p);
    let round: NetworkPolicySpec =
        serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(round, spec);

    let errs = [
        (r#"{"mode":"allow"}"#, "unknown variant"),
        (r#"{}"#, "missing field"),
        (
            r#"{"mode":"custom","allowed_domain":["x.com"]}"#,
            "unknown field",
        ),
        (
            r#"{"mode":"custom","allowed_domains":["ok.com","evil\u0000.com"]}"#,
            "allowed_domains[1]",
        ),
        (
            r#"{"mode":"custom","allowed_domains":["1.2.3.4"]}"#,
            "allowed_cidrs",
        ),
        (
            r#"{"mode":"custom","allowed_domains":["*.com"]}"#,
            "public suffix",
        ),
        (
            r#"{"mode":"custom","allowed_domains":["example.com:443"]}"#,
            "allowed_domains[0]",
        ),
        (
            r#"{"mode":"custom","allowed_cidrs":["10.0.0.1/8"]}"#,
            "allowed_cidrs[0]",
        ),
        (
            r#"{"mode":"custom","denied_cidrs":["0177.0.0.0/8"]}"#,
            "denied_cidrs[0]",
        ),
        (
            r#"{"mode":"deny-all","allowed_domains":["x.com"]}"#,
            "deny-all takes no allowed_domains",
        ),
        (
            r#"{"mode":"deny-all","denied_cidrs":["10.0.0.0/8"]}"#,
            "deny-all takes no denied_cidrs",
        ),
        (
            r#"{"mode":"allow-all","allowed_cidrs":["10.0.0.0/8"]}"#,
            "allow-all takes no allowed_cidrs",
        ),
    ];
    for (json, needle) in errs {
        let e = policy_err(json).to_string();
        assert!(e.contains(needle), "{json}: {e}");
    }
}

#[test]
fn network_policy_matching() {
    let p = policy(
        r#"{"mode":"custom","allowed_domains":["api.example.com","*.example.org"],
            "allowed_cidrs":["203.0.113.0/24","2001:db8::/32"],
            "denied_cidrs":["203.0.113.128/25","198.51.100.7","2001:db8:bad::/48"]}"#,
    );
    let cases = [
        (
            named("api.example.com", PUBLIC, 443),
            true,
            r#"network_policy allowed_domains "api.example.com""#,
        ),
        (
            named("www.example.org", PUBLIC, 80),
            true,
            r#"network_policy allowed_domains "*.example.org""#,
        ),
        (
            named("example.org", PUBLIC, 80),
            false,
            "network_policy custom: no rule matches",
        ),
        (
            named("other.com", PUBLIC, 443),
            false,
            "network_policy custom: no rule matches",
        ),
        (
            Destination::ip(ip("203.0.113.5"), 22),
            true,
            r#"network_policy allowed_cidrs "203.0.113.0/24""#,
        ),
        (
            Destination::ip(ip("203.0.113.200"), 22),
            false,
            r#"network_policy denied_cidrs "203.0.113.128/25""#,
        ),
        // Denied CIDR beats an allowed domain.
        (
            named("api.example.com", "198.51.100.7", 443),
            false,
            r#"network_policy denied_cidrs "198.51.100.7/32""#,
        ),
        (
            named("api.example.com", "::ffff:198.51.100.7", 443),
            false,
            r#"network_policy denied_cidrs "198.51.100.7/32""#,
        ),
        (
            named("api.example.com", "64:ff9b::c633:6407", 443),
            false,
            r#"network_policy denied_cidrs "198.51.100.7/32""#,
        ),
        (
            Destination::ip(ip("2001:db8::1"), 443),
            true,
            r#"network_policy allowed_cidrs "2001:db8::/32""#,
        ),
        (
            Destination::ip(ip("2001:db8:bad::1"), 443),
            false,
            r#"network_policy denied_cidrs "2001:db8:bad::/48""#,
        ),
    ];
    for (dest, allowed, rule) in cases {
        let d = p.allows(&dest);
        assert_eq!((d.is_allowed(), d.rule.as_str()), (allowed, rule), "{dest}");
    }
    let all_but = policy(r#"{"mode":"allow-all","denied_cidrs":["203.0.113.0/24"]}"#);
    assert!(all_but.allows(&named("x.com", PUBLIC, 1)).is_allowed());
    assert!(!all_but
        .allows(&named("x.com", "203.0.113.9", 1))
        .is_allowed());
    let none = policy(r#"{"mode":"deny-all"}"#);
    assert_eq!(
        none.allows(&named("x.com", PUBLIC, 443)),
        Decision::deny("network_policy deny-all")
    );
    assert!(!none.allows_name(&name("x.com")).is_allowed());
}

// ---------------------------------------------------------------- reserved ranges

#[test]
fn classify_table() {
    use ReservedKind::*;
    type Want = Option<(ReservedKind, &'static str, Option<Embedding>)>;
    let cases: &[(&str, Want)] = &[
        ("127.0.0.1", Some((Loopback, "127.0.0.0/8", None))),
        ("127.255.255.254", Some((Loopback, "127.0.0.0/8", None))),
        ("::1", Some((Loopback, "::1/128", None))),
        ("0.0.0.0", Some((Unspecified, "0.0.0.0/32", None))),
        ("::", Some((Unspecified, "::/128", None))),
        ("0.1.2.3", Some((ThisNetwork, "0.0.0.0/8", None))),
        ("10.0.0.1", Some((Private, "10.0.0.0/8", None))),
        ("172.16.0.1", Some((Private, "172.16.0.0/12", None))),
        ("172.31.255.255", Some((Private, "172.16.0.0/12", None))),
        ("192.168.1.1", Some((Private, "192.168.0.0/16", None))),
        ("fc00::1", Some((Private, "fc00::/7", None))),
        ("fdff::1", Some((Private, "fc00::/7", None))),
        ("fec0::1", Some((Private, "fec0::/10", None))),
        ("64:ff9b:1::1", Some((Private, "64:ff9b:1::/48", None))),
        ("169.254.0.1", Some((LinkLocal, "169.254.0.0/16", None))),
        ("fe80::1", Some((LinkLocal, "fe80::/10", None))),
        (
            "169.254.169.254",
            Some((Metadata, "169.254.169.254/32", None)),
        ),
        ("169.254.170.2", Some((Metadata, "169.254.170.2/32", None))),
        (
            "100.100.100.200",
            Some((Metadata, "100.100.100.200/32", None)),
        ),
        ("fd00:ec2::254", Some((Metadata, "fd00:ec2::254/128", None))),
        ("100.64.0.1", Some((Cgnat, "100.64.0.0/10", None))),
        ("100.127.255.255", Some((Cgnat, "100.64.0.0/10", None))),
        ("224.0.0.1", Some((Multicast, "224.0.0.0/4", None))),
        ("ff02::1", Some((Multicast, "ff00::/8", None))),
        (
            "255.255.255.255",
            Some((Broadcast, "255.255.255.255/32", None)),
        ),
        ("240.0.0.1", Some((FutureUse, "240.0.0.0/4", None))),
        ("198.18.0.1", Some((Benchmarking, "198.18.0.0/15", None))),
        (
            "198.19.255.255",
            Some((Benchmarking, "198.18.0.0/15", None)),
        ),
        ("192.0.0.8", Some((IetfProtocol, "192.0.0.0/24", None))),
        ("100::1", Some((DiscardOnly, "100::/64", None))),
        ("192.0.2.2", Some((Documentation, "192.0.2.0/24", None))),
        (
            "198.51.100.7",
            Some((Documentation, "198.51.100.0/24", None)),
        ),
        (
            "203.0.113.255",
            Some((Documentation, "203.0.113.0/24", None)),
        ),
        ("2001:db8::1", Some((Documentation, "2001:db8::/32", None))),
        (
            "2001:db8:ffff::9",
            Some((Documentation, "2001:db8::/32", None)),
        ),
        (
            "::ffff:192.0.2.2",
            Some((Documentation, "192.0.2.0/24", Some(Embedding::Ipv4Mapped))),
        ),
        // IPv4 embedded in IPv6.
        (
            "::ffff:127.0.0.1",
            Some((Loopback, "127.0.0.0/8", Some(Embedding::Ipv4Mapped))),
        ),
        (
            "::ffff:7f00:1",
            Some((Loopback, "127.0.0.0/8", Some(Embedding::Ipv4Mapped))),
        ),
        (
            "::ffff:169.254.169.254",
            Some((Metadata, "169.254.169.254/32", Some(Embedding::Ipv4Mapped))),
        ),
        (
            "::ffff:a00:1",
            Some((Private, "10.0.0.0/8", Some(Embedding::Ipv4Mapped))),
        ),
        (
            "::127.0.0.1",
            Some((Loopback, "127.0.0.0/8", Some(Embedding::Ipv4Compatible))),
        ),
        (
            "::ffff:0:10.0.0.1",
            Some((Private, "10.0.0.0/8", Some(Embedding::Ipv4Translated))),
        ),
        (
            "64:ff9b::10.0.0.1",
            Some((Private, "10.0.0.0/8", Some(Embedding::Nat64))),
        ),
        (
            "64:ff9b::a9fe:a9fe",
            Some((Metadata, "169.254.169.254/32", Some(Embedding::Nat64))),
        ),
        (
            "2002:7f00:1::1",
            Some((Loopback, "127.0.0.0/8", Some(Embedding::SixToFour))),
        ),
        (
            "2002:c0a8:101::",
            Some((Private, "192.168.0.0/16", Some(Embedding::SixToFour))),
        ),
        ("::8.8.8.8", Some((Ipv4Compatible, "::/96", None))),
        // Public.
        ("8.8.8.8", None),
        ("93.184.216.34", None),
        ("172.32.0.1", None),
        ("100.128.0.1", None),
        ("169.255.0.1", None),
        ("198.20.0.1", None),
        ("2606:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::8.8.8.8", None),
        ("2002:808:808::1", None),
        ("192.0.3.1", None),
        ("198.51.101.1", None),
        ("203.0.114.1", None),
        ("2001:db9::1", None),
    ];
    for (addr, want) in cases {
        let got = classify(ip(addr)).map(|r| (r.kind, r.net.to_string(), r.via));
        let want = want.map(|(k, n, v)| (k, n.to_owned(), v));
        assert_eq!(got, want, "{addr}");
    }
    let r = classify(ip("::ffff:127.0.0.1")).unwrap();
    assert_eq!(r.to_string(), "loopback 127.0.0.0/8 (via IPv4-mapped IPv6)");
}

// ---------------------------------------------------------------- EgressPolicy

fn egress(allow: Option<&[&str]>, np: Option<&str>, allow_ranges: &[&str]) -> EgressPolicy {
    EgressPolicy::new(
        allow.map(allow_net),
        np.map(policy),
        OperatorNet {
            allow_ranges: allow_ranges
                .iter()
                .map(|r| parse_cidr(r).unwrap())
                .collect(),
            deny_ranges: Vec::new(),
        },
    )
}

#[test]
fn rebinding_is_refused_with_range_named() {
    let p = egress(Some(&["api.example.com", "*.example.org"]), None, &[]);
    let cases = [
        (
            "api.example.com",
            "10.0.0.1",
            "reserved range private 10.0.0.0/8",
        ),
        (
            "api.example.com",
            "127.0.0.1",
            "reserved range loopback 127.0.0.0/8",
        ),
        ("api.example.com", "::1", "reserved range loopback ::1/128"),
        (
            "a.example.org",
            "169.254.169.254",
            "reserved range metadata 169.254.169.254/32",
        ),
        (
            "a.example.org",
            "fd00:ec2::254",
            "reserved range metadata fd00:ec2::254/128",
        ),
        (
            "a.example.org",
            "::ffff:127.0.0.1",
            "reserved range loopback 127.0.0.0/8",
        ),
        (
            "a.example.org",
            "::ffff:7f00:1",
            "reserved range loopback 127.0.0.0/8",
        ),
        (
            "a.example.org",
            "::ffff:a9fe:a9fe",
            "reserved range metadata 169.254.169.254/32",
        ),
        (
            "a.example.org",
            "64:ff9b::192.168.0.1",
            "reserved range private 192.168.0.0/16 (via NAT64)",
        ),
        (
            "a.example.org",
            "198.18.0.5",
            "reserved range benchmarking 198.18.0.0/15",
        ),
        (
            "a.example.org",
            "100.64.1.1",
            "reserved range cgnat 100.64.0.0/10",
        ),
        (
            "a.example.org",
            "0.0.0.0",
            "reserved range unspecified 0.0.0.0/32",
        ),
    ];
    for (host, addr, rule) in cases {
        let d = p.decide(&named(host, addr, 443));
        assert!(!d.is_allowed(), "{host} -> {addr}: {d}");
        assert!(d.rule.starts_with(rule), "{host} -> {addr}: {}", d.rule);
    }
    // Same name, public address: allowed.
    assert!(p
        .decide(&named("api.example.com", PUBLIC, 443))
        .is_allowed());
    // Reserved ranges hold with no policy at all, and against IP literals.
    let open = EgressPolicy::default();
    assert!(open.decide(&named("x.com", PUBLIC, 443)).is_allowed());
    assert!(!open
        .decide(&Destination::ip(ip("169.254.169.254"), 80))
        .is_allowed());
    assert!(!open
        .decide(&Destination::ip(ip("::ffff:10.1.2.3"), 80))
        .is_allowed());
    // An allowNet IP rule on a reserved address does not lift the reservation.
    let p = egress(Some(&["10.0.0.1", "[::1]"]), None, &[]);
    assert!(!p.decide(&Destination::ip(ip("10.0.0.1"), 80)).is_allowed());
    assert!(!p.decide(&Destination::ip(ip("::1"), 80)).is_allowed());
}

#[test]
fn operator_ranges() {
    let p = egress(Some(&["api.example.test"]), None, &["127.0.0.0/8"]);
    let d = p.decide(&named("api.example.test", "127.0.0.1", 9443));
    assert!(d.is_allowed(), "{d}");
    assert_eq!(
        d.rule,
        r#"allow_net "api.example.test"; operator allow_ranges "127.0.0.0/8""#
    );
    // Mapped form of an allowed range is the same address.
    assert!(p
        .decide(&named("api.example.test", "::ffff:127.0.0.1", 9443))
        .is_allowed());
    // The policy still applies inside an allowed range.
    assert!(!p
        .decide(&named("other.test", "127.0.0.1", 9443))
        .is_allowed());
    // Other reserved ranges stay refused; NAT64 of loopback is not loopback.
    assert!(!p
        .decide(&named("api.example.test", "10.0.0.1", 9443))
        .is_allowed());
    assert!(!p
        .decide(&named("api.example.test", "64:ff9b::7f00:1", 9443))
        .is_allowed());
    assert!(!p
        .decide(&named("api.example.test", "::1", 9443))
        .is_allowed());
    // deny_ranges beat everything.
    let mut p = egress(None, None, &["10.0.0.0/8"]);
    p.operator.deny_ranges = vec![
        parse_cidr("10.1.0.0/16").unwrap(),
        parse_cidr("203.0.113.0/24").unwrap(),
    ];
    assert!(p.decide(&Destination::ip(ip("10.2.0.1"), 80)).is_allowed());
    assert_eq!(
        p.decide(&Destination::ip(ip("10.1.0.1"), 80)).rule,
        r#"operator deny_ranges "10.1.0.0/16""#
    );
    assert!(!p
        .decide(&Destination::ip(ip("::ffff:203.0.113.1"), 80))
        .is_allowed());
}

#[test]
fn operator_config_deserialises_strictly() {
    let ok: OperatorNet =
        serde_json::from_str(r#"{"allow_ranges":["127.0.0.0/8","::1"]}"#).unwrap();
    assert_eq!(ok.allow_ranges.len(), 2);
    assert!(ok.deny_ranges.is_empty());
    for bad in [
        r#"{"allow_ranges":["127.0.0.1/8"]}"#,
        r#"{"allow_ranges":["0177.0.0.0/8"]}"#,
        r#"{"allow_range":[]}"#,
    ] {
        assert!(serde_json::from_str::<OperatorNet>(bad).is_err(), "{bad}");
    }
}

#[test]
fn combined_policies_both_must_allow() {
    let p = egress(
        Some(&["api.example.com:443", "db.example.com"]),
        Some(
            r#"{"mode":"custom","allowed_domains":["*.example.com"],"denied_cidrs":["151.101.0.0/16"]}"#,
        ),
        &[],
    );
    let d = p.decide(&named("api.example.com", PUBLIC, 443));
    assert!(d.is_allowed());
    assert_eq!(
        d.rule,
        r#"network_policy allowed_domains "*.example.com"; allow_net "api.example.com:443""#
    );
    // allow_net port rule.
    assert_eq!(
        p.decide(&named("api.example.com", PUBLIC, 80)).rule,
        "allow_net: no rule matches"
    );
    // network_policy says no.
    assert!(!p.decide(&named("other.com", PUBLIC, 443)).is_allowed());
    // Denied CIDR overrides both allowed names.
    assert_eq!(
        p.decide(&named("db.example.com", "151.101.1.4", 5432)).rule,
        r#"network_policy denied_cidrs "151.101.0.0/16""#
    );

    let p = egress(None, Some(r#"{"mode":"deny-all"}"#), &[]);
    assert_eq!(
        p.decide(&named("x.com", PUBLIC, 443)).rule,
        "network_policy deny-all"
    );
}

#[test]
fn resolver_names() {
    let open = EgressPolicy::default();
    assert!(!open.restricts_names());
    assert!(open.allows_name(&name("anything.com"), None).is_allowed());
    let allow_all = egress(
        None,
        Some(r#"{"mode":"allow-all","denied_cidrs":["203.0.113.0/24"]}"#),
        &[],
    );
    assert!(!allow_all.restricts_names());

    let p = egress(
        Some(&["api.example.com:443", "*.example.org", "1.2.3.4"]),
        None,
        &[],
    );
    assert!(p.restricts_names());
    let cases = [
        ("api.example.com", None, true),
        ("api.example.com", Some(443), true),
        ("api.example.com", Some(80), false),
        ("API.EXAMPLE.COM.", None, true),
        ("x.example.org", Some(1), true),
        ("example.org", None, false),
        ("secret-data.exfil.example.net", None, false),
        ("1-2-3-4.example.net", None, false),
    ];
    for (n, port, want) in cases {
        assert_eq!(
            p.allows_name(&name(n), port).is_allowed(),
            want,
            "{n} {port:?}"
        );
    }
    let denied = egress(
        None,
        Some(r#"{"mode":"custom","allowed_cidrs":["203.0.113.0/24"]}"#),
        &[],
    );
    assert!(denied.restricts_names());
    assert!(!denied.allows_name(&name("x.com"), None).is_allowed());
    let deny_all = egress(None, Some(r#"{"mode":"deny-all"}"#), &[]);
    assert!(!deny_all.allows_name(&name("x.com"), Some(443)).is_allowed());
}

// ---------------------------------------------------------------- properties

fn label() -> impl Strategy<Value = String> {
    // `xn--` labels are punycode and must decode; random ones do not (they are tested apart).
    "[a-zA-Z0-9_][a-zA-Z0-9_-]{0,20}".prop_filter("no random punycode", |l: &String| {
        !l.to_ascii_lowercase().starts_with("xn--")
    })
}

fn hostname_str() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(label(), 1..5),
        "[a-zA-Z][a-zA-Z0-9]{1,10}",
        any::<bool>(),
    )
        .prop_map(|(mut ls, tld, dot)| {
            ls.push(tld);
            let mut s = ls.join(".");
            if dot {
                s.push('.');
            }
            s
        })
}

proptest! {
    #[test]
    fn normalisation_is_idempotent(s in "\\PC{0,40}") {
        if let Ok(n) = HostName::parse(&s) {
            prop_assert_eq!(HostName::parse(n.as_str()).unwrap(), n.clone());
            prop_assert!(n.as_str().len() <= MAX_NAME_LEN);
            prop_assert!(n.labels().all(|l| !l.is_empty() && l.len() <= MAX_LABEL_LEN));
        }
    }

    #[test]
    fn ascii_names_parse_and_lowercase(s in hostname_str()) {
        let n = HostName::parse(&s).unwrap();
        prop_assert_eq!(n.as_str(), s.trim_end_matches('.').to_ascii_lowercase());
    }

    #[test]
    fn rules_round_trip(s in hostname_str(), port in prop::option::of(1u16..), wild in any::<bool>()) {
        let mut input = if wild { format!("*.q{s}") } else { s };
        if let Some(p) = port {
            input = format!("{input}:{p}");
        }
        match NetRule::parse(&input) {
            Ok(rule) => prop_assert_eq!(NetRule::parse(&rule.to_string()).unwrap(), rule),
            // Random names can land on a PSL wildcard rule (`*.ck`): refusing is right.
            Err(PolicyError::WildcardOverPublicSuffix { .. }) if wild => {}
            Err(e) => prop_assert!(false, "{input:?}: {e}"),
        }
    }

    #[test]
    fn ip_rules_round_trip(v4 in any::<Ipv4Addr>(), v6 in any::<Ipv6Addr>(), port in prop::option::of(1u16..)) {
        let suffix = port.map(|p| format!(":{p}")).unwrap_or_default();
        let r4 = NetRule::parse(&format!("{v4}{suffix}")).unwrap();
        prop_assert_eq!(&r4.target, &RuleTarget::Ip(IpAddr::V4(v4)));
        prop_assert_eq!(NetRule::parse(&r4.to_string()).unwrap(), r4);
        if v6.to_ipv4_mapped().is_none() {
            let r6 = NetRule::parse(&format!("[{v6}]{suffix}")).unwrap();
            prop_assert_eq!(NetRule::parse(&r6.to_string()).unwrap(), r6);
        }
    }

    #[test]
    fn parsers_never_panic(s in "\\PC{0,60}") {
        let _ = NetRule::parse(&s);
        let _ = Host::parse(&s);
        let _ = parse_cidr(&s);
        let _ = DomainPattern::parse(&s);
    }

    #[test]
    fn mapped_v6_classifies_like_v4(v4 in any::<Ipv4Addr>()) {
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        prop_assert_eq!(
            classify(mapped).map(|r| (r.kind, r.net)),
            classify(IpAddr::V4(v4)).map(|r| (r.kind, r.net))
        );
        let p = EgressPolicy::default();
        prop_assert_eq!(
            p.decide(&Destination::ip(mapped, 80)).verdict,
            p.decide(&Destination::ip(IpAddr::V4(v4), 80)).verdict
        );
    }

    #[test]
    fn wildcard_never_matches_apex(s in hostname_str()) {
        let base = HostName::parse(&format!("q{s}")).unwrap();
        if let Ok(p) = DomainPattern::parse(&format!("*.{base}")) {
            prop_assert!(!p.matches(&base));
            let sub = HostName::parse(&format!("a.{base}")).unwrap();
            prop_assert!(p.matches(&sub));
            let glued = HostName::parse(&format!("evil{base}")).unwrap();
            prop_assert!(!p.matches(&glued));
        }
    }
}
