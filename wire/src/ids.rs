//! Who and what: an appliance's identity, leadership periods, session names, software
//! versions and roles, with the one text form each is written in (`Display`) and read back from
//! (`FromStr`). Every other module of the protocol, and every crate above it, uses these.

use std::fmt;
use std::str::FromStr;

use rkyv::{Archive, Deserialize, Serialize};

use crate::hex;

/// A value's text that does not parse: what it was meant to be, the text, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub what: &'static str,
    pub text: String,
    pub why: String,
}

impl ParseError {
    fn new(what: &'static str, text: &str, why: String) -> ParseError {
        ParseError {
            what,
            text: text.chars().take(80).collect(),
            why,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a valid {}: {}",
            self.text, self.what, self.why
        )
    }
}

impl std::error::Error for ParseError {}

/// An appliance's permanent identity: 128 random bits chosen at init.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 16]);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl fmt::Display for NodeId {
    /// 32 lowercase hex digits, as `appliance.json` and status show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl FromStr for NodeId {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<NodeId, ParseError> {
        hex::decode_array::<16>(text)
            .map(NodeId)
            .map_err(|why| ParseError::new("node id", text, why))
    }
}

/// A leadership period: `(counter, node id)`, compared lexicographically. Every establish,
/// break, promote and demote starts a new one with a counter above any seen before.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub struct Epoch {
    pub counter: u64,
    pub node: NodeId,
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.counter, self.node)
    }
}

impl FromStr for Epoch {
    type Err = ParseError;

    /// `counter@node id`, as [`Epoch`]'s `Display` writes it.
    fn from_str(text: &str) -> Result<Epoch, ParseError> {
        let invalid = |why: String| ParseError::new("epoch", text, why);
        let (counter, node) = text
            .split_once('@')
            .ok_or_else(|| invalid("expected counter@node-id".into()))?;
        let counter = counter
            .parse::<u64>()
            .map_err(|_| invalid("the counter is not a whole number".into()))?;
        let node = node.parse::<NodeId>().map_err(|error| invalid(error.why))?;
        Ok(Epoch { counter, node })
    }
}

/// A completed session's permanent name: the appliance it completed on and that appliance's
/// sequence number for it. Never reused.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub struct SessionId {
    pub origin: NodeId,
    pub sequence: u64,
}

/// A dotted software version, `major.minor.patch`.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for Version {
    type Err = ParseError;

    /// `7.3.0`, or `7.3` for `7.3.0`.
    fn from_str(text: &str) -> Result<Version, ParseError> {
        let invalid = || ParseError::new("version", text, "expected a version like 7.3.0".into());
        let parts: Vec<&str> = text.trim().split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(invalid());
        }
        let number = |part: &str| part.parse::<u16>().map_err(|_| invalid());
        Ok(Version {
            major: number(parts[0])?,
            minor: number(parts[1])?,
            patch: match parts.get(2) {
                Some(part) => number(part)?,
                None => 0,
            },
        })
    }
}

/// What an appliance has installed: the application and the base software under it.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SoftwareVersion {
    pub app: Version,
    pub base: Version,
}

impl fmt::Display for SoftwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (base {})", self.app, self.base)
    }
}

/// An appliance's part in a pair.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(compare(PartialEq))]
pub enum Role {
    Standalone,
    Primary,
    Backup,
}

impl Role {
    /// The role's name as operators read and write it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Primary => "primary",
            Role::Backup => "backup",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Role, ParseError> {
        match text {
            "standalone" => Ok(Role::Standalone),
            "primary" => Ok(Role::Primary),
            "backup" => Ok(Role::Backup),
            _ => Err(ParseError::new(
                "role",
                text,
                "expected standalone, primary or backup".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_form_reads_back() {
        let node = NodeId([0xa7; 16]);
        assert_eq!(node.to_string().parse::<NodeId>(), Ok(node));
        let epoch = Epoch { counter: 12, node };
        assert_eq!(epoch.to_string().parse::<Epoch>(), Ok(epoch));
        let version = Version {
            major: 7,
            minor: 3,
            patch: 1,
        };
        assert_eq!(version.to_string().parse::<Version>(), Ok(version));
        assert_eq!(
            "7.3".parse::<Version>().map(|v| v.to_string()),
            Ok("7.3.0".into())
        );
        for role in [Role::Standalone, Role::Primary, Role::Backup] {
            assert_eq!(role.to_string().parse::<Role>(), Ok(role));
        }
    }

    #[test]
    fn bad_text_names_what_it_should_be() {
        for (error, what) in [
            ("12".parse::<NodeId>().unwrap_err(), "node id"),
            ("1@zz".parse::<Epoch>().unwrap_err(), "epoch"),
            ("x@".parse::<Epoch>().unwrap_err(), "epoch"),
            ("7.3.0.1".parse::<Version>().unwrap_err(), "version"),
            ("7.x".parse::<Version>().unwrap_err(), "version"),
            ("leader".parse::<Role>().unwrap_err(), "role"),
        ] {
            assert_eq!(error.what, what);
            assert!(error.to_string().contains(what), "{error}");
        }
    }
}
