//! Domain patterns shared by `allowNet` and `network_policy.allowed_domains`: an exact name or
//! `*.base` (any strict subdomain of `base`, one or more labels, never `base` itself).

use std::fmt;
use std::str::FromStr;

use super::host::HostName;
use super::PolicyError;

/// `example.com` or `*.example.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DomainPattern {
    /// Exactly this name.
    Exact(HostName),
    /// Any strict subdomain of this name (`*.base`); never the name itself.
    Wildcard(HostName),
}

impl DomainPattern {
    /// Parses `name` or `*.name`. Refused wildcards: `*` alone, `*.` + one label (`*.com`,
    /// `*.internal`), `*.` + an ICANN public suffix (`*.co.uk`), `*` anywhere but a leading
    /// `*.`. Wildcards over private-section suffixes (`*.github.io`) are accepted: they name one
    /// platform, on purpose.
    pub fn parse(input: &str) -> Result<Self, PolicyError> {
        let invalid = |why: &str| PolicyError::InvalidRule {
            input: input.to_owned(),
            why: why.to_owned(),
        };
        if input.is_empty() {
            return Err(PolicyError::Empty {
                what: "domain pattern",
            });
        }
        if input == "*" {
            return Err(invalid(
                "'*' alone is not a rule; omit allow_net (or use mode allow-all) to allow every public destination",
            ));
        }
        let Some(base) = input.strip_prefix("*.") else {
            return HostName::parse(input).map(DomainPattern::Exact);
        };
        if base.is_empty() {
            return Err(invalid("'*.' needs a domain after it"));
        }
        let base = HostName::parse(base).map_err(|e| match e {
            PolicyError::NotAName { .. } | PolicyError::NonCanonicalIpv4 { .. } => {
                invalid("a wildcard needs a domain name, not an IP address")
            }
            PolicyError::ForbiddenChar { ch: '*', .. } => {
                invalid("a wildcard is only allowed as one leading '*.'")
            }
            other => other,
        })?;
        if base.label_count() < 2 {
            return Err(PolicyError::WildcardOverPublicSuffix {
                input: input.to_owned(),
                suffix: base.as_str().to_owned(),
            });
        }
        if let Some(suffix) = psl::suffix(base.as_str().as_bytes()) {
            if suffix.typ() == Some(psl::Type::Icann)
                && suffix.as_bytes() == base.as_str().as_bytes()
            {
                return Err(PolicyError::WildcardOverPublicSuffix {
                    input: input.to_owned(),
                    suffix: base.as_str().to_owned(),
                });
            }
        }
        Ok(DomainPattern::Wildcard(base))
    }

    /// Does `name` match?
    pub fn matches(&self, name: &HostName) -> bool {
        match self {
            DomainPattern::Exact(n) => n == name,
            DomainPattern::Wildcard(base) => name.is_strict_subdomain_of(base),
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Exact(n) => n.fmt(f),
            DomainPattern::Wildcard(b) => write!(f, "*.{b}"),
        }
    }
}

impl FromStr for DomainPattern {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DomainPattern::parse(s)
    }
}
