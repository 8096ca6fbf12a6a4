//! Secrets come from files, as OpenFaaS mounts them (`/var/openfaas/secrets/<name>`), with an
//! environment variable as the local fallback. A [`Secret`] never prints its value.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where OpenFaaS mounts function secrets.
pub const DEFAULT_SECRETS_DIR: &str = "/var/openfaas/secrets";

/// A secret value. `Debug` and `Display` print `***`, so a secret inside a config struct
/// cannot leak through `{:?}` in a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself; call this only where the secret is handed to a client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads secrets from one directory, falling back to the environment.
#[derive(Debug, Clone)]
pub struct SecretStore {
    dir: PathBuf,
}

impl SecretStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The secret `name` from its file (trailing newline trimmed, as `faas-cli secret create
    /// --from-file` keeps it), else the value of `env_var` from `lookup`.
    pub fn get(
        &self,
        name: &str,
        env_var: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Secret> {
        match std::fs::read_to_string(self.dir.join(name)) {
            Ok(value) => Some(Secret(value.trim_end_matches(['\n', '\r']).to_owned())),
            Err(_) => lookup(env_var).filter(|v| !v.is_empty()).map(Secret),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_wins_over_environment_and_value_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s3-secret-access-key"), "from-file\n").unwrap();
        let store = SecretStore::new(dir.path());
        let env = |k: &str| (k == "AWS_SECRET_ACCESS_KEY").then(|| "from-env".to_owned());
        let s = store
            .get("s3-secret-access-key", "AWS_SECRET_ACCESS_KEY", &env)
            .unwrap();
        assert_eq!(s.expose(), "from-file");
        assert!(!format!("{s:?} {s}").contains("from-file"));
        let s = store.get("missing", "AWS_SECRET_ACCESS_KEY", &env).unwrap();
        assert_eq!(s.expose(), "from-env");
        assert!(store.get("missing", "NOPE", &env).is_none());
    }
}
