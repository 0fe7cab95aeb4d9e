//! A value that must never reach a log line, an error body or a `{:?}` of
//! the config: its `Debug` redacts it by construction. Only [`Secret::expose`]
//! gives the value, and only code that needs it (opening the store) calls it.
//! A leaf module.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("postgres://pushgate:hunter2@db/pushgate");
        assert_eq!(format!("{s:?}"), "Secret(redacted)");
        assert_eq!(
            format!("{:?}", Some(&s)),
            "Some(Secret(redacted))",
            "nor inside other values"
        );
        assert_eq!(s.expose(), "postgres://pushgate:hunter2@db/pushgate");
    }
}
