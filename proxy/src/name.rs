//! The names the configuration gives things, as newtypes: a route's name, an upstream's name
//! and an endpoint's address. They are checked once, when the configuration loads, and used as
//! metric labels and in logs from then on.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use http::HeaderValue;
use http::uri::Authority;

/// A route's name: unique across all rules files, used as a metric label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteName(Arc<str>);

impl RouteName {
    /// The name as written in the rules.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for RouteName {
    type Error = String;

    fn try_from(name: &str) -> Result<Self, Self::Error> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!("{name:?}: route names use letters, digits, '-', '_' and '.'"));
        }
        Ok(Self(name.into()))
    }
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of an upstream pool, as in `[upstreams.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamName(Arc<str>);

impl UpstreamName {
    /// The name as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for UpstreamName {
    type Error = String;

    fn try_from(name: &str) -> Result<Self, Self::Error> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')) {
            return Err(format!("{name:?}: upstream names use letters, digits, '-' and '_'"));
        }
        Ok(Self(name.into()))
    }
}

impl fmt::Display for UpstreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One endpoint's address: `host:port` (a name is looked up by [`resolve::Resolver`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointAddr {
    authority: Authority,
    /// The same text as a `Host` value, for requests that came without one.
    host: HeaderValue,
}

impl EndpointAddr {
    /// The `host:port` text.
    pub fn as_str(&self) -> &str {
        self.authority.as_str()
    }

    /// As a URI authority.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// As a `Host` header value.
    pub fn host_header(&self) -> HeaderValue {
        self.host.clone()
    }
}

impl FromStr for EndpointAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let authority: Authority = text.parse().map_err(|_| format!("{text:?} is not host:port"))?;
        if authority.port_u16().is_none() || text.contains('@') || text.contains('/') {
            return Err(format!("{text:?} is not host:port (the port is required)"));
        }
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|_| format!("{text:?} is not host:port"))?;
        Ok(Self { authority, host })
    }
}

impl fmt::Display for EndpointAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.authority.as_str())
    }
}
