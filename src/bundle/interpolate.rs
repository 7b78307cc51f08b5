//! `${...}` references in bundle values: `${var.<name>}`, `${bundle.name}`,
//! `${bundle.target}`, `${workspace.root_path}` and `${resources.pipelines.<key>.id}` (a
//! pipeline's id is its key). A reference to anything else is an error, never an empty
//! string.

use std::collections::BTreeMap;

use serde_yaml::Value;

/// What references resolve to.
pub struct Refs<'a> {
    pub vars: &'a BTreeMap<String, String>,
    pub bundle_name: &'a str,
    pub target: &'a str,
    /// `None` while `root_path` itself is being resolved.
    pub root_path: Option<&'a str>,
    /// The keys of `resources.pipelines`.
    pub pipelines: &'a [String],
}

impl Refs<'_> {
    fn lookup(&self, name: &str) -> Result<String, String> {
        let value = match name.split_once('.') {
            Some(("var", v)) => self.vars.get(v).cloned(),
            Some(("bundle", "name")) => Some(self.bundle_name.to_string()),
            Some(("bundle", "target")) => Some(self.target.to_string()),
            Some(("workspace", "root_path")) => self.root_path.map(str::to_string),
            Some(("resources", rest)) => rest
                .strip_prefix("pipelines.")
                .and_then(|r| r.strip_suffix(".id"))
                .filter(|key| self.pipelines.iter().any(|p| p == key))
                .map(str::to_string),
            _ => None,
        };
        value.ok_or_else(|| {
            format!(
                "unknown reference `${{{name}}}`. References are ${{var.NAME}} (variables: {}), ${{bundle.name}}, ${{bundle.target}}, ${{workspace.root_path}} and ${{resources.pipelines.KEY.id}} (pipelines: {})",
                self.vars.keys().cloned().collect::<Vec<_>>().join(", "),
                self.pipelines.join(", ")
            )
        })
    }

    /// `text` with every `${...}` replaced.
    pub fn string(&self, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("`{text}` has a `${{` without its closing `}}`"))?;
            out.push_str(&self.lookup(after[..end].trim())?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Replaces references in every string of `value`; problems are `(path, message)`.
    pub fn value(&self, value: &mut Value, path: &str, problems: &mut Vec<(String, String)>) {
        match value {
            Value::String(s) => match self.string(s) {
                Ok(v) => *s = v,
                Err(e) => problems.push((path.to_string(), e)),
            },
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.value(item, &format!("{path}[{i}]"), problems);
                }
            }
            Value::Mapping(map) => {
                for (k, v) in map.iter_mut() {
                    let key = k.as_str().unwrap_or_default();
                    let p = if path.is_empty() {
                        key.to_string()
                    } else {
                        format!("{path}.{key}")
                    };
                    self.value(v, &p, problems);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_or_fail_clearly() {
        let vars = BTreeMap::from([("topic".to_string(), "Stocks".to_string())]);
        let r = Refs {
            vars: &vars,
            bundle_name: "b",
            target: "dev",
            root_path: Some("/r"),
            pipelines: &["stocks".to_string()],
        };
        assert_eq!(
            r.string("${var.topic}-${bundle.name}/${bundle.target}@${workspace.root_path}")
                .unwrap(),
            "Stocks-b/dev@/r"
        );
        assert_eq!(r.string("plain").unwrap(), "plain");
        let err = r.string("x${var.nope}").unwrap_err();
        assert!(
            err.contains("unknown reference `${var.nope}`") && err.contains("topic"),
            "{err}"
        );
        assert!(r.string("${bundle.owner}").is_err());
        assert_eq!(
            r.string("${resources.pipelines.stocks.id}").unwrap(),
            "stocks"
        );
        assert!(r.string("${resources.pipelines.other.id}").is_err());
        assert!(r.string("${var.topic").is_err());

        let mut v: Value = serde_yaml::from_str("a: [x, '${var.bad}']").unwrap();
        let mut problems = Vec::new();
        r.value(&mut v, "resources", &mut problems);
        assert_eq!(problems[0].0, "resources.a[1]");
    }
}
