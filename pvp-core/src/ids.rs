//! Identifiers shared by every pvp layer.
//!
//! Numeric ids ([`PlayerId`], [`MatchId`], [`ServerId`]) are plain `u64` newtypes: cheap to copy,
//! hash and put on the wire. Names ([`RegionId`], [`ZoneId`]) are short ASCII strings such as
//! `"kr"` or `"kr-a"`, stored inline so that they are `Copy` and never allocate.
//!
//! ```
//! use pvp_core::ids::{PlayerId, RegionId, ZoneId};
//!
//! let kr: RegionId = "kr".parse()?;
//! let zone = ZoneId::new("kr-a")?;
//! assert_eq!(kr.as_str(), "kr");
//! assert_eq!(zone.to_string(), "kr-a");
//! assert_eq!(PlayerId::new(7).get(), 7);
//! assert!(RegionId::new("Not A Region!").is_err());
//! # Ok::<(), pvp_core::ids::IdError>(())
//! ```

use core::fmt;
use core::str::FromStr;

/// Why a string is not a valid [`RegionId`] or [`ZoneId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The name is empty.
    #[error("an id name must not be empty")]
    Empty,
    /// The name is longer than the id type holds.
    #[error("id name is {len} bytes long, at most {max} are allowed")]
    TooLong {
        /// Length of the rejected name in bytes.
        len: usize,
        /// Longest name the id type holds.
        max: usize,
    },
    /// The name holds a byte other than `a-z`, `0-9`, `-` or `_`.
    #[error("id name holds {byte:#04x} at byte {index}; only a-z, 0-9, '-' and '_' are allowed")]
    InvalidByte {
        /// The offending byte.
        byte: u8,
        /// Its position in the name.
        index: usize,
    },
}

macro_rules! numeric_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde", serde(transparent))]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw id.
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw id.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl From<u64> for $name {
            fn from(raw: u64) -> Self {
                Self(raw)
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        /// Parses the decimal number [`Display`](fmt::Display) writes, so the two round-trip.
        impl FromStr for $name {
            type Err = core::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse::<u64>().map(Self)
            }
        }
    };
}

numeric_id!(
    /// A player account, unique across all regions.
    PlayerId
);
numeric_id!(
    /// One match (a game session between players), unique across all regions.
    MatchId
);
numeric_id!(
    /// One game-server process inside a region's fleet.
    ServerId
);

/// Longest name a [`RegionId`] or [`ZoneId`] holds, in bytes.
pub const MAX_NAME_LEN: usize = 15;

/// An inline ASCII name: up to [`MAX_NAME_LEN`] bytes, zero-padded, plus its length.
///
/// `bytes` comes first so the derived order is the order of the strings (zero padding sorts
/// before every allowed byte).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct InlineName {
    bytes: [u8; MAX_NAME_LEN],
    len: u8,
}

impl InlineName {
    const fn parse(name: &str) -> Result<Self, IdError> {
        let src = name.as_bytes();
        if src.is_empty() {
            return Err(IdError::Empty);
        }
        if src.len() > MAX_NAME_LEN {
            return Err(IdError::TooLong { len: src.len(), max: MAX_NAME_LEN });
        }
        let mut bytes = [0u8; MAX_NAME_LEN];
        let mut i = 0;
        while i < src.len() {
            let b = src[i];
            if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
                return Err(IdError::InvalidByte { byte: b, index: i });
            }
            bytes[i] = b;
            i += 1;
        }
        Ok(Self { bytes, len: src.len() as u8 })
    }

    fn as_str(&self) -> &str {
        // Only validated ASCII is ever stored, so this cannot fail; fall back to "" rather
        // than panic should that invariant ever be broken.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

macro_rules! name_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(InlineName);

        impl $name {
            /// Checks and stores `name`: 1 to [`MAX_NAME_LEN`] bytes of `a-z`, `0-9`, `-`, `_`.
            pub const fn new(name: &str) -> Result<Self, IdError> {
                match InlineName::parse(name) {
                    Ok(n) => Ok(Self(n)),
                    Err(e) => Err(e),
                }
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.as_str())
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a short lowercase name such as \"kr\"")
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::new(v).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

name_id!(
    /// A region such as Korea (`"kr"`), Japan (`"jp"`) or Singapore (`"sg"`).
    RegionId
);
name_id!(
    /// An availability zone inside a region, such as `"kr-a"`.
    ZoneId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_bad_input() {
        let r = RegionId::new("kr").unwrap();
        assert_eq!(r.as_str(), "kr");
        assert_eq!(format!("{r:?}"), "RegionId(\"kr\")");
        assert_eq!(RegionId::new(""), Err(IdError::Empty));
        assert_eq!(RegionId::new("abcdefghijklmnop"), Err(IdError::TooLong { len: 16, max: MAX_NAME_LEN }));
        assert_eq!(ZoneId::new("kr A"), Err(IdError::InvalidByte { byte: b' ', index: 2 }));
        assert!(ZoneId::new("abcdefghijklmno").is_ok());
    }

    #[test]
    fn names_order_like_strings() {
        let mut v: Vec<RegionId> = ["sg", "kr", "jp", "kr2"].iter().map(|s| s.parse().unwrap()).collect();
        v.sort();
        let s: Vec<&str> = v.iter().map(|r| r.as_str()).collect();
        assert_eq!(s, ["jp", "kr", "kr2", "sg"]);
    }

    proptest::proptest! {
        #[test]
        fn any_valid_name_round_trips(name in "[a-z0-9_-]{1,15}") {
            let id = RegionId::new(&name).unwrap();
            proptest::prop_assert_eq!(id.as_str(), name.as_str());
            proptest::prop_assert_eq!(id.to_string().parse::<RegionId>().unwrap(), id);
        }

        #[test]
        fn arbitrary_strings_never_panic(name in ".{0,40}") {
            let _ = ZoneId::new(&name);
        }
    }
}
