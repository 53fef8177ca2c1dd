//! Text out of an upload: plain text and Markdown as they are (UTF-8), PDF through `lopdf`.

/// The formats `POST /api/materials` accepts, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain`.
    Text,
    /// `text/markdown`.
    Markdown,
    /// `application/pdf`.
    Pdf,
}

/// The accepted content types, for error messages.
pub const ACCEPTED: &str = "text/plain, text/markdown, application/pdf";

impl Format {
    /// The format of a `Content-Type` value (parameters such as `charset` ignored).
    pub fn from_content_type(value: &str) -> Option<Self> {
        let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "text/plain" => Some(Self::Text),
            "text/markdown" | "text/x-markdown" => Some(Self::Markdown),
            "application/pdf" => Some(Self::Pdf),
            _ => None,
        }
    }

    /// The canonical content type, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text/plain",
            Self::Markdown => "text/markdown",
            Self::Pdf => "application/pdf",
        }
    }
}

/// Why no text could be extracted.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// A text upload is not UTF-8.
    #[error("text is not valid UTF-8")]
    NotUtf8,
    /// The PDF could not be parsed.
    #[error("unreadable PDF: {0}")]
    Pdf(#[source] lopdf::Error),
    /// Nothing but whitespace.
    #[error("no text in the upload")]
    Empty,
    /// A PDF stream or page decompresses past [`MAX_DECOMPRESSED`] (a decompression bomb).
    #[error("a PDF stream decompresses to more than {limit} bytes")]
    Decompressed {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A PDF with more pages than [`MAX_PAGES`].
    #[error("the PDF has {pages} pages, more than {limit}")]
    TooManyPages {
        /// Pages in the document.
        pages: usize,
        /// The limit.
        limit: usize,
    },
}

impl ExtractError {
    /// Whether the upload is refused for its size (413) rather than its content (422).
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::Decompressed { .. } | Self::TooManyPages { .. })
    }
}

/// Most bytes one PDF stream (while loading) or one page's content (while extracting) may
/// decompress to: a few hundred pages of dense text fit; a small crafted file cannot inflate
/// to gigabytes.
pub const MAX_DECOMPRESSED: usize = 16 * 1024 * 1024;
/// Most pages read from one PDF.
pub const MAX_PAGES: usize = 1_000;

fn pdf_error(error: lopdf::Error) -> ExtractError {
    match error {
        lopdf::Error::Decompress(lopdf::DecompressError::MemoryLimitExceeded { .. }) => {
            ExtractError::Decompressed { limit: MAX_DECOMPRESSED }
        }
        other => ExtractError::Pdf(other),
    }
}

/// The text of `body` in `format`, with NUL characters removed (PostgreSQL's TEXT refuses them).
pub fn extract(format: Format, body: &[u8]) -> Result<String, ExtractError> {
    let text = match format {
        Format::Text | Format::Markdown => {
            std::str::from_utf8(body).map_err(|_| ExtractError::NotUtf8)?.to_owned()
        }
        Format::Pdf => {
            let options = lopdf::LoadOptions::with_max_decompressed_size(MAX_DECOMPRESSED);
            let document = lopdf::Document::load_mem_with_options(body, options).map_err(pdf_error)?;
            let pages: Vec<u32> = document.get_pages().keys().copied().collect();
            if pages.len() > MAX_PAGES {
                return Err(ExtractError::TooManyPages { pages: pages.len(), limit: MAX_PAGES });
            }
            document.extract_text_with_limit(&pages, MAX_DECOMPRESSED).map_err(pdf_error)?
        }
    };
    let text = text.replace('\0', "");
    if text.trim().is_empty() {
        return Err(ExtractError::Empty);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_matched_by_essence() {
        assert_eq!(Format::from_content_type("text/plain; charset=utf-8"), Some(Format::Text));
        assert_eq!(Format::from_content_type("Application/PDF"), Some(Format::Pdf));
        assert_eq!(Format::from_content_type("image/png"), None);
    }

    #[test]
    fn garbage_is_not_a_pdf() {
        assert!(matches!(extract(Format::Pdf, b"not a pdf"), Err(ExtractError::Pdf(_))));
        assert!(matches!(extract(Format::Text, b"  \n"), Err(ExtractError::Empty)));
        assert!(matches!(extract(Format::Text, &[0xff, 0xfe]), Err(ExtractError::NotUtf8)));
    }
}
