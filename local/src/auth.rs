//! Basic auth for the gateway's `/system/*` routes, as OpenFaaS's gateway does it
//! (faas-provider's `auth` package): credentials are read from the secrets directory
//! (`basic-auth-user`, `basic-auth-password`, whitespace trimmed), every `/system/*` call
//! must carry them, and `/function/*`, `/async-function/*` and `/healthz` stay open.
//!
//! Locally the environment is the fallback (`FAVE_GATEWAY_USER`, `FAVE_GATEWAY_PASSWORD`),
//! as for every fave secret. The password is held as a [`Secret`] and never printed: the
//! check compares SHA-256 digests of the expected and the presented `Authorization` token
//! in constant time, so neither its length nor a matching prefix shows in the time taken.

use fave_common::secrets::{DEFAULT_SECRETS_DIR, Secret, SecretStore};
use sha2::{Digest, Sha256};

/// The secret files OpenFaaS mounts for the gateway's credentials.
pub const USER_SECRET: &str = "basic-auth-user";
pub const PASSWORD_SECRET: &str = "basic-auth-password";
/// The local fallbacks.
pub const USER_ENV: &str = "FAVE_GATEWAY_USER";
pub const PASSWORD_ENV: &str = "FAVE_GATEWAY_PASSWORD";

/// Half a pair of credentials is a mistake, not "auth off".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "gateway basic auth: {missing} is not set ({missing_file} in {dir}, or {missing_env}) \
     while the other half is; set both, or neither to turn auth off"
)]
pub struct AuthConfigError {
    pub missing: &'static str,
    pub missing_file: &'static str,
    pub missing_env: &'static str,
    pub dir: String,
}

/// The gateway's credentials.
#[derive(Clone)]
pub struct BasicAuth {
    pub user: String,
    password: Secret,
    /// SHA-256 of the `Authorization` token (`base64(user:password)`) a client must send.
    expected: [u8; 32],
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &self.password)
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    pub fn new(user: impl Into<String>, password: Secret) -> Self {
        let user = user.into();
        let token = base64(format!("{user}:{}", password.expose()).as_bytes());
        Self {
            expected: Sha256::digest(token.as_bytes()).into(),
            user,
            password,
        }
    }

    /// Reads the credentials from `FAVE_SECRETS_DIR` (default `/var/openfaas/secrets`),
    /// falling back to `FAVE_GATEWAY_USER` / `FAVE_GATEWAY_PASSWORD`; every variable comes
    /// from `lookup`. `None` when neither half is set.
    pub fn from_secrets(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, AuthConfigError> {
        let dir = lookup("FAVE_SECRETS_DIR")
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_SECRETS_DIR.to_owned());
        let store = SecretStore::new(&dir);
        let trimmed =
            |s: Secret| Some(Secret::new(s.expose().trim())).filter(|s| !s.expose().is_empty());
        let user = store.get(USER_SECRET, USER_ENV, lookup).and_then(trimmed);
        let password = store
            .get(PASSWORD_SECRET, PASSWORD_ENV, lookup)
            .and_then(trimmed);
        let missing = |missing, missing_file, missing_env| AuthConfigError {
            missing,
            missing_file,
            missing_env,
            dir: dir.clone(),
        };
        match (user, password) {
            (None, None) => Ok(None),
            (Some(user), Some(password)) => Ok(Some(Self::new(user.expose(), password))),
            (Some(_), None) => Err(missing("the password", PASSWORD_SECRET, PASSWORD_ENV)),
            (None, Some(_)) => Err(missing("the user", USER_SECRET, USER_ENV)),
        }
    }

    /// Whether an `Authorization` header value carries these credentials.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let token = authorization
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, token)| token.trim());
        let Some(token) = token else { return false };
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        constant_time_eq(&presented, &self.expected)
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    // Every byte is looked at whatever the others hold; `black_box` keeps the compiler from
    // turning the fold back into an early-exit comparison.
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Standard base64 with padding (RFC 4648), as HTTP clients encode basic credentials.
fn base64(input: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_right_credentials() {
        let auth = BasicAuth::new("admin", Secret::new("s3cr3t"));
        let ok = format!("Basic {}", base64(b"admin:s3cr3t"));
        assert!(auth.accepts(Some(ok.as_bytes())));
        assert!(auth.accepts(Some(ok.replace("Basic", "basic").as_bytes())));
        for wrong in [
            format!("Basic {}", base64(b"admin:s3cr3")),
            format!("Basic {}", base64(b"admin:s3cr3t ")),
            format!("Basic {}", base64(b"root:s3cr3t")),
            format!("Bearer {}", base64(b"admin:s3cr3t")),
            base64(b"admin:s3cr3t"),
            "Basic".to_owned(),
            String::new(),
        ] {
            assert!(!auth.accepts(Some(wrong.as_bytes())), "{wrong}");
        }
        assert!(!auth.accepts(None));
        assert!(!auth.accepts(Some(b"Basic \xff\xfe")));
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("s3cr3t") && shown.contains("admin"),
            "{shown}"
        );
    }

    #[test]
    fn credentials_come_from_files_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let dir_s = dir.path().display().to_string();
        let env = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let none = env(vec![("FAVE_SECRETS_DIR", dir_s.clone())]);
        assert_eq!(
            BasicAuth::from_secrets(&none).map(|a| a.is_some()),
            Ok(false)
        );

        let from_env = env(vec![
            ("FAVE_SECRETS_DIR", dir_s.clone()),
            (USER_ENV, "admin".into()),
            (PASSWORD_ENV, "pw-env".into()),
        ]);
        let auth = BasicAuth::from_secrets(&from_env).unwrap().unwrap();
        assert!(auth.accepts(Some(
            format!("Basic {}", base64(b"admin:pw-env")).as_bytes()
        )));

        std::fs::write(dir.path().join(USER_SECRET), "admin\n").unwrap();
        std::fs::write(dir.path().join(PASSWORD_SECRET), " pw-file\n").unwrap();
        let auth = BasicAuth::from_secrets(&from_env).unwrap().unwrap();
        assert!(auth.accepts(Some(
            format!("Basic {}", base64(b"admin:pw-file")).as_bytes()
        )));

        std::fs::remove_file(dir.path().join(USER_SECRET)).unwrap();
        let half = BasicAuth::from_secrets(&none).unwrap_err();
        assert_eq!(half.missing_file, USER_SECRET);
        assert!(!half.to_string().contains("pw-file"));
    }
}
