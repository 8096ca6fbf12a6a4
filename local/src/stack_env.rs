//! The variables stack.yml's `${…}` are substituted from, in this order: variables given
//! explicitly (tests, the CLI), then the chosen profile's env file, then the process
//! environment, then the default written in stack.yml.
//!
//! A profile is `deploy/profiles/<name>.env` beside stack.yml: plain `KEY=value` lines,
//! blank lines and `#` comments, the format `faas-cli` users keep for `--env-file`-style
//! overlays and that `set -a; . cold.env` also reads. `fave up --profile cold` thus reads
//! the same file an operator sources before `faas-cli deploy -f stack.yml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile name {0:?}: use letters, digits, '-' and '_' only")]
    BadName(String),
    #[error("profile {name}: reading {path}: {source}")]
    Read {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("profile {path}, line {line}: {reason}")]
    Invalid {
        path: String,
        line: usize,
        reason: String,
    },
}

/// Where profile `name` lives for the stack file at `stack_file`.
pub fn profile_path(stack_file: &Path, name: &str) -> PathBuf {
    stack_file
        .parent()
        .unwrap_or(Path::new("."))
        .join("deploy/profiles")
        .join(format!("{name}.env"))
}

/// Reads profile `name` of the stack file at `stack_file`.
pub fn read_profile(
    stack_file: &Path,
    name: &str,
) -> Result<BTreeMap<String, String>, ProfileError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(ProfileError::BadName(name.to_owned()));
    }
    let path = profile_path(stack_file, name);
    let text = std::fs::read_to_string(&path).map_err(|source| ProfileError::Read {
        name: name.to_owned(),
        path: path.display().to_string(),
        source,
    })?;
    parse_env_file(&text).map_err(|(line, reason)| ProfileError::Invalid {
        path: path.display().to_string(),
        line,
        reason,
    })
}

/// `KEY=value` lines; `#` starts a comment line, or a comment after an unquoted value when
/// preceded by a space; an optional `export ` prefix and one pair of surrounding quotes are
/// dropped. Errors carry the 1-based line.
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut vars = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err((i + 1, format!("expected KEY=value, found {line:?}")));
        };
        let key = key.trim();
        let valid_key = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err((i + 1, format!("{key:?} is not a variable name")));
        }
        let value = value.trim();
        let quoted = ['"', '\'']
            .into_iter()
            .find(|q| value.len() >= 2 && value.starts_with(*q) && value.ends_with(*q));
        let value = match quoted {
            Some(_) => &value[1..value.len() - 1],
            None => value.split(" #").next().unwrap_or(value).trim_end(),
        };
        vars.insert(key.to_owned(), value.to_owned());
    }
    Ok(vars)
}

/// Where a variable is looked up last: the process environment, or a stand-in in tests.
type Lookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The layered lookup stack.yml is substituted with.
pub struct StackEnv {
    vars: BTreeMap<String, String>,
    profile: BTreeMap<String, String>,
    process: Lookup,
}

impl StackEnv {
    /// Explicit `vars` over a profile's variables over the process environment.
    pub fn new(vars: BTreeMap<String, String>, profile: BTreeMap<String, String>) -> Self {
        Self::with_process(vars, profile, fave_common::config::env_lookup)
    }

    /// As [`StackEnv::new`], with another "process environment" (for tests).
    pub fn with_process(
        vars: BTreeMap<String, String>,
        profile: BTreeMap<String, String>,
        process: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            vars,
            profile,
            process: Box::new(process),
        }
    }

    /// The first layer that has `key` answers, even with an empty value (which stack.yml's
    /// `${KEY:-default}` then reads as unset, as faas-cli does).
    pub fn lookup(&self, key: &str) -> Option<String> {
        self.vars
            .get(key)
            .or_else(|| self.profile.get(key))
            .cloned()
            .or_else(|| (self.process)(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_files_read_like_dotenv() {
        let text = "# the cold profile\n\nFAVE_SCALE_MIN=0\nexport FAVE_SCALE_ZERO=true  # idle out\n\
                    FAVE_PROFILE=\"cold\"\nQUOTED='a # b'\nEMPTY=\n";
        let vars = parse_env_file(text).unwrap();
        assert_eq!(
            vars,
            map(&[
                ("EMPTY", ""),
                ("FAVE_PROFILE", "cold"),
                ("FAVE_SCALE_MIN", "0"),
                ("FAVE_SCALE_ZERO", "true"),
                ("QUOTED", "a # b"),
            ])
        );
        assert_eq!(parse_env_file("A=1\nnot a line\n").unwrap_err().0, 2);
        assert!(parse_env_file("1A=x").is_err());
    }

    #[test]
    fn lookup_order_is_vars_then_profile_then_process() {
        let env = StackEnv::with_process(
            map(&[("A", "var"), ("E", "")]),
            map(&[("A", "profile"), ("B", "profile"), ("E", "profile")]),
            |k| matches!(k, "A" | "B" | "C").then(|| format!("process-{k}")),
        );
        assert_eq!(env.lookup("A").as_deref(), Some("var"));
        assert_eq!(env.lookup("B").as_deref(), Some("profile"));
        assert_eq!(env.lookup("C").as_deref(), Some("process-C"));
        assert_eq!(env.lookup("D"), None);
        assert_eq!(
            env.lookup("E").as_deref(),
            Some(""),
            "an explicit empty var wins"
        );
    }

    #[test]
    fn profiles_are_found_beside_the_stack_file_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let stack = dir.path().join("stack.yml");
        std::fs::create_dir_all(dir.path().join("deploy/profiles")).unwrap();
        std::fs::write(
            dir.path().join("deploy/profiles/cold.env"),
            "FAVE_SCALE_MIN=0\n",
        )
        .unwrap();
        assert_eq!(
            read_profile(&stack, "cold").unwrap(),
            map(&[("FAVE_SCALE_MIN", "0")])
        );
        assert!(matches!(
            read_profile(&stack, "warm"),
            Err(ProfileError::Read { .. })
        ));
        for bad in ["../cold", "", "a/b", "cold.env"] {
            assert!(
                matches!(read_profile(&stack, bad), Err(ProfileError::BadName(_))),
                "{bad}"
            );
        }
    }
}
