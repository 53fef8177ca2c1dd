//! Reading the Prometheus text exposition back: the snapshotter takes its numbers from the
//! same text `/metrics` serves, so the status page, `/health/summary` and a Prometheus server
//! never disagree, and no request does any work for them.

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The series name, with its `_total` / `_bucket` / `_count` suffix.
    pub name: &'a str,
    /// Label pairs in exposition order, values unescaped.
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// Every sample of `text`, skipping comments and lines that do not parse.
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter(|line| !line.starts_with('#') && !line.is_empty()).filter_map(parse_line)
}

fn parse_line(line: &str) -> Option<Sample<'_>> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let key = &rest[..eq];
            let (value, after) = quoted(rest[eq + 1..].strip_prefix('"')?)?;
            labels.push((key, value));
            rest = after;
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

/// A label value up to its closing quote, unescaped, and what follows the quote.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// The upper bound of a `_bucket` sample (`le`), `+Inf` included.
pub fn bound(sample: &Sample<'_>) -> Option<f64> {
    match sample.label("le")? {
        "+Inf" => Some(f64::INFINITY),
        le => le.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_samples_with_unescaped_labels() {
        let text = "# HELP x y\n# TYPE x counter\naccel_requests_total{route=\"a\\\"b\",status=\"2xx\"} 12\n\
                    accel_cache_entries 3\naccel_h_bucket{le=\"+Inf\"} 4\n";
        let all: Vec<Sample<'_>> = samples(text).collect();

        assert_eq!(all.len(), 3);
        assert_eq!(all[0].name, "accel_requests_total");
        assert_eq!(all[0].label("route"), Some("a\"b"));
        assert_eq!(all[0].label("status"), Some("2xx"));
        assert_eq!(all[0].value, 12.0);
        assert_eq!((all[1].name, all[1].labels.len(), all[1].value), ("accel_cache_entries", 0, 3.0));
        assert_eq!(bound(&all[2]), Some(f64::INFINITY));
    }

    #[test]
    fn broken_lines_are_skipped() {
        let text = "accel_x{route=\"a} 1\naccel_y 2\naccel_z{a=\"b\"} nope\n";
        let names: Vec<&str> = samples(text).map(|s| s.name).collect();
        assert_eq!(names, ["accel_y"]);
    }
}
