//! Path parameters: what a route's path pattern (`/api/leads/{id}`) captured from the request
//! path, read by the stages that key or tag on them.

use std::ops::Range;
use std::sync::Arc;

/// Parameters captured from the path: names and byte ranges into the request path.
#[derive(Debug, Clone, Default)]
pub struct PathParams {
    captures: Vec<(Arc<str>, Range<usize>)>,
}

impl PathParams {
    /// The value of parameter `name` within `path` (the path that was matched).
    pub fn get<'p>(&self, path: &'p str, name: &str) -> Option<&'p str> {
        self.captures.iter().find(|(n, _)| &**n == name).and_then(|(_, r)| path.get(r.clone()))
    }

    /// Every captured parameter name with its value.
    pub fn iter<'a>(&'a self, path: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.captures.iter().map(move |(n, r)| (&**n, path.get(r.clone()).unwrap_or("")))
    }

    /// Records parameter `name` at `range` of the path.
    pub(crate) fn capture(&mut self, name: Arc<str>, range: Range<usize>) {
        self.captures.push((name, range));
    }

    /// Forgets every capture (before the next pattern is tried).
    pub(crate) fn clear(&mut self) {
        self.captures.clear();
    }
}
