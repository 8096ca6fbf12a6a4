//! `${VAR}` substitution in stack.yml, as faas-cli does it before parsing the file.
//!
//! faas-cli (through openfaas/go-sdk's `stack` package) runs the whole file through
//! drone/envsubst with a lookup that answers `""` for an unset variable. So, as there:
//!
//! - `${VAR}` is the variable's value, or nothing when it is unset;
//! - `${VAR:-default}`, `${VAR:=default}` and `${VAR=default}` are the value, or `default`
//!   when the value is empty or unset (an empty value and an unset one look the same to
//!   faas-cli); drone treats `${VAR:?x}` and `${VAR:+x}` the same way, and so do we;
//! - a default may hold further `${…}`, e.g. `${A:-${B:-x}}`;
//! - `$$` is a literal `$`, and a `$` not followed by `{` stays as it is (a bare `$VAR` is
//!   *not* substituted, unlike in a shell);
//! - `${}` , `${VAR-x}` and an unclosed `${` are errors, as they are for faas-cli.
//!
//! drone's string functions (`${VAR,,}`, `${VAR:1:2}`, `${VAR/a/b}`, `${#VAR}`, …) are
//! reported as unsupported instead of being half-implemented: a stack file that uses them
//! fails loudly here rather than meaning something else than on a cluster. drone v1 (the
//! version faas-cli vendors) also drops a backslash before `/` or `\` anywhere in the
//! file, a quirk its v2 fixed; we follow v2 and keep backslashes.
//!
//! Not the `shellexpand` crate: it substitutes bare `$VAR`, leaves unknown variables in
//! place and has no `$$`, so the same file would read differently than under faas-cli.

/// Why a text could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct SubstError {
    /// 1-based line of the `${` that is wrong.
    pub line: usize,
    pub reason: String,
}

/// Substitutes every `${…}` of `text`, looking variables up with `lookup` (`None` = unset).
pub fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SubstError> {
    let mut parser = Parser {
        text,
        pos: 0,
        lookup,
    };
    parser.text_until(None)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn error(&self, at: usize, reason: impl Into<String>) -> SubstError {
        SubstError {
            line: self.text[..at].matches('\n').count() + 1,
            reason: reason.into(),
        }
    }

    /// Plain text with substitutions, up to the end (`stop` = `None`, the top level) or up
    /// to an unmatched `}` (inside a default), which is left unread. `$$` is an escape only
    /// at the top level, as in drone.
    fn text_until(&mut self, stop: Option<char>) -> Result<String, SubstError> {
        let mut out = String::new();
        while let Some(c) = self.rest().chars().next() {
            if Some(c) == stop {
                return Ok(out);
            }
            if self.rest().starts_with("${") {
                let start = self.pos;
                self.pos += 2;
                out.push_str(&self.substitution(start)?);
            } else if stop.is_none() && self.rest().starts_with("$$") {
                out.push('$');
                self.pos += 2;
            } else {
                out.push(c);
                self.pos += c.len_utf8();
            }
        }
        Ok(out)
    }

    /// One `${…}`, read from just after `${`.
    fn substitution(&mut self, start: usize) -> Result<String, SubstError> {
        let name_len = self
            .rest()
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(self.rest().len());
        let name = self.rest()[..name_len].to_owned();
        self.pos += name_len;
        if name.is_empty() {
            return Err(match self.rest().chars().next() {
                Some('#') => self.error(start, "${#VAR} (length) is not supported"),
                _ => self.error(start, "a variable name must follow ${"),
            });
        }
        let value = (self.lookup)(&name).unwrap_or_default();
        let operator = [":-", ":=", ":?", ":+", "=", "}"]
            .into_iter()
            .find(|op| self.rest().starts_with(op));
        match operator {
            Some("}") => {
                self.pos += 1;
                Ok(value)
            }
            Some(op) => {
                self.pos += op.len();
                let default = self.text_until(Some('}'))?;
                if !self.rest().starts_with('}') {
                    return Err(self.error(start, format!("${{{name}{op}… is not closed")));
                }
                self.pos += 1;
                Ok(if value.is_empty() { default } else { value })
            }
            None => Err(match self.rest().chars().next() {
                None | Some('\n') => self.error(start, format!("${{{name} is not closed")),
                Some('-') => self.error(
                    start,
                    format!("${{{name}-…}} is not supported (faas-cli rejects it too); use ${{{name}:-…}}"),
                ),
                Some(c) => self.error(
                    start,
                    format!("${{{name}{c}…}}: only ${{VAR}} and ${{VAR:-default}} forms are supported"),
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            "MIN" => Some("0".into()),
            _ => None,
        }
    }

    fn sub(text: &str) -> Result<String, SubstError> {
        substitute(text, &env)
    }

    #[test]
    fn values_and_defaults_as_drone_envsubst() {
        assert_eq!(sub("a ${SET} b").unwrap(), "a value b");
        assert_eq!(sub("${UNSET}").unwrap(), "");
        assert_eq!(sub("${UNSET:-1}").unwrap(), "1");
        assert_eq!(sub("${EMPTY:-1}").unwrap(), "1", "empty counts as unset");
        assert_eq!(sub("${MIN:-1}").unwrap(), "0", "0 is a value");
        assert_eq!(sub("${SET:-1}").unwrap(), "value");
        assert_eq!(sub("${UNSET:=x}${UNSET=y}").unwrap(), "xy");
        assert_eq!(sub("${UNSET:-15m}").unwrap(), "15m");
        assert_eq!(sub("${UNSET:-}").unwrap(), "");
        assert_eq!(sub("${UNSET:-a b:c}").unwrap(), "a b:c");
        assert_eq!(sub("${UNSET:-${SET}}").unwrap(), "value");
        assert_eq!(sub("${UNSET:-${ALSO_UNSET:-deep}}!").unwrap(), "deep!");
    }

    #[test]
    fn dollars_that_are_not_substitutions_stay() {
        assert_eq!(sub("$SET").unwrap(), "$SET", "bare $VAR is left alone");
        assert_eq!(sub("cost: 5$").unwrap(), "cost: 5$");
        assert_eq!(sub("$${SET}").unwrap(), "${SET}", "$$ escapes");
        assert_eq!(sub("a$$b").unwrap(), "a$b");
        assert_eq!(sub(r"re: ^\d+\/x$").unwrap(), r"re: ^\d+\/x$");
        assert_eq!(sub("ünïcode ${SET}").unwrap(), "ünïcode value");
    }

    #[test]
    fn a_stack_file_with_scaling_labels() {
        let text = "labels:\n  com.openfaas.scale.min: ${MIN:-1}\n  \
                    com.openfaas.scale.zero-duration: ${FAVE_SCALE_ZERO_DURATION:-15m}\n";
        assert_eq!(
            sub(text).unwrap(),
            "labels:\n  com.openfaas.scale.min: 0\n  com.openfaas.scale.zero-duration: 15m\n"
        );
    }

    #[test]
    fn malformed_and_unsupported_forms_are_errors_with_a_line() {
        for bad in [
            "${",
            "${}",
            "${SET",
            "${SET:-x",
            "${SET-x}",
            "${SET,,}",
            "${SET:1:2}",
            "${#SET}",
        ] {
            assert!(sub(bad).is_err(), "{bad}");
        }
        assert_eq!(sub("a\nb\n${SET").unwrap_err().line, 3);
    }
}
