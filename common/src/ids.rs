//! Identifiers: every stored object version and every node has a random 128-bit id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Error parsing an id from its 32-hex-digit text form.
#[derive(Debug, thiserror::Error)]
#[error("invalid id {0:?}: expected 32 hex digits")]
pub struct IdParseError(pub String);

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                Self(rand::random())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; 16];
                if s.len() != 32 || hex::decode_to_slice(s, &mut out).is_err() {
                    return Err(IdParseError(s.to_string()));
                }
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// Identity of one stored object version (a PUT, or a multipart upload).
    /// A new id per write makes overwrites atomic: old and new shards never share names.
    ObjectId
);
id_type!(
    /// Persistent identity of a storage node, generated once and kept in its data dir.
    NodeId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_text() {
        let id = ObjectId::random();
        let parsed: ObjectId = id.to_string().parse().expect("parse");
        assert_eq!(id, parsed);
        assert!("xyz".parse::<NodeId>().is_err());
        assert!("0".repeat(31).parse::<NodeId>().is_err());
    }
}
