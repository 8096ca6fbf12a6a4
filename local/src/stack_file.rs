//! `stack.yml`, read the way faas-cli reads it, for the parts a local run needs: each
//! function's name, handler, environment, labels and annotations. As faas-cli does (its
//! `--envsubst`, on by default), `${VAR}` and `${VAR:-default}` are substituted in the
//! whole text before it is parsed (see [`crate::envsubst`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::envsubst::{SubstError, substitute};
use crate::stack_env::StackEnv;

#[derive(Debug, Clone, Deserialize)]
pub struct StackFile {
    pub provider: Provider,
    pub functions: BTreeMap<String, FunctionSpec>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Provider {
    pub name: String,
    #[serde(default)]
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FunctionSpec {
    #[serde(default)]
    pub lang: Option<String>,
    #[serde(default)]
    pub handler: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default, deserialize_with = "scalar_map")]
    pub environment: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "scalar_map")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "scalar_map")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// faas-cli reads these maps into `map[string]string`, so `4`, `true` and `"4"` all mean the
/// string `4`; a nested map or list is an error.
fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    use serde_yaml_ng::Value;
    let raw: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    raw.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => String::new(),
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "{k}: expected a string, number or boolean, found {other:?}"
                    )));
                }
            };
            Ok((k, s))
        })
        .collect()
}

/// Why a stack file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StackFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml_ng::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("substituting variables in {path}: {source}")]
    Substitute { path: String, source: SubstError },
}

impl StackFile {
    /// Reads `path`, substituting variables from the process environment (as `faas-cli`).
    pub fn load(path: &Path) -> Result<Self, StackFileError> {
        Self::load_with(path, &StackEnv::new(BTreeMap::new(), BTreeMap::new()))
    }

    /// Reads `path`, substituting variables from `env`.
    pub fn load_with(path: &Path, env: &StackEnv) -> Result<Self, StackFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| StackFileError::Read {
            path: shown.clone(),
            source,
        })?;
        let text =
            substitute(&text, &|k| env.lookup(k)).map_err(|source| StackFileError::Substitute {
                path: shown.clone(),
                source,
            })?;
        Self::parse(&text).map_err(|e| match e {
            StackFileError::Parse { source, .. } => StackFileError::Parse {
                path: shown,
                source,
            },
            StackFileError::Invalid { reason, .. } => StackFileError::Invalid {
                path: shown,
                reason,
            },
            other => other,
        })
    }

    /// Parses text whose variables are already substituted.
    pub fn parse(text: &str) -> Result<Self, StackFileError> {
        let stack: StackFile =
            serde_yaml_ng::from_str(text).map_err(|source| StackFileError::Parse {
                path: "stack.yml".into(),
                source,
            })?;
        let invalid = |reason: String| StackFileError::Invalid {
            path: "stack.yml".into(),
            reason,
        };
        if stack.provider.name != "openfaas" {
            return Err(invalid(format!(
                "provider.name is {:?}; only \"openfaas\" is supported",
                stack.provider.name
            )));
        }
        for name in stack.functions.keys() {
            // OpenFaaS function names are DNS-1123 labels; they also become binary names here.
            let ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !ok {
                return Err(invalid(format!(
                    "function name {name:?} is not a DNS-1123 label"
                )));
            }
        }
        Ok(stack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_functions_with_scalar_environment() {
        let stack = StackFile::parse(
            r#"
version: 1.0
provider:
  name: openfaas
  gateway: http://127.0.0.1:8080
functions:
  stage-ffmpeg-0:
    lang: rust-fave
    handler: ./functions/stage-ffmpeg-0
    image: fave/stage-ffmpeg-0:latest
    environment:
      MAX: 4
      FLAG: true
      NAME: x
    labels:
      com.openfaas.scale.min: "1"
"#,
        )
        .unwrap();
        let f = &stack.functions["stage-ffmpeg-0"];
        assert_eq!(f.environment["MAX"], "4");
        assert_eq!(f.environment["FLAG"], "true");
        assert_eq!(f.labels["com.openfaas.scale.min"], "1");
        assert_eq!(f.handler.as_deref(), Some("./functions/stage-ffmpeg-0"));
    }

    #[test]
    fn labels_are_substituted_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.yml");
        std::fs::write(
            &path,
            "provider: {name: openfaas}\nfunctions:\n  f:\n    labels:\n      \
             com.openfaas.scale.min: ${FAVE_SCALE_MIN:-1}\n      \
             com.openfaas.scale.zero: ${FAVE_SCALE_ZERO:-false}\n      \
             fave.profile: ${FAVE_PROFILE:-warm}\n",
        )
        .unwrap();
        let env = StackEnv::with_process(
            BTreeMap::from([("FAVE_SCALE_MIN".to_owned(), "0".to_owned())]),
            BTreeMap::from([("FAVE_SCALE_ZERO".to_owned(), "true".to_owned())]),
            |_| None,
        );
        let labels = &StackFile::load_with(&path, &env).unwrap().functions["f"].labels;
        assert_eq!(labels["com.openfaas.scale.min"], "0");
        assert_eq!(labels["com.openfaas.scale.zero"], "true");
        assert_eq!(labels["fave.profile"], "warm");
        std::fs::write(&path, "provider: {name: ${X-openfaas}}\nfunctions: {}\n").unwrap();
        assert!(matches!(
            StackFile::load_with(&path, &env),
            Err(StackFileError::Substitute { .. })
        ));
    }

    #[test]
    fn rejects_bad_names_and_providers() {
        let bad_name = "provider: {name: openfaas}\nfunctions:\n  ../evil: {}\n";
        assert!(matches!(
            StackFile::parse(bad_name),
            Err(StackFileError::Invalid { .. })
        ));
        let bad_provider = "provider: {name: lambda}\nfunctions: {}\n";
        assert!(matches!(
            StackFile::parse(bad_provider),
            Err(StackFileError::Invalid { .. })
        ));
        let nested = "provider: {name: openfaas}\nfunctions:\n  f:\n    environment: {A: [1]}\n";
        assert!(matches!(
            StackFile::parse(nested),
            Err(StackFileError::Parse { .. })
        ));
    }
}
