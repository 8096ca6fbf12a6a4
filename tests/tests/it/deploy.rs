//! What a cluster deploy reads — `stack.yml`, `template/rust-fave`, `deploy/profiles` — checked
//! with the rules faas-cli applies, and a function binary run the way of-watchdog runs it.
//!
//! faas-cli is a Go binary that none of the registries reachable here ships, so its rules are
//! restated from its source (openfaas/faas-cli, which vendors openfaas/go-sdk):
//!
//! - The whole text of stack.yml is substituted before it is parsed (go-sdk
//!   `stack/stack.go`, `substituteEnvironment`, with drone/envsubst; `--envsubst` is on by
//!   default): `${NAME}` becomes the variable's value or nothing, `${NAME:-default}` the
//!   default when the variable is unset or empty.
//! - `lang` names a directory `template/<lang>` (`commands/build.go`, `getMissingTemplates`:
//!   a missing one would be pulled from the template store) with a `template.yml`
//!   (`builder/build.go`, `getTemplate`).
//! - The handler path exists (`ensureHandlerPath`); `build_options` are named in
//!   template.yml, and their packages become the build arg `ADDITIONAL_PACKAGE`
//!   (`getBuildOptionPackages`, `appendAdditionalPackages`).
//! - `faas-cli build --shrinkwrap` stops once the build context is made (go-sdk
//!   `builder/builder.go`, `CreateBuildContext`, and `copy.go`): `build/<fn>/` gets the
//!   template directory, then every entry of the handler folder except `build` and
//!   `template` under `build/<fn>/<handler_folder, default "function">/`, then the stack's
//!   `configuration.copy` paths there too; copies follow symlinks.
//! - `faas-cli deploy` sends the function's `fprocess`, else template.yml's, as the
//!   container's `fprocess` variable (`commands/deploy.go`, `deriveFprocess`).
//!
//! of-watchdog (`config/config.go`, `executor/http_runner.go`) forks `fprocess` with the
//! container's environment, and forwards each call to `upstream_url` + the request URI (the
//! sub-path after `/function/NAME` and the query string), headers copied, the body streamed
//! without a Content-Length (chunked); on SIGTERM it passes the signal on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use fave_common::config::{S3Settings, listen_addr};
use fave_common::secrets::Secret;
use fave_common::storage::Storage;
use fave_local::s3::{EmbeddedS3, S3ServerOptions};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

use crate::util::{bin_dir, read, repo_root};

const LANG_DIR: &str = "template";
/// The variables the profiles set, which stack.yml's scaling labels are made of.
const PROFILE_VARS: [&str; 7] = [
    "FAVE_PROFILE",
    "FAVE_SCALE_MIN",
    "FAVE_SCALE_MAX",
    "FAVE_SCALE_ZERO_LABEL",
    "FAVE_SCALE_ZERO_DURATION_LABEL",
    "FAVE_SCALE_ZERO",
    "FAVE_SCALE_ZERO_DURATION",
];
/// The secrets the functions read (common/src/config.rs).
const SECRETS: [&str; 2] = ["s3-access-key-id", "s3-secret-access-key"];

// ---------------------------------------------------------------------------------------
// stack.yml and template.yml as faas-cli reads them

/// `stack.yml`'s top level (go-sdk `stack.Services`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Services {
    #[serde(default)]
    version: Option<Yaml>,
    provider: Provider,
    functions: BTreeMap<String, Function>,
    #[serde(default)]
    configuration: Configuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read to be accepted, as faas-cli does; not every field is checked
struct Provider {
    name: String,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read to be accepted, as faas-cli does; not every field is checked
struct Configuration {
    #[serde(default)]
    templates: Option<Yaml>,
    #[serde(default)]
    copy: Vec<String>,
}

/// One function (go-sdk `stack.Function`). Every field faas-cli knows is accepted, and
/// nothing else: faas-cli would silently ignore a misspelt key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read to be accepted, as faas-cli does; not every field is checked
struct Function {
    lang: String,
    handler: String,
    image: String,
    #[serde(default)]
    fprocess: Option<String>,
    #[serde(default, deserialize_with = "string_map")]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    skip_build: bool,
    #[serde(default)]
    constraints: Option<Vec<String>>,
    #[serde(default)]
    environment_file: Vec<String>,
    #[serde(default, deserialize_with = "string_map")]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    limits: Option<Yaml>,
    #[serde(default)]
    requests: Option<Yaml>,
    #[serde(default)]
    readonly_root_filesystem: bool,
    #[serde(default)]
    build_options: Vec<String>,
    #[serde(default, deserialize_with = "string_map")]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default, deserialize_with = "string_map")]
    build_args: BTreeMap<String, String>,
    #[serde(default)]
    platforms: Option<String>,
    #[serde(default, deserialize_with = "string_map")]
    build_secrets: BTreeMap<String, String>,
}

/// A language template's `template.yml` (go-sdk `stack.LanguageTemplate`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read to be accepted, as faas-cli does; not every field is checked
struct LanguageTemplate {
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    fprocess: Option<String>,
    #[serde(default)]
    build_options: Vec<BuildOption>,
    #[serde(default)]
    welcome_message: Option<String>,
    #[serde(default)]
    handler_folder: Option<String>,
    #[serde(default)]
    mount_ssh: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildOption {
    name: String,
    packages: Vec<String>,
}

/// yaml.v3 decodes any scalar into a Go string field: `4`, `true` and `"4"` are all strings.
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: Option<BTreeMap<String, Yaml>> = Option::deserialize(d)?;
    raw.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                Yaml::String(s) => s,
                Yaml::Number(n) => n.to_string(),
                Yaml::Bool(b) => b.to_string(),
                Yaml::Null => String::new(),
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "{k}: a map of strings cannot hold {other:?}"
                    )));
                }
            };
            Ok((k, s))
        })
        .collect()
}

/// One `${…}` of stack.yml.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct VarUse {
    name: String,
    default: Option<String>,
}

/// drone/envsubst over stack.yml, for the two forms it may use: `${NAME}` and
/// `${NAME:-default}` (a plain default, no nested `$`). Anything else drone/envsubst would
/// read differently from what a reader expects (other operators, `$$` escapes) is refused.
fn envsubst(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<VarUse>), String> {
    if text.contains("$$") {
        return Err(
            "stack.yml contains `$$`, which drone/envsubst unescapes; do not use it".into(),
        );
    }
    let mut out = String::with_capacity(text.len());
    let mut uses = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in {:?}", &rest[start..]))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        let name_ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok || default.is_some_and(|d| d.contains(['$', '{'])) {
            return Err(format!(
                "`${{{inner}}}`: only `${{NAME}}` and `${{NAME:-plain default}}` are used here"
            ));
        }
        let value = lookup(name).filter(|v| !v.is_empty());
        out.push_str(value.as_deref().or(default).unwrap_or(""));
        uses.push(VarUse {
            name: name.to_owned(),
            default: default.map(str::to_owned),
        });
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok((out, uses))
}

/// A profile file: `KEY=value` lines, `#` comments.
fn profile(name: &str) -> BTreeMap<String, String> {
    let path = repo_root().join(format!("deploy/profiles/{name}.env"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut vars = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}:{}: not KEY=value", path.display(), n + 1));
        // What `set -a; . file` would export is then exactly the text: no quotes, spaces
        // or expansions.
        assert!(
            key.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._:/-".contains(c)),
            "{}:{}: {line:?} is not a plain KEY=value",
            path.display(),
            n + 1
        );
        assert!(
            vars.insert(key.to_owned(), value.to_owned()).is_none(),
            "{}: {key} set twice",
            path.display()
        );
    }
    vars
}

/// stack.yml, substituted with `vars` (else defaults) and parsed.
fn services(vars: &BTreeMap<String, String>) -> (Services, Vec<VarUse>) {
    let text = std::fs::read_to_string(repo_root().join("stack.yml")).expect("stack.yml");
    let (text, uses) = envsubst(&text, &|k| vars.get(k).cloned()).expect("stack.yml substitutes");
    let services: Services = serde_yaml_ng::from_str(&text).expect("stack.yml parses");
    (services, uses)
}

fn template(lang: &str) -> LanguageTemplate {
    let path = repo_root().join(LANG_DIR).join(lang).join("template.yml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("function lang {lang}: reading {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A Go duration as of-watchdog reads one: a plain integer is seconds, else `1h2m3s`-style.
fn go_duration(s: &str) -> Option<Duration> {
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

// ---------------------------------------------------------------------------------------
// The Dockerfile, read as far as the checks need

/// One instruction, continuation lines joined and comments dropped.
#[derive(Debug)]
struct Instruction {
    line: usize,
    op: String,
    args: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut all = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
            continue;
        }
        let (continues, body) = match trimmed.strip_suffix('\\') {
            Some(body) => (true, body),
            None => (false, trimmed),
        };
        let (line, mut joined) = current.take().unwrap_or((n + 1, String::new()));
        joined.push(' ');
        joined.push_str(body);
        if continues {
            current = Some((line, joined));
        } else {
            let joined = joined.trim();
            let (op, args) = joined
                .split_once(char::is_whitespace)
                .unwrap_or((joined, ""));
            all.push(Instruction {
                line,
                op: op.to_ascii_uppercase(),
                args: args.trim().to_owned(),
            });
        }
    }
    all
}

/// `$NAME` and `${NAME}` replaced from `vars` (unset ones by nothing), as Docker does.
fn docker_expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if braced {
            assert_eq!(chars.next(), Some('}'), "unsupported expansion in {s:?}");
        }
        out.push_str(vars.get(&name).map_or("", String::as_str));
    }
    out
}

/// What the Dockerfile does for one function's build args.
#[derive(Debug, Default)]
struct DockerBuild {
    /// Stage names, in order.
    stages: Vec<String>,
    /// Images pulled (FROM and COPY --from that are not stages).
    images: Vec<(usize, String)>,
    /// `COPY`/`ADD` sources taken from the build context.
    context_sources: Vec<(usize, String)>,
    /// `ARG`s a stage declares without a default that the build args must set.
    required_args: BTreeSet<String>,
    /// The final stage's `ENV`, in order of setting.
    env: BTreeMap<String, String>,
    problems: Vec<String>,
}

fn docker_build(text: &str, build_args: &BTreeMap<String, String>) -> DockerBuild {
    let mut b = DockerBuild::default();
    // Global ARGs (before the first FROM) are visible to FROM lines.
    let mut global: BTreeMap<String, String> = BTreeMap::new();
    let mut stage_vars: BTreeMap<String, String> = BTreeMap::new();
    let mut in_stage = false;
    for ins in instructions(text) {
        match ins.op.as_str() {
            "ARG" => {
                let (name, default) = match ins.args.split_once('=') {
                    Some((n, d)) => (n.trim().to_owned(), Some(d.trim().trim_matches('"'))),
                    None => (ins.args.trim().to_owned(), None),
                };
                let value = build_args
                    .get(&name)
                    .cloned()
                    .or_else(|| default.map(str::to_owned))
                    .or_else(|| global.get(&name).cloned());
                if in_stage {
                    if value.is_none() {
                        b.required_args.insert(name.clone());
                    }
                    stage_vars.insert(name, value.unwrap_or_default());
                } else {
                    global.insert(name, value.unwrap_or_default());
                }
            }
            "FROM" => {
                in_stage = true;
                stage_vars.clear();
                b.env.clear();
                let words: Vec<&str> = ins
                    .args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let image = docker_expand(words.first().copied().unwrap_or(""), &global);
                if !b.stages.contains(&image) {
                    b.images.push((ins.line, image));
                }
                match words.as_slice() {
                    [_, kw, name] if kw.eq_ignore_ascii_case("as") => {
                        b.stages.push((*name).to_owned())
                    }
                    [_] => b.stages.push(String::new()),
                    _ => b.problems.push(format!(
                        "line {}: FROM {} not understood",
                        ins.line, ins.args
                    )),
                }
            }
            "COPY" | "ADD" => {
                if ins.args.starts_with('[') {
                    b.problems.push(format!(
                        "line {}: JSON-form {} not checked",
                        ins.line, ins.op
                    ));
                    continue;
                }
                let words: Vec<&str> = ins.args.split_whitespace().collect();
                let from = words
                    .iter()
                    .find_map(|w| w.strip_prefix("--from="))
                    .map(|f| docker_expand(f, &stage_vars));
                let paths: Vec<&str> = words
                    .iter()
                    .copied()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let Some((_, sources)) = paths.split_last() else {
                    b.problems
                        .push(format!("line {}: {} without a source", ins.line, ins.op));
                    continue;
                };
                match from {
                    Some(stage) if b.stages.contains(&stage) => {}
                    Some(image) => b.images.push((ins.line, image)),
                    None => b.context_sources.extend(
                        sources
                            .iter()
                            .map(|s| (ins.line, docker_expand(s, &stage_vars))),
                    ),
                }
            }
            "ENV" => {
                let mut vars = stage_vars.clone();
                vars.extend(b.env.clone());
                for pair in ins.args.split_whitespace() {
                    match pair.split_once('=') {
                        Some((k, v)) => {
                            b.env.insert(k.to_owned(), docker_expand(v, &vars));
                        }
                        None => b.problems.push(format!(
                            "line {}: write ENV as KEY=value pairs without spaces",
                            ins.line
                        )),
                    }
                }
            }
            _ => {}
        }
    }
    b
}

/// The `.dockerignore` of a build context: plain paths here (no wildcards).
fn ignored(patterns: &[String], path: &str) -> bool {
    patterns
        .iter()
        .any(|p| path == p || path.starts_with(&format!("{p}/")))
}

// ---------------------------------------------------------------------------------------
// faas-cli build --shrinkwrap

/// A build context as `CreateBuildContext` lays it out: every path in it (relative, `/`
/// separated), with the file it was copied from (`None` for a directory). It is computed,
/// not copied: with the workspace root as the handler the copy would hold whatever the
/// checkout holds (a stray `target/` is gigabytes), and only which paths exist matters.
#[derive(Debug, Default)]
struct BuildContext {
    paths: BTreeMap<String, Option<PathBuf>>,
}

impl BuildContext {
    /// go-sdk `copyFiles`: `os.Stat` (symlinks followed), directories recursively.
    fn copy(&mut self, src: &Path, dest: &str) -> Result<(), String> {
        let meta = std::fs::metadata(src).map_err(|e| format!("{}: {e}", src.display()))?;
        if meta.is_dir() {
            self.paths.insert(dest.to_owned(), None);
            let entries = std::fs::read_dir(src).map_err(|e| format!("{}: {e}", src.display()))?;
            for entry in entries {
                let entry = entry.map_err(|e| format!("{}: {e}", src.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                self.copy(&entry.path(), &join(dest, &name))?;
            }
        } else {
            self.paths.insert(dest.to_owned(), Some(src.to_path_buf()));
        }
        Ok(())
    }

    /// `CreateBuildContext(functionName, handler, language, copyExtraPaths)`.
    fn shrinkwrap(
        root: &Path,
        handler: &str,
        lang: &str,
        template: &LanguageTemplate,
        copy_extra: &[String],
    ) -> Result<Self, String> {
        let mut ctx = Self::default();
        let overlay = template.handler_folder.as_deref().unwrap_or("function");
        ctx.paths.insert(clean(overlay), None);
        ctx.copy(&root.join(LANG_DIR).join(lang), "")?;
        let handler_dir = root.join(handler);
        let entries = std::fs::read_dir(&handler_dir)
            .map_err(|e| format!("handler {handler}: {}: {e}", handler_dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("handler {handler}: {e}"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "build" || name == "template" {
                continue;
            }
            ctx.copy(&entry.path(), &join(&clean(overlay), &name))?;
        }
        for extra in copy_extra {
            let rel = clean(extra);
            if rel.is_empty() || rel.starts_with("..") {
                return Err(format!(
                    "configuration.copy {extra:?} is the project or outside it"
                ));
            }
            ctx.copy(&root.join(&rel), &join(&clean(overlay), &rel))?;
        }
        Ok(ctx)
    }

    fn has(&self, path: &str) -> bool {
        self.paths.contains_key(&clean(path))
    }
}

/// A relative path in `/` form without `.` parts or a trailing `/` (`path.Clean`-like).
fn clean(p: &str) -> String {
    p.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        clean(name)
    } else {
        format!("{dir}/{}", clean(name))
    }
}

/// The workspace's crates, from `cargo metadata` on the handler's manifest.
fn workspace_crates(handler_dir: &Path) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(handler_dir.join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    meta["packages"].as_array().cloned().unwrap_or_default()
}

/// The build args faas-cli passes for `f`: its `build_args`, and `ADDITIONAL_PACKAGE` from
/// its `build_options` (always set, perhaps empty).
fn build_args(f: &Function, t: &LanguageTemplate) -> Result<BTreeMap<String, String>, String> {
    let mut packages = Vec::new();
    for option in &f.build_options {
        let found = t
            .build_options
            .iter()
            .find(|o| &o.name == option)
            .ok_or_else(|| format!("build option {option:?} is not in template.yml"))?;
        packages.extend(found.packages.iter().cloned());
    }
    if let Some(more) = f.build_args.get("ADDITIONAL_PACKAGE") {
        packages.extend(more.split_whitespace().map(str::to_owned));
    }
    packages.sort();
    packages.dedup();
    let mut args = f.build_args.clone();
    args.insert("ADDITIONAL_PACKAGE".into(), packages.join(" "));
    Ok(args)
}

// ---------------------------------------------------------------------------------------
// The tests

#[test]
fn profiles_set_every_variable_stack_yml_needs() {
    let cold = profile("cold");
    let warm = profile("warm");
    let names = |p: &BTreeMap<String, String>| p.keys().cloned().collect::<BTreeSet<_>>();
    let expected: BTreeSet<String> = PROFILE_VARS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        names(&cold),
        expected,
        "cold.env sets exactly the profile variables"
    );
    assert_eq!(
        names(&warm),
        expected,
        "warm.env sets exactly the profile variables"
    );
    assert_eq!(cold["FAVE_PROFILE"], "cold");
    assert_eq!(warm["FAVE_PROFILE"], "warm");
    assert_eq!(cold["FAVE_SCALE_MIN"], "0");
    assert_eq!(cold["FAVE_SCALE_ZERO"], "true");
    assert_ne!(warm["FAVE_SCALE_MIN"], "0");
    assert_eq!(warm["FAVE_SCALE_ZERO"], "false");

    let (_, uses) = services(&BTreeMap::new());
    assert!(
        !uses.is_empty(),
        "stack.yml takes its scaling from variables"
    );
    for name in PROFILE_VARS {
        assert!(uses.iter().any(|u| u.name == name), "stack.yml uses {name}");
    }
    for u in &uses {
        let set_by_both = [&cold, &warm]
            .iter()
            .all(|p| p.get(&u.name).is_some_and(|v| !v.is_empty()));
        assert!(
            u.default.is_some() || set_by_both,
            "stack.yml's ${{{}}} has no default and is not set by both profiles",
            u.name
        );
    }

    // The labels each profile makes, and those made when none is loaded.
    for (name, vars) in [("cold", &cold), ("warm", &warm), ("none", &BTreeMap::new())] {
        let (s, _) = services(vars);
        for (fname, f) in &s.functions {
            let label = |k: &str| {
                f.labels
                    .get(k)
                    .unwrap_or_else(|| panic!("{name}: {fname} has no label {k}"))
                    .as_str()
            };
            let min: u32 = label("com.openfaas.scale.min")
                .parse()
                .expect("min is a number");
            let max: u32 = label("com.openfaas.scale.max")
                .parse()
                .expect("max is a number");
            assert!(
                max >= 1 && min <= max,
                "{name}: {fname}: min {min}, max {max}"
            );
            // Absent means false, as OpenFaaS reads it.
            let zero = f
                .labels
                .get("com.openfaas.scale.zero")
                .map_or("false", String::as_str);
            assert!(
                zero == "true" || zero == "false",
                "{name}: {fname}: zero {zero:?}"
            );
            if zero == "true" {
                assert!(
                    go_duration(label("com.openfaas.scale.zero-duration")).is_some(),
                    "{name}: {fname}: zero-duration"
                );
            }
            let profile = label("fave.profile");
            assert_eq!(
                profile,
                vars.get("FAVE_PROFILE").map_or("warm", String::as_str)
            );
            if fname == "orchestrator" {
                // It runs the resumer: never at zero, in any profile.
                assert_eq!((min, zero), (1, "false"), "{name}");
            } else if name == "cold" {
                assert_eq!((min, zero), (0, "true"), "{fname}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The deploy request faas-cli sends, and OpenFaaS Community Edition's rules for it

/// The body `faas-cli deploy` sends to `/system/functions` for `f` (faas-provider
/// `types.FunctionDeployment`, built by faas-cli's `commands/deploy.go` and
/// `proxy/deploy.go` at c8191b71e7edf10be3b660ddcaee52c11de79238): the function's labels and
/// annotations as stack.yml gives them (faas-cli adds none of its own; `--label` and
/// `--annotation` flags, unused here, would be merged over them), always sent, even empty;
/// the environment, `fprocess` else template.yml's, the secrets, the image with `:latest`
/// when it has no tag, and the namespace only when set.
fn deploy_request(name: &str, f: &Function, t: &LanguageTemplate) -> Value {
    let image = match f
        .image
        .rsplit_once('/')
        .map_or(f.image.as_str(), |(_, i)| i)
    {
        last if last.contains(':') => f.image.clone(),
        _ => format!("{}:latest", f.image),
    };
    let mut body = serde_json::json!({
        "service": name,
        "image": image,
        "envVars": f.environment,
        "labels": f.labels,
        "annotations": f.annotations,
    });
    if let Some(fprocess) = f.fprocess.clone().or_else(|| t.fprocess.clone()) {
        body["envProcess"] = fprocess.into();
    }
    if !f.secrets.is_empty() {
        body["secrets"] = serde_json::json!(f.secrets);
    }
    if let Some(ns) = &f.namespace {
        body["namespace"] = ns.clone().into();
    }
    if f.readonly_root_filesystem {
        body["readOnlyRootFilesystem"] = true.into();
    }
    body
}

/// OpenFaaS Community Edition's checks of a deploy request, restated from faas-netes
/// (openfaas/faas-netes at 662ce9ce36ec4a32467773c308807bd5d58f5ae6,
/// `pkg/handlers/validate.go` `ValidateDeployRequest` and `validateScalingLabels`,
/// `pkg/handlers/deploy.go` `buildAnnotations`, `pkg/handlers/replica_reader.go`
/// `MaxReplicas`). `Err` carries the message CE answers `400 validation failed: …` with.
fn community_edition_validates(body: &Value) -> Result<(), String> {
    const MAX_REPLICAS: i64 = 5;
    let service = body["service"].as_str().unwrap_or_default();
    if service.is_empty() {
        return Err("service: is required".into());
    }
    let dns_label = service
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !service.starts_with('-')
        && !service.ends_with('-');
    if !dns_label {
        return Err(format!(
            "service: ({service}) is invalid, must be a valid DNS entry"
        ));
    }
    if body["image"].as_str().unwrap_or_default().is_empty() {
        return Err("image: is required".into());
    }
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let labels = &body["labels"];
    if text(labels, "com.openfaas.scale.zero").as_deref() == Some("true") {
        return Err("com.openfaas.scale.zero not available for Community Edition".into());
    }
    for key in [
        "com.openfaas.scale.zero-duration",
        "com.openfaas.scale.target",
        "com.openfaas.scale.type",
    ] {
        if labels.get(key).is_some() {
            return Err(format!("{key} not available for Community Edition"));
        }
    }
    for key in ["com.openfaas.scale.max", "com.openfaas.scale.min"] {
        // Go's strconv.Atoi: a value that is not an integer is not checked.
        if let Some(n) = text(labels, key).and_then(|v| v.parse::<i64>().ok())
            && n > MAX_REPLICAS
        {
            return Err(format!("{key} is set too high for Community Edition"));
        }
    }
    if let Some(annotations) = body["annotations"].as_object() {
        for (key, value) in annotations {
            if key == "topic" && value.as_str().is_some_and(|v| v.contains(',')) {
                return Err(
                    "the topic annotation may only support one value in the Community Edition"
                        .into(),
                );
            }
            if key.contains("amazonaws.com") || key.contains("gke.io") {
                return Err(format!(
                    "annotation {key:?} is not supported in the Community Edition"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn every_deploy_request_passes_community_editions_rules() {
    let profiles = [
        ("none", BTreeMap::new()),
        ("warm", profile("warm")),
        ("cold", profile("cold")),
    ];
    for (name, vars) in &profiles {
        let (s, _) = services(vars);
        // CE runs at most 15 functions (faas-netes `MaxFunctions`).
        assert!(s.functions.len() <= 15, "{name}: {}", s.functions.len());
        for (fname, f) in &s.functions {
            let body = deploy_request(fname, f, &template(&f.lang));
            let verdict = community_edition_validates(&body);
            eprintln!("CE validation, profile {name}, {fname}: {verdict:?}");
            if *name == "cold" && fname != "orchestrator" {
                // Scaling to zero is what the cold profile is for: Standard/Enterprise only.
                assert_eq!(
                    verdict,
                    Err("com.openfaas.scale.zero not available for Community Edition".into()),
                    "{fname}: {body}"
                );
            } else {
                assert_eq!(verdict, Ok(()), "profile {name}, {fname}: {body}");
            }
        }
    }
    let cold =
        std::fs::read_to_string(repo_root().join("deploy/profiles/cold.env")).expect("cold.env");
    assert!(
        cold.contains("Standard or Enterprise"),
        "cold.env says which editions it needs"
    );
}

#[test]
fn community_editions_rules_refuse_what_faas_netes_refuses() {
    // The restated rules themselves, on the labels the old stack.yml sent every stage.
    let with = |labels: Value| {
        community_edition_validates(&serde_json::json!({
            "service": "stage-audio", "image": "fave/stage-audio:latest", "labels": labels,
        }))
    };
    assert_eq!(
        with(serde_json::json!({"com.openfaas.scale.min": "1"})),
        Ok(())
    );
    assert_eq!(
        with(serde_json::json!({"com.openfaas.scale.zero": "false"})),
        Ok(())
    );
    for (labels, refused) in [
        (
            serde_json::json!({"com.openfaas.scale.zero-duration": "15m"}),
            "zero-duration",
        ),
        (
            serde_json::json!({"com.openfaas.scale.zero": "true"}),
            "scale.zero not",
        ),
        (
            serde_json::json!({"com.openfaas.scale.max": "6"}),
            "too high",
        ),
        (
            serde_json::json!({"com.openfaas.scale.type": "rps"}),
            "scale.type",
        ),
    ] {
        let verdict = with(labels.clone());
        assert!(
            verdict.as_ref().is_err_and(|e| e.contains(refused)),
            "{labels}: {verdict:?}"
        );
    }
}

#[test]
fn stack_yml_follows_faas_cli_rules() {
    let root = repo_root();
    let (s, _) = services(&profile("warm"));
    assert_eq!(s.provider.name, "openfaas", "faas-cli's only provider");
    // yaml.v3 reads the scalar's text into a string; "1.0" is the one valid schema version.
    let version = match &s.version {
        None => None,
        Some(Yaml::Number(n)) => Some(n.to_string()),
        Some(Yaml::String(v)) => Some(v.clone()),
        Some(other) => panic!("version {other:?}"),
    };
    assert!(
        version.is_none_or(|v| v == "1.0"),
        "stack.yml's version is 1.0"
    );
    let crates = workspace_crates(&root);
    // The orchestrator and every function its video pipeline calls are deployed.
    let table = orchestrator::pipeline::video().expect("a well-formed table");
    for needed in table
        .stages()
        .iter()
        .map(|spec| spec.function.as_str())
        .chain(["orchestrator"])
    {
        assert!(
            s.functions.contains_key(needed),
            "{needed} is not in stack.yml"
        );
    }
    let dockerfile_text = |lang: &str| {
        std::fs::read_to_string(root.join(LANG_DIR).join(lang).join("Dockerfile"))
            .unwrap_or_else(|e| panic!("template {lang} has no Dockerfile: {e}"))
    };

    for (name, f) in &s.functions {
        let t = template(&f.lang);
        assert!(
            t.language.as_deref().is_none_or(|l| l == f.lang),
            "{name}: template.yml's language"
        );
        let handler = root.join(&f.handler);
        assert!(
            handler.is_dir(),
            "{name}: handler {} is not a directory",
            f.handler
        );
        assert!(!f.skip_build, "{name}: built from the template");

        // The crate to build: named by the build arg, a workspace member under the handler,
        // with a binary named after the function (what the local supervisor runs too).
        let args = build_args(f, &t).unwrap_or_else(|e| panic!("{name}: {e}"));
        let krate = args
            .get("FAVE_FUNCTION")
            .unwrap_or_else(|| panic!("{name}: build_args has no FAVE_FUNCTION"));
        let package = crates
            .iter()
            .find(|p| p["name"] == krate.as_str())
            .unwrap_or_else(|| panic!("{name}: {krate} is not a workspace crate"));
        let manifest = PathBuf::from(package["manifest_path"].as_str().expect("a path"));
        assert!(
            manifest.starts_with(handler.canonicalize().expect("handler resolves")),
            "{name}: crate {krate} is outside the handler {}",
            f.handler
        );
        let has_bin = package["targets"].as_array().is_some_and(|targets| {
            targets.iter().any(|t| {
                t["name"] == name.as_str()
                    && t["kind"]
                        .as_array()
                        .is_some_and(|k| k.contains(&"bin".into()))
            })
        });
        assert!(has_bin, "{name}: crate {krate} has no binary named {name}");
        assert!(
            f.image
                .rsplit('/')
                .next()
                .is_some_and(|i| i.starts_with(&format!("{name}:"))),
            "{name}: image {} is named after the function",
            f.image
        );

        // The process the watchdog runs: what `faas-cli deploy` sends, else the image's.
        let build = docker_build(&dockerfile_text(&f.lang), &args);
        assert!(build.problems.is_empty(), "{name}: {:?}", build.problems);
        let fprocess = f
            .fprocess
            .clone()
            .or_else(|| t.fprocess.clone())
            .or_else(|| build.env.get("fprocess").cloned())
            .unwrap_or_default();
        assert_eq!(fprocess, format!("/home/app/{name}"), "{name}: fprocess");
        assert_eq!(
            build.env.get("mode").map(String::as_str),
            Some("http"),
            "{name}"
        );
        let missing: Vec<_> = build
            .required_args
            .iter()
            .filter(|a| !args.contains_key(*a))
            .collect();
        assert!(
            missing.is_empty(),
            "{name}: build args {missing:?} are not set"
        );

        // The binary listens where the watchdog sends calls: the image's environment with
        // the deployment's on top, read by the binaries' own config code.
        let mut env = build.env.clone();
        env.extend(f.environment.clone());
        assert!(
            !env.contains_key("FAVE_LISTEN_ADDR"),
            "{name}: of-watchdog sets no FAVE_LISTEN_ADDR"
        );
        let listen = listen_addr(&|k| env.get(k).cloned()).expect("a listen address");
        let upstream = url::Url::parse(env.get("upstream_url").expect("upstream_url"))
            .expect("upstream_url is a URL");
        assert_eq!(upstream.host_str(), Some("127.0.0.1"), "{name}");
        assert_eq!(
            upstream.port(),
            Some(listen.port()),
            "{name}: upstream_url vs the binary's port"
        );
        let watchdog_port: u16 = env.get("port").map_or(8080, |p| p.parse().expect("port"));
        assert_ne!(
            watchdog_port,
            listen.port(),
            "{name}: the watchdog and the binary share a port"
        );

        // Secrets and the settings the binaries read.
        let secrets: BTreeSet<&str> = f.secrets.iter().map(String::as_str).collect();
        assert_eq!(secrets, SECRETS.into(), "{name}: secrets");
        assert_eq!(
            f.environment.get("FAVE_BUCKET").map(String::as_str),
            Some("fave-artifacts"),
            "{name}"
        );
        let timeout = |k: &str| {
            let v = f
                .environment
                .get(k)
                .unwrap_or_else(|| panic!("{name}: no {k}"));
            go_duration(v).unwrap_or_else(|| panic!("{name}: {k}={v:?} is not a duration"))
        };
        let (read_t, write_t, exec_t) = (
            timeout("read_timeout"),
            timeout("write_timeout"),
            timeout("exec_timeout"),
        );
        assert!(
            write_t >= exec_t && read_t >= exec_t,
            "{name}: read/write_timeout cover exec_timeout"
        );
        assert!(
            timeout("healthcheck_interval") < write_t,
            "{name}: healthcheck_interval"
        );
    }

    // Each stage's watchdog outlasts the orchestrator's timeout for it, and the orchestrator's
    // outlasts its sync window.
    let orch = &s.functions["orchestrator"].environment;
    assert_eq!(orch["GATEWAY_URL"], "http://gateway.openfaas:8080");
    let secs = |k: &str, default: u64| orch.get(k).map_or(default, |v| v.parse().expect("seconds"));
    let cap = Duration::from_secs(secs("FAVE_STAGE_TIMEOUT_SECS", 600));
    let exec =
        |f: &str| go_duration(&s.functions[f].environment["exec_timeout"]).expect("a duration");
    for spec in table.stages() {
        let waits = spec.timeout.min(cap);
        assert!(
            exec(&spec.function) > waits,
            "{}: exec_timeout {:?} does not outlast the orchestrator's {waits:?}",
            spec.function,
            exec(&spec.function)
        );
    }
    let sync = Duration::from_secs(secs("FAVE_SYNC_WINDOW_SECS", 300));
    assert!(
        exec("orchestrator") > sync,
        "the sync window fits the orchestrator's timeouts"
    );
    // A queue worker's delivery is held for the request's end, inside the watchdog's
    // timeout, so the callback carries the result and not the watchdog's 504.
    let hold = Duration::from_secs(secs("FAVE_ASYNC_HOLD_SECS", 3600));
    assert!(
        exec("orchestrator") > hold,
        "the async hold {hold:?} fits the orchestrator's exec_timeout"
    );
}

#[test]
fn shrinkwrapped_contexts_hold_what_the_dockerfiles_copy() {
    let root = repo_root();
    let (s, _) = services(&profile("warm"));
    let crates = workspace_crates(&root);
    let mut contexts: BTreeMap<(String, String), BuildContext> = BTreeMap::new();
    for (name, f) in &s.functions {
        let t = template(&f.lang);
        // The context does not depend on the function's name beyond build/<name>/.
        let ctx = contexts
            .entry((f.lang.clone(), f.handler.clone()))
            .or_insert_with(|| {
                BuildContext::shrinkwrap(&root, &f.handler, &f.lang, &t, &s.configuration.copy)
                    .unwrap_or_else(|e| panic!("{name}: shrinkwrap: {e}"))
            });
        let dockerfile = ctx
            .paths
            .get("Dockerfile")
            .cloned()
            .flatten()
            .unwrap_or_else(|| panic!("{name}: the build context has no Dockerfile"));
        let text = std::fs::read_to_string(dockerfile).expect("the Dockerfile reads");
        let ignore: Vec<String> = ctx
            .paths
            .get(".dockerignore")
            .cloned()
            .flatten()
            .map(|p| std::fs::read_to_string(p).expect(".dockerignore reads"))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                assert!(
                    !l.contains(['*', '?', '[', '!']),
                    ".dockerignore {l:?}: plain paths only"
                );
                clean(l)
            })
            .collect();
        let args = build_args(f, &t).unwrap_or_else(|e| panic!("{name}: {e}"));
        let build = docker_build(&text, &args);
        assert!(build.problems.is_empty(), "{name}: {:?}", build.problems);

        for (line, source) in &build.context_sources {
            assert!(
                ctx.has(source) && !ignored(&ignore, &clean(source)),
                "{name}: Dockerfile line {line}: COPY source {source} is not in build/{name}/"
            );
        }
        // The build stage copies function/ whole; cargo needs the lock file and every
        // workspace member there (a workspace fails to load with one missing).
        let handler = root
            .join(&f.handler)
            .canonicalize()
            .expect("handler resolves");
        let overlay = t
            .handler_folder
            .clone()
            .unwrap_or_else(|| "function".into());
        let mut needed = vec![join(&overlay, "Cargo.toml"), join(&overlay, "Cargo.lock")];
        for p in &crates {
            let manifest = PathBuf::from(p["manifest_path"].as_str().expect("a path"));
            let rel = manifest
                .strip_prefix(&handler)
                .expect("members are under the handler");
            needed.push(join(&overlay, &rel.to_string_lossy()));
            for target in p["targets"].as_array().into_iter().flatten() {
                let src = PathBuf::from(target["src_path"].as_str().expect("a path"));
                let rel = src
                    .strip_prefix(&handler)
                    .expect("sources are under the handler");
                needed.push(join(&overlay, &rel.to_string_lossy()));
            }
        }
        for path in &needed {
            assert!(
                ctx.has(path) && !ignored(&ignore, path),
                "{name}: {path} is not in the build context docker receives"
            );
        }
        // Every stage the build names exists, and every image is pinned.
        for (line, image) in &build.images {
            let tag = image
                .rsplit('/')
                .next()
                .and_then(|last| last.split_once(':'));
            assert!(
                image.contains("@sha256:")
                    || tag.is_some_and(|(_, t)| !t.is_empty() && t != "latest"),
                "{name}: Dockerfile line {line}: {image:?} is neither a stage nor a pinned image"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// A binary run as of-watchdog runs it

/// The embedded S3 server with the stack's bucket, standing in for the cluster's store.
struct Store {
    server: EmbeddedS3,
    key: String,
    secret: String,
    _dir: tempfile::TempDir,
}

impl Store {
    async fn start(bucket: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let key = format!("fave-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let server = EmbeddedS3::start(&S3ServerOptions {
            data_dir: dir.path().join("s3"),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_key_id: key.clone(),
            secret_access_key: secret.clone(),
        })
        .await
        .expect("the embedded S3 server starts");
        let settings = S3Settings {
            bucket: bucket.to_owned(),
            endpoint: Some(server.endpoint().parse().expect("a URL")),
            region: "us-east-1".into(),
            access_key_id: Some(Secret::new(key.clone())),
            secret_access_key: Some(Secret::new(secret.clone())),
            force_path_style: true,
            max_attempts: 3,
            read_timeout: std::time::Duration::from_secs(60),
        };
        Storage::connect(&settings)
            .await
            .ensure_bucket()
            .await
            .expect("the bucket is made");
        Self {
            server,
            key,
            secret,
            _dir: dir,
        }
    }
}

/// A function binary started with the environment of-watchdog gives it in its container:
/// the image's `ENV` (template/rust-fave/Dockerfile), the deployment's (stack.yml, as
/// faas-cli substitutes it), its secrets as files under one directory, nothing else. Only
/// `PORT` differs, a free one, so that tests can run side by side.
struct Watchdogged {
    child: tokio::process::Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Watchdogged {
    async fn start(function: &str, store: &Store) -> Self {
        let mut me = Self::spawn(function, store, &[]);
        me.wait_healthy().await;
        me
    }

    /// Starts the binary with `extra` over the container's environment, and returns at once.
    fn spawn(function: &str, store: &Store, extra: &[(&str, &str)]) -> Self {
        let root = repo_root();
        // An operator deploying against this store would set FAVE_S3_ENDPOINT.
        let mut vars = profile("warm");
        vars.insert("FAVE_S3_ENDPOINT".into(), store.server.endpoint());
        let (s, _) = services(&vars);
        let f = &s.functions[function];
        let t = template(&f.lang);
        let text = std::fs::read_to_string(root.join(LANG_DIR).join(&f.lang).join("Dockerfile"))
            .expect("the Dockerfile reads");
        let build = docker_build(&text, &build_args(f, &t).expect("build args"));

        let dir = tempfile::tempdir().expect("a temp dir");
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).expect("a secrets dir");
        // As `faas-cli secret create --from-literal` stores them and OpenFaaS mounts them.
        std::fs::write(secrets.join(SECRETS[0]), format!("{}\n", store.key)).expect("written");
        std::fs::write(secrets.join(SECRETS[1]), format!("{}\n", store.secret)).expect("written");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();

        let mut env = build.env.clone();
        env.extend(f.environment.clone());
        assert!(!env.contains_key("FAVE_LISTEN_ADDR"));
        env.insert("PORT".into(), port.to_string());
        env.insert("upstream_url".into(), format!("http://127.0.0.1:{port}"));
        env.insert("FAVE_SECRETS_DIR".into(), secrets.display().to_string());
        env.insert("HOSTNAME".into(), format!("{function}-7c9d8b6f5-x2x4q"));
        env.insert("HOME".into(), dir.path().display().to_string());
        env.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));

        let log = dir.path().join(format!("{function}.log"));
        let out = std::fs::File::create(&log).expect("a log file");
        let err = out.try_clone().expect("a second handle");
        let child = tokio::process::Command::new(bin_dir().join(function))
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("the function binary starts");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    /// How long until the binary accepts a TCP connection on its port, from now.
    async fn time_to_accept(&mut self) -> Duration {
        let clock = std::time::Instant::now();
        let addr = self.base.trim_start_matches("http://").to_owned();
        loop {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return clock.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the binary exited ({status}):\n{}", self.logs());
            }
            assert!(
                clock.elapsed() < Duration::from_secs(30),
                "not accepting within 30 s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn wait_healthy(&mut self) {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(self.url("/healthz")).send().await
                && r.status() == 200
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the binary exited ({status}):\n{}", self.logs());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not healthy within 30 s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as the watchdog passes it on; the binary must drain and exit cleanly.
    async fn stop(mut self) {
        let pid = self.child.id().expect("still running");
        crate::util::signal(pid, rustix::process::Signal::TERM);
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits within its drain window")
            .expect("waitable");
        assert!(
            status.success(),
            "exit after SIGTERM: {status}\n{}",
            self.logs()
        );
    }
}

/// A body sent as the watchdog forwards one: streamed in pieces, so with
/// `Transfer-Encoding: chunked` and no Content-Length.
fn chunked(pieces: &[&str]) -> reqwest::Body {
    let pieces: Vec<Result<Bytes, std::io::Error>> = pieces
        .iter()
        .map(|p| Ok(Bytes::from(p.to_string())))
        .collect();
    reqwest::Body::wrap_stream(futures::stream::iter(pieces))
}

/// [`chunked`] really sends what the watchdog sends: the raw request, as a server reads it.
#[tokio::test]
async fn chunked_bodies_go_without_a_length() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!(
        "http://{}/sub/path?q=1",
        listener.local_addr().expect("bound")
    );
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("a connection");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        // Up to the chunked body's last, empty chunk.
        while !raw.ends_with(b"0\r\n\r\n") {
            let n = socket.read(&mut buf).await.expect("readable");
            assert!(n > 0, "the client closed early");
            raw.extend_from_slice(&buf[..n]);
        }
        let _ = socket
            .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            .await;
        String::from_utf8_lossy(&raw).to_ascii_lowercase()
    });
    let _ = reqwest::Client::new()
        .post(&url)
        .body(chunked(&["{\"a\": ", "1}"]))
        .send()
        .await;
    let raw = server.await.expect("the server saw the request");
    assert!(raw.starts_with("post /sub/path?q=1 http/1.1\r\n"), "{raw}");
    assert!(raw.contains("transfer-encoding: chunked\r\n"), "{raw}");
    assert!(!raw.contains("content-length"), "{raw}");
}

/// A call as the gateway and the watchdog forward it: OpenFaaS's headers included.
fn forwarded(builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    builder
        .header("X-Call-Id", uuid::Uuid::new_v4().to_string())
        .header("X-Start-Time", "1700000000000000000")
        .header("X-Forwarded-Host", "gateway.openfaas:8080")
        .header("X-Forwarded-For", "10.42.0.7")
}

fn assert_error(
    what: &str,
    (status, _, body): &(u16, reqwest::header::HeaderMap, Value),
    want: u16,
    code: &str,
) {
    assert_eq!(*status, want, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(body["error"]["retryable"].is_boolean(), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_answers_as_of_watchdog_calls_it() {
    let store = Store::start("fave-artifacts").await;
    let f = Watchdogged::start("orchestrator", &store).await;
    let http = reqwest::Client::new();
    let send = |b: reqwest::RequestBuilder| async move {
        read(forwarded(b).send().await.expect("the binary answers")).await
    };

    // POST / with a chunked body: malformed JSON, then JSON of the wrong shape (read whole,
    // parsed, and only then refused).
    let r = send(
        http.post(f.url("/"))
            .header("Content-Type", "application/json")
            .body(chunked(&[
                "{\"video_uri\": ",
                "\"s3://fave-artifacts/in/v.mp4\"",
            ])),
    )
    .await;
    assert_error("chunked malformed JSON", &r, 400, "malformed_json");
    let r = send(
        http.post(f.url("/"))
            .header("Content-Type", "application/json")
            .body(chunked(&["{\"video_uri\": ", "42", "}"])),
    )
    .await;
    assert_error(
        "chunked JSON of the wrong shape",
        &r,
        422,
        "invalid_request",
    );

    // Sub-paths and query strings reach the binary.
    let r = send(http.get(f.url("/requests?limit=x"))).await;
    assert_error("GET /requests?limit=x", &r, 400, "invalid_query_string");
    let r = send(http.get(f.url("/requests?limit=0"))).await;
    assert_error("GET /requests?limit=0", &r, 400, "invalid_limit");
    let (status, _, body) = send(http.get(f.url("/requests?limit=5&status=COMPLETED"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["requests"].is_array(), "{body}");
    let r = send(http.get(f.url("/requests/watchdog-test-unknown"))).await;
    assert_eq!(r.0, 404, "{}", r.2);
    assert!(r.2["error"]["code"].is_string(), "{}", r.2);
    let r = send(http.post(f.url("/requests/watchdog-test-unknown/cancel"))).await;
    assert_eq!(r.0, 404, "{}", r.2);
    let r = send(http.get(f.url("/no/such/route?x=1"))).await;
    assert_eq!(r.0, 404, "{}", r.2);
    assert!(r.2["error"]["code"].is_string(), "{}", r.2);

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_answers_as_of_watchdog_calls_it() {
    let store = Store::start("fave-artifacts").await;
    let f = Watchdogged::start("stage-ffmpeg-0", &store).await;
    let http = reqwest::Client::new();
    let send = |b: reqwest::RequestBuilder| async move {
        read(forwarded(b).send().await.expect("the binary answers")).await
    };
    let r = send(
        http.post(f.url("/"))
            .header("Content-Type", "application/json")
            .body(chunked(&["{\"request_id\": \"r1\", ", "\"stage\": "])),
    )
    .await;
    assert_error("chunked malformed JSON", &r, 400, "malformed_json");
    let r = send(
        http.post(f.url("/"))
            .header("Content-Type", "application/json")
            .body(chunked(&["{\"request_id\": ", "7}"])),
    )
    .await;
    assert_error(
        "chunked JSON of the wrong shape",
        &r,
        422,
        "invalid_request",
    );
    let r = send(http.get(f.url("/healthz?probe=kubelet"))).await;
    assert_eq!(r.0, 200, "{}", r.2);
    let r = send(http.post(f.url("/deeper/path?x=1")).body(chunked(&["{}"]))).await;
    assert_error("a route the stage does not have", &r, 404, "not_found");
    f.stop().await;
}

/// A copy of the detector's model directory whose cfg (the first file the loader reads) is
/// a named pipe: loading blocks until the test writes the real cfg into it. Nothing is
/// faked: the same loader reads the same model, only later.
struct SlowModel {
    dir: tempfile::TempDir,
    cfg: PathBuf,
}

impl SlowModel {
    fn new() -> Self {
        let real = fave_common::config::model_dir("FAVE_MODEL_DIR", "yolov3-tiny");
        let dir = tempfile::tempdir().expect("a temp dir");
        for file in ["model.onnx", "coco.names"] {
            std::os::unix::fs::symlink(real.join(file), dir.path().join(file))
                .expect("a link to the model");
        }
        let status = std::process::Command::new("mkfifo")
            .arg(dir.path().join("yolov3-tiny.cfg"))
            .status()
            .expect("mkfifo runs");
        assert!(status.success());
        Self {
            dir,
            cfg: real.join("yolov3-tiny.cfg"),
        }
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Lets the loader go on: the real cfg, written into the pipe.
    async fn release(&self) {
        let (from, to) = (self.cfg.clone(), self.dir.path().join("yolov3-tiny.cfg"));
        tokio::task::spawn_blocking(move || {
            std::fs::write(to, std::fs::read(from).expect("the real cfg"))
        })
        .await
        .expect("joins")
        .expect("the pipe takes the cfg");
    }
}

/// What of-watchdog needs of a function on a cold start: it reports the pod healthy without
/// asking the function (its lock file is written as soon as its own listener is up), so the
/// first calls may come at once. Every function accepts connections within moments of
/// starting, model or no model; a call that needs the model waits for it instead of being
/// refused, says it was a cold start, and gets a retryable 503 only after the load timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_listen_before_their_models_load_and_early_calls_wait() {
    let store = Store::start("fave-artifacts").await;
    let slow = SlowModel::new();
    let model = slow.path();
    // The image's model directories (/home/app/models) are this machine's.
    let whisper = fave_common::config::model_dir("FAVE_WHISPER_DIR", "whisper-tiny.en")
        .display()
        .to_string();
    // And so is ONNX Runtime's library (the image's is under /home/app/models too).
    let ort = std::env::var("ORT_DYLIB_PATH").unwrap_or_else(|_| {
        let tools = std::env::var("FAVE_TOOLS").unwrap_or_else(|_| {
            format!(
                "{}/.cache/fave-tools",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        format!("{tools}/onnxruntime/libonnxruntime.so.1.31.1")
    });
    let mut accept = Vec::new();
    let mut detect = None;
    for function in crate::util::FUNCTIONS {
        let extra: &[(&str, &str)] = match function {
            "stage-detect" => &[("FAVE_MODEL_DIR", &model), ("ORT_DYLIB_PATH", &ort)],
            "stage-transcribe" => &[("FAVE_WHISPER_DIR", &whisper)],
            _ => &[],
        };
        let mut f = Watchdogged::spawn(function, &store, extra);
        let took = f.time_to_accept().await;
        eprintln!(
            "{function}: accepts TCP {} ms after it was started",
            took.as_millis()
        );
        accept.push((function, took));
        if function == "stage-detect" {
            detect = Some(f);
        } else {
            // Its signal handler is set once it serves; SIGTERM before that kills it.
            f.wait_healthy().await;
            f.stop().await;
        }
    }
    for (function, took) in &accept {
        // Tens of milliseconds on a quiet machine (the figures above); the bound leaves room
        // for a loaded one, and is far below a model's load.
        assert!(*took < Duration::from_secs(2), "{function}: {took:?}");
    }

    // stage-detect listens while its model cannot have loaded: the cfg is still unwritten.
    let detect = detect.expect("started");
    let frame = "requests/r1/frames/frame-000001.jpg";
    let storage = Storage::connect(&S3Settings {
        bucket: "fave-artifacts".into(),
        endpoint: Some(store.server.endpoint().parse().expect("a URL")),
        region: "us-east-1".into(),
        access_key_id: Some(Secret::new(store.key.clone())),
        secret_access_key: Some(Secret::new(store.secret.clone())),
        force_path_style: true,
        max_attempts: 3,
        read_timeout: std::time::Duration::from_secs(60),
    })
    .await;
    storage
        .put_file(frame, &crate::util::sample("messi5.jpg"), "image/jpeg")
        .await
        .expect("the frame is stored");
    let call = serde_json::json!({
        "request_id": "r1", "stage": "stage-detect", "clip": "c000",
        "idempotency_key": "k1",
        "input": {"frames": [{"time_s": 0.0, "key": frame}]},
    });
    let http = reqwest::Client::new();
    let early = tokio::spawn(forwarded(http.post(detect.url("/")).json(&call)).send());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!early.is_finished(), "the early call waits for the model");
    slow.release().await;
    let answer = early
        .await
        .expect("joins")
        .expect("the early call is answered");
    let (status, headers, body) = read(answer).await;
    assert_eq!(status, 200, "{body}\n{}", detect.logs());
    assert!(
        body["data"]["labels"]["sports ball"]["best_score"].as_f64() > Some(0.3),
        "{body}"
    );
    let cold: u64 = headers
        .get(fave_common::gateway::COLD_START)
        .expect("the first call says it was a cold start")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("milliseconds");
    assert!(cold >= 1500, "it waited for the model: {cold} ms");
    // The next call is warm and says nothing.
    let mut again = call.clone();
    again["idempotency_key"] = "k2".into();
    let (status, headers, _) = read(
        forwarded(http.post(detect.url("/")).json(&again))
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key(fave_common::gateway::COLD_START));
    detect.stop().await;

    // A model that does not load within the load timeout: a retryable 503, not a hang.
    let stuck = SlowModel::new();
    let model = stuck.path();
    let mut f = Watchdogged::spawn(
        "stage-detect",
        &store,
        &[
            ("FAVE_MODEL_DIR", &model),
            ("ORT_DYLIB_PATH", &ort),
            ("FAVE_MODEL_LOAD_TIMEOUT_SECS", "1"),
        ],
    );
    f.time_to_accept().await;
    let r = read(
        forwarded(http.post(f.url("/")).json(&call))
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_error("a model still loading", &r, 503, "model_loading");
    assert_eq!(r.2["error"]["retryable"], true, "{}", r.2);
}
