//! A small reader over the parsed YAML tree that records typed values and
//! reports wrong types, missing keys and unknown keys with their key paths.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::problems::Problems;

/// A mapping in the config, with the path that leads to it.
pub struct Section<'a> {
    pub path: String,
    map: &'a Map<String, Value>,
    seen: BTreeSet<&'a str>,
}

/// Joins a parent path and a key the way `check-config` prints them.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

impl<'a> Section<'a> {
    pub fn new(path: impl Into<String>, map: &'a Map<String, Value>) -> Self {
        Section {
            path: path.into(),
            map,
            seen: BTreeSet::new(),
        }
    }

    /// Reads a sub-mapping at `path`, or reports the wrong type.
    pub fn of(path: String, value: &'a Value, p: &mut Problems) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Section::new(path, map)),
            Value::Null => None,
            other => {
                p.error(
                    path,
                    format!("expected a mapping, found {}", type_name(other)),
                );
                None
            }
        }
    }

    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The raw value of `key`; `null` counts as absent. Marks the key as known.
    pub fn raw(&mut self, key: &'a str) -> Option<&'a Value> {
        self.seen.insert(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// The raw value of a key that is not a `'static` name (app ids); marks it as known.
    pub fn raw_owned(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.seen.insert(k.as_str());
        Some(v).filter(|v| !v.is_null())
    }

    pub fn keys(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.map.keys().map(String::as_str)
    }

    pub fn has(&self, key: &str) -> bool {
        !matches!(self.map.get(key), None | Some(Value::Null))
    }

    fn wrong(&self, p: &mut Problems, key: &str, expected: &str, found: &Value) {
        p.error(
            self.key_path(key),
            format!("expected {expected}, found {}", type_name(found)),
        );
    }

    pub fn section(&mut self, key: &'a str, p: &mut Problems) -> Option<Section<'a>> {
        let path = self.key_path(key);
        self.raw(key).and_then(|v| Section::of(path, v, p))
    }

    pub fn string(&mut self, key: &'a str, p: &mut Problems) -> Option<String> {
        match self.raw(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong(p, key, "a string", other);
                None
            }
        }
    }

    pub fn required_string(&mut self, key: &'a str, p: &mut Problems) -> Option<String> {
        let present = self.has(key);
        let v = self.string(key, p);
        if !present {
            p.error(self.key_path(key), "required, but missing");
        } else if matches!(v.as_deref(), Some("")) {
            p.error(self.key_path(key), "must not be empty");
            return None;
        }
        v
    }

    pub fn path(&mut self, key: &'a str, p: &mut Problems) -> Option<PathBuf> {
        self.string(key, p).map(PathBuf::from)
    }

    pub fn bool(&mut self, key: &'a str, default: bool, p: &mut Problems) -> bool {
        match self.raw(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.wrong(p, key, "true or false", other);
                default
            }
        }
    }

    /// A whole number in `min..=max`.
    pub fn uint(
        &mut self,
        key: &'a str,
        default: u64,
        min: u64,
        max: u64,
        p: &mut Problems,
    ) -> u64 {
        match self.raw(key) {
            None => default,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => v,
                _ => {
                    p.error(
                        self.key_path(key),
                        format!("expected a whole number from {min} to {max}, found {n}"),
                    );
                    default
                }
            },
            Some(other) => {
                self.wrong(
                    p,
                    key,
                    &format!("a whole number from {min} to {max}"),
                    other,
                );
                default
            }
        }
    }

    /// A share: a number greater than 0 and at most 1, or a percentage string such as `50%`.
    pub fn fraction(&mut self, key: &'a str, default: f64, p: &mut Problems) -> f64 {
        let parsed = match self.raw(key) {
            None => return default,
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s
                .trim()
                .strip_suffix('%')
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|v| v / 100.0),
            Some(_) => None,
        };
        match parsed {
            Some(v) if v > 0.0 && v <= 1.0 => v,
            _ => {
                p.error(
                    self.key_path(key),
                    "expected a share greater than 0 and at most 1 (e.g. 0.5 or \"50%\")",
                );
                default
            }
        }
    }

    /// A duration: a number of seconds, or a string such as `500ms`, `2s`, `10m`, `1h`.
    pub fn duration(&mut self, key: &'a str, default: Duration, p: &mut Problems) -> Duration {
        let parsed = match self.raw(key) {
            None => return default,
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64),
            Some(Value::String(s)) => humantime::parse_duration(s.trim()).ok(),
            Some(_) => None,
        };
        parsed.unwrap_or_else(|| {
            p.error(
                self.key_path(key),
                "expected a duration: seconds as a number, or a string like \"500ms\", \"2s\", \"10m\"",
            );
            default
        })
    }

    /// A size in bytes: a number, or a string such as `512KiB`, `1MiB`.
    pub fn bytes(&mut self, key: &'a str, default: u64, p: &mut Problems) -> u64 {
        let parsed = match self.raw(key) {
            None => return default,
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => parse_size(s),
            Some(_) => None,
        };
        match parsed {
            Some(v) if v > 0 => v,
            _ => {
                p.error(
                    self.key_path(key),
                    "expected a size in bytes: a number, or a string like \"512KiB\", \"1MiB\" or \"1GiB\"",
                );
                default
            }
        }
    }

    pub fn string_list(&mut self, key: &'a str, p: &mut Problems) -> Option<Vec<String>> {
        let path = self.key_path(key);
        match self.raw(key)? {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => p.error(
                            format!("{path}[{i}]"),
                            format!("expected a string, found {}", type_name(other)),
                        ),
                    }
                }
                Some(out)
            }
            Value::String(s) => Some(vec![s.clone()]),
            other => {
                self.wrong(p, key, "a list of strings", other);
                None
            }
        }
    }

    pub fn object(&mut self, key: &'a str, p: &mut Problems) -> Option<Map<String, Value>> {
        match self.raw(key)? {
            Value::Object(m) => Some(m.clone()),
            other => {
                self.wrong(p, key, "a mapping", other);
                None
            }
        }
    }

    /// Marks keys as known without reading them (accepted for compatibility).
    pub fn ignore(&mut self, keys: &[&'a str]) {
        self.seen.extend(keys.iter().copied());
    }

    /// Warns about every key that no reader asked for, suggesting the known
    /// key it most likely misspells.
    pub fn finish(self, p: &mut Problems) {
        for key in self.map.keys() {
            if !self.seen.contains(key.as_str()) {
                let message = match closest(key, self.seen.iter().copied()) {
                    Some(known) => format!("unknown key, ignored; did you mean `{known}`?"),
                    None => "unknown key, ignored".to_owned(),
                };
                p.warn(join(&self.path, key), message);
            }
        }
    }
}

/// The known key closest to `typo` when it is a likely misspelling: at most
/// one edit for short keys, two for longer ones (a swap of neighbours is one).
fn closest<'k>(typo: &str, known: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    let budget = if typo.chars().count() <= 4 { 1 } else { 2 };
    known
        .map(|k| (edit_distance(typo, k), k))
        .filter(|(d, _)| *d <= budget)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and transpositions of adjacent characters each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512KiB"), Some(512 * 1024));
        assert_eq!(parse_size("1 MiB"), Some(1024 * 1024));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1TiB"), None);
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn misspelt_keys_get_the_closest_known_key() {
        let known = ["http", "log", "metrics", "apps", "proxy"];
        assert_eq!(closest("htpp", known.iter().copied()), Some("http"));
        assert_eq!(closest("metric", known.iter().copied()), Some("metrics"));
        assert_eq!(closest("pxory", known.iter().copied()), Some("proxy"));
        assert_eq!(closest("colour", known.iter().copied()), None);
        assert_eq!(closest("lag", known.iter().copied()), Some("log"));
        assert_eq!(closest("xyz", known.iter().copied()), None);
    }
}
