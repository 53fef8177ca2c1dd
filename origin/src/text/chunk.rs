//! Splitting text into overlapping chunks on word boundaries, the unit of retrieval.

/// Target chunk length, in characters.
pub const CHUNK_CHARS: usize = 800;
/// Characters repeated from the end of one chunk at the start of the next, so that a sentence
/// cut by a boundary is still found whole in one of them.
pub const OVERLAP_CHARS: usize = 120;

/// Splits `text` into chunks of about [`CHUNK_CHARS`] characters, cut at whitespace, each
/// starting [`OVERLAP_CHARS`] before the previous one ended. Whitespace runs collapse to one
/// space.
pub fn chunks(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::new();
    let mut start = 0;
    while start < words.len() {
        let mut end = start;
        let mut len = 0;
        while end < words.len() && (end == start || len + 1 + words[end].len() <= CHUNK_CHARS) {
            len += words[end].len() + usize::from(end > start);
            end += 1;
        }
        out.push(words[start..end].join(" "));
        if end == words.len() {
            break;
        }
        // Step back over whole words worth about OVERLAP_CHARS, but always move forward.
        let mut back = end;
        let mut overlap = 0;
        while back > start + 1 && overlap + words[back - 1].len() < OVERLAP_CHARS {
            overlap += words[back - 1].len() + 1;
            back -= 1;
        }
        start = back;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_chunk() {
        assert_eq!(chunks("hello   world\n"), vec!["hello world"]);
        assert!(chunks(" \n ").is_empty());
    }

    #[test]
    fn long_text_is_cut_with_overlap() {
        let text: String = (0..1000).map(|i| format!("word{i} ")).collect();
        let parts = chunks(&text);
        assert!(parts.len() > 5);
        assert!(parts.iter().all(|c| c.len() <= CHUNK_CHARS));
        let last_of_first = parts[0].split(' ').next_back().unwrap_or_default();
        assert!(parts[1].contains(last_of_first), "chunks overlap");
        assert!(parts.last().is_some_and(|c| c.ends_with("word999")));
    }

    #[test]
    fn a_giant_word_still_advances() {
        let text = format!("{} tail", "x".repeat(2000));
        assert_eq!(chunks(&text).len(), 2);
    }
}
