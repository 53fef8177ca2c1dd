//! [`Secret`]: a configured credential (admin and purge tokens, the Redis password and URL,
//! the credential key) whose `Debug` never shows it, so that a configuration printed with
//! `{:?}` (a test failure, a debug log line) never carries one.

use std::fmt;

use serde::Deserialize;

/// A secret string from the configuration. `Debug` prints `Secret(<redacted>)`; the value
/// is read only through [`expose`](Self::expose), where it is used.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret's text, for the one place that uses it (a comparison, a connection).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for `""` (an empty token is no token).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::from("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(Secret(<redacted>))");
        assert_eq!(secret.expose(), "hunter2");
    }
}
