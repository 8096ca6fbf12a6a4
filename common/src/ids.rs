//! Newtype ids. Everything that reaches a storage key or a URL path is validated here first,
//! so no other module has to think about `..`, `/` or overlong input.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {shown:?}: {reason}")]
pub struct InvalidId {
    pub kind: &'static str,
    /// The offending input, cut short so that a hostile megabyte never reaches a log line.
    pub shown: String,
    pub reason: &'static str,
}

const MAX_ID_LEN: usize = 64;

/// Ids are 1–64 characters of `[A-Za-z0-9_-]`: safe in a URL path segment and an S3 key,
/// and never `.` or `..`.
fn validate(kind: &'static str, s: &str) -> Result<(), InvalidId> {
    let fail = |reason| InvalidId {
        kind,
        shown: s.chars().take(80).collect(),
        reason,
    };
    if s.is_empty() {
        return Err(fail("empty"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(fail("longer than 64 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(fail("only A-Z, a-z, 0-9, '-' and '_' are allowed"));
    }
    Ok(())
}

/// A video's id is the SHA-256 of its bytes, and an analysis's a shorter digest of its
/// parameters: lowercase hex of exactly `len` digits, nothing else.
fn validate_hex(kind: &'static str, s: &str, len: usize) -> Result<(), InvalidId> {
    validate(kind, s)?;
    let fail = |reason| InvalidId {
        kind,
        shown: s.chars().take(80).collect(),
        reason,
    };
    if s.len() != len {
        return Err(fail(if len == 64 {
            "not 64 hex digits (a SHA-256)"
        } else {
            "not 16 hex digits"
        }));
    }
    if !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(fail("only lowercase hex digits are allowed"));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        id_type!($(#[$doc])* $name, $kind, |s| validate($kind, s));
    };
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                ($check)(s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                ($check)(&s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The id of one submitted request; names its folder `requests/{id}/` in the bucket.
    RequestId,
    "request id"
);
id_type!(
    /// The name of a pipeline stage, which is also the name of its function in stack.yml.
    StageName,
    "stage name"
);
id_type!(
    /// The id of one clip of a request, e.g. `clip-0003`.
    ClipId,
    "clip id"
);

id_type!(
    /// A video: the SHA-256 of its bytes, in lowercase hex. The same bytes submitted under
    /// any URI are the same video, analysed once.
    VideoId,
    "video id",
    |s: &str| validate_hex("video id", s, 64)
);
id_type!(
    /// One analysis of a video: the first 16 hex digits of the SHA-256 of everything that
    /// changes its result (`contract::library::AnalysisParams`).
    AnalysisId,
    "analysis id",
    |s: &str| validate_hex("analysis id", s, 16)
);

impl RequestId {
    /// A fresh id. UUIDv7 sorts by creation time, so listing `requests/` lists oldest first.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string())
    }
}

impl ClipId {
    /// The id of the clip at `index` (0-based), zero-padded so keys sort in clip order.
    pub fn from_index(index: usize) -> Self {
        Self(format!("clip-{index:04}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_and_analysis_ids_are_lowercase_hex_of_their_length() {
        let sha = "ab".repeat(32);
        assert!(sha.parse::<VideoId>().is_ok());
        assert!(sha.to_uppercase().parse::<VideoId>().is_err());
        assert!(sha[..63].parse::<VideoId>().is_err());
        assert!("../etc/passwd".parse::<VideoId>().is_err());
        assert!("0123456789abcdef".parse::<AnalysisId>().is_ok());
        assert!("0123456789abcdeg".parse::<AnalysisId>().is_err());
        assert!(sha.parse::<AnalysisId>().is_err());
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().parse::<RequestId>(), Ok(a.clone()));
        assert_eq!(a.as_str().len(), 32);
    }

    #[test]
    fn hostile_ids_are_rejected() {
        let long = "a".repeat(65);
        for bad in [
            "", ".", "..", "../x", "a/b", "a%2Fb", "a b", "é", "a\0b", "a\nb", &long,
        ] {
            assert!(bad.parse::<RequestId>().is_err(), "{bad:?} was accepted");
        }
        assert!("a".repeat(64).parse::<RequestId>().is_ok());
        assert!("Req_1-x".parse::<RequestId>().is_ok());
    }

    #[test]
    fn error_cuts_long_input_short() {
        let err = "/".repeat(10_000).parse::<StageName>().unwrap_err();
        assert!(err.to_string().len() < 200);
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<RequestId>("\"../etc\"").is_err());
        let id: ClipId = serde_json::from_str("\"clip-0001\"").unwrap();
        assert_eq!(id, ClipId::from_index(1));
    }
}
