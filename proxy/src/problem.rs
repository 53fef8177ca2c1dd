//! Configuration problems: each one names where it is (file, route, key) and what is wrong,
//! and conversion collects all of them before it fails.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The route (by name, or `#index` when it has none yet), when the problem is in a route.
    pub route: Option<String>,
    /// The dotted key path within the file or route, e.g. `cache.ttl`.
    pub key: Option<String>,
    /// What is wrong, lower case, no trailing period.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(route) = &self.route {
            write!(f, ": route {route}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one load of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Records a problem at a key of a file, outside any route.
    pub fn at(&mut self, file: &Path, key: &str, message: impl Into<String>) {
        self.0.push(Problem {
            file: file.to_owned(),
            route: None,
            key: (!key.is_empty()).then(|| key.to_owned()),
            message: message.into(),
        });
    }

    /// Records a problem at a key of a route.
    pub fn in_route(&mut self, file: &Path, route: &str, key: &str, message: impl Into<String>) {
        self.0.push(Problem {
            file: file.to_owned(),
            route: Some(route.to_owned()),
            key: (!key.is_empty()).then(|| key.to_owned()),
            message: message.into(),
        });
    }

    /// `Ok(value)` when no problem was recorded, else every problem.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() { Ok(value) } else { Err(self) }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}
