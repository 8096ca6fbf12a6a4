//! Configuration, read once from the environment at start and validated there, so the rest
//! of a binary sees typed values. Every reader takes a `lookup` function instead of touching
//! `std::env` directly, which keeps the validation unit-testable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::secrets::{DEFAULT_SECRETS_DIR, Secret, SecretStore};

/// A variable that is present but wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

/// `std::env::var` as a lookup function.
pub fn env_lookup(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// A lookup function over fixed pairs, as tests and tools give them.
pub fn lookup_in(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

/// `var` parsed as a `T`, or `default` when it is unset or blank.
pub fn parse<T: std::str::FromStr>(
    lookup: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match lookup(var).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError {
            var,
            reason: format!("{v:?}: {e}"),
        }),
    }
}

/// `var` as an http(s) URL, or `None` when it is unset or blank.
pub fn parse_url(
    lookup: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<Url>, ConfigError> {
    let Some(raw) = lookup(var).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let url = Url::parse(raw.trim()).map_err(|e| ConfigError {
        var,
        reason: format!("{raw:?} is not a URL: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError {
            var,
            reason: format!("{raw:?} must be an http:// or https:// URL"),
        });
    }
    Ok(Some(url))
}

/// `var` as a boolean (`true`/`yes`/`1`, `false`/`no`/`0`), false when unset.
pub fn parse_bool(
    lookup: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<bool, ConfigError> {
    match lookup(var)
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(other) => Err(ConfigError {
            var,
            reason: format!("{other:?} is not a boolean (true/false)"),
        }),
    }
}

/// Where the artifacts live: the bucket and how to reach the S3-compatible store.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// `AWS_ENDPOINT_URL`: set for any S3-compatible store other than AWS itself.
    pub endpoint: Option<Url>,
    pub region: String,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// Path-style addressing (`http://host/bucket/key`), which S3-compatible servers need.
    pub force_path_style: bool,
    /// Attempts per S3 call, the SDK's own retries included (`FAVE_S3_MAX_ATTEMPTS`, default
    /// 10: with backoff capped at 5 s, that rides out a store that is gone for ~30 s).
    pub max_attempts: u32,
    /// How long one attempt may wait for the first byte of the store's answer, the request's
    /// own body included (`FAVE_S3_READ_TIMEOUT_SECS`, default 60): a store that accepts
    /// connections and never answers costs an attempt, not the caller forever.
    pub read_timeout: Duration,
}

impl S3Settings {
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let bucket = lookup("FAVE_BUCKET")
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "fave-artifacts".to_owned());
        validate_bucket(&bucket)?;
        let endpoint = parse_url(lookup, "AWS_ENDPOINT_URL")?;
        let region = lookup("AWS_REGION")
            .or_else(|| lookup("AWS_DEFAULT_REGION"))
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "us-east-1".to_owned());
        let secrets = SecretStore::new(
            lookup("FAVE_SECRETS_DIR").unwrap_or_else(|| DEFAULT_SECRETS_DIR.to_owned()),
        );
        let access_key_id = secrets.get("s3-access-key-id", "AWS_ACCESS_KEY_ID", lookup);
        let secret_access_key =
            secrets.get("s3-secret-access-key", "AWS_SECRET_ACCESS_KEY", lookup);
        if access_key_id.is_some() != secret_access_key.is_some() {
            return Err(ConfigError {
                var: "AWS_ACCESS_KEY_ID",
                reason: "an access key id and a secret access key go together; only one is set"
                    .into(),
            });
        }
        let force_path_style = match lookup("FAVE_S3_PATH_STYLE") {
            Some(_) => parse_bool(lookup, "FAVE_S3_PATH_STYLE")?,
            None => endpoint.is_some(),
        };
        Ok(Self {
            bucket,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            force_path_style,
            max_attempts: parse(lookup, "FAVE_S3_MAX_ATTEMPTS", 10u32)?.max(1),
            read_timeout: Duration::from_secs(
                parse(lookup, "FAVE_S3_READ_TIMEOUT_SECS", 60u64)?.max(1),
            ),
        })
    }
}

/// S3's bucket naming rules, the part that matters for safety: 3–63 of `[a-z0-9.-]`.
fn validate_bucket(bucket: &str) -> Result<(), ConfigError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            var: "FAVE_BUCKET",
            reason: format!("{bucket:?} is not a valid bucket name"),
        })
    }
}

/// Where a function listens: `FAVE_LISTEN_ADDR` if set, else `0.0.0.0:$PORT` (OpenFaaS
/// templates use port 3000, which of-watchdog's `upstream_url` points at).
pub fn listen_addr(lookup: &dyn Fn(&str) -> Option<String>) -> Result<SocketAddr, ConfigError> {
    if let Some(addr) = lookup("FAVE_LISTEN_ADDR").filter(|a| !a.is_empty()) {
        return addr.parse().map_err(|e| ConfigError {
            var: "FAVE_LISTEN_ADDR",
            reason: format!("{addr:?}: {e}"),
        });
    }
    let port: u16 = parse(lookup, "PORT", 3000)?;
    Ok(SocketAddr::from(([0, 0, 0, 0], port)))
}

/// What every stage function needs.
#[derive(Debug, Clone)]
pub struct StageConfig {
    pub listen: SocketAddr,
    pub s3: S3Settings,
    /// Largest request body accepted; stage calls are small JSON.
    pub body_limit: usize,
    /// How long a call's claim on its work lives unrenewed (`FAVE_CLAIM_TTL_SECS`): how
    /// long the work of a process that died (or was paused) holds up the next caller.
    pub claim_ttl: Duration,
}

impl StageConfig {
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let claim_ttl = Duration::from_secs(parse(
            lookup,
            "FAVE_CLAIM_TTL_SECS",
            crate::claim::DEFAULT_TTL.as_secs(),
        )?);
        if claim_ttl < Duration::from_secs(3) {
            return Err(ConfigError {
                var: "FAVE_CLAIM_TTL_SECS",
                reason: "must be at least 3 (the claim is renewed every third of it)".into(),
            });
        }
        Ok(Self {
            listen: listen_addr(lookup)?,
            s3: S3Settings::from_lookup(lookup)?,
            body_limit: parse(lookup, "FAVE_BODY_LIMIT", 1024 * 1024)?,
            claim_ttl,
        })
    }
}

/// Where the model `name` is: `$dir_var` if set, else `$FAVE_MODELS/{name}`, else
/// `~/.cache/fave-tools/models/{name}` (where scripts/setup puts models), else
/// `/var/openfaas/models/{name}`. The stages that load a model at start all look here.
pub fn model_dir(dir_var: &str, name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(dir_var) {
        return PathBuf::from(dir);
    }
    let models = std::env::var_os("FAVE_MODELS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/fave-tools/models"))
        })
        .unwrap_or_else(|| PathBuf::from("/var/openfaas/models"));
    models.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        lookup_in(pairs)
    }

    #[test]
    fn endpoint_implies_path_style_and_can_be_overridden() {
        let c = S3Settings::from_lookup(&lookup(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")]))
            .unwrap();
        assert!(c.force_path_style);
        let c = S3Settings::from_lookup(&lookup(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("FAVE_S3_PATH_STYLE", "false"),
        ]))
        .unwrap();
        assert!(!c.force_path_style);
    }

    #[test]
    fn half_a_credential_pair_is_an_error() {
        let err = S3Settings::from_lookup(&lookup(&[
            ("FAVE_SECRETS_DIR", "/nonexistent"),
            ("AWS_ACCESS_KEY_ID", "a"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "AWS_ACCESS_KEY_ID");
    }

    #[test]
    fn listen_addr_prefers_explicit_address() {
        let a = listen_addr(&lookup(&[
            ("FAVE_LISTEN_ADDR", "127.0.0.1:4567"),
            ("PORT", "1"),
        ]))
        .unwrap();
        assert_eq!(a.to_string(), "127.0.0.1:4567");
    }
}
