//! One HTTP/1.1 request head, checked from its raw bytes: the request line, every field line,
//! and the body framing the head declares. One pass, no allocation.
//!
//! Stricter than RFC 9112 requires of a server where the RFC lets a recipient choose, the way
//! an edge in front of an API should be: nothing that two parsers could read two ways gets
//! through (RFC 9112 §11.2, request smuggling).

use super::{HeadLimits, Reason};

/// How the request's body is delimited, as its head declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (neither `Content-Length` nor `Transfer-Encoding`, or `Content-Length: 0`).
    Empty,
    /// `Content-Length: n`, n > 0.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Where the head ends: the offset just past its blank line, once `bytes` holds it.
///
/// `bytes` starts at the head's first byte; `scanned` is how far an earlier call already
/// looked (so a head that arrives in pieces is scanned once). Returns `Ok(None)` while the
/// blank line has not arrived, with `scanned` moved on. A line feed without its carriage
/// return anywhere in the head is refused at once: no parser downstream of us may be left to
/// guess where a line ends.
pub fn find_end(bytes: &[u8], scanned: &mut usize) -> Result<Option<usize>, Reason> {
    let mut at = *scanned;
    while let Some(offset) = memchr::memchr(b'\n', &bytes[at..]) {
        let lf = at + offset;
        if lf == 0 || bytes[lf - 1] != b'\r' {
            return Err(Reason::BareLf);
        }
        // The blank line: CRLF right after the previous line's CRLF. Empty lines before the
        // request line (RFC 9112 §2.2) are skipped by `check`, not taken for the end.
        let line_start = lf - 1;
        if line_start >= 2
            && &bytes[line_start - 2..line_start] == b"\r\n"
            && !leading_empty(bytes, line_start)
        {
            *scanned = lf + 1;
            return Ok(Some(lf + 1));
        }
        at = lf + 1;
    }
    // A CR at the end is looked back at when its LF arrives.
    *scanned = bytes.len();
    Ok(None)
}

/// True when everything before `at` is empty lines (`\r\n` pairs).
fn leading_empty(bytes: &[u8], at: usize) -> bool {
    at.is_multiple_of(2) && bytes[..at].chunks(2).all(|pair| pair == b"\r\n")
}

/// Checks a complete head (`bytes` ends with its blank line) and says how its body is framed.
pub fn check(bytes: &[u8], limits: &HeadLimits) -> Result<BodyFraming, Reason> {
    let mut rest = bytes;
    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line.
    while let Some(after) = rest.strip_prefix(b"\r\n") {
        rest = after;
    }
    let (line, after) = split_line(rest)?;
    let version = request_line(line, limits)?;
    rest = after;

    let mut fields = 0usize;
    let mut length: Option<u64> = None;
    let mut encoding = Encoding::None;
    loop {
        let (line, after) = split_line(rest)?;
        rest = after;
        if line.is_empty() {
            break;
        }
        fields += 1;
        if fields > limits.max_headers {
            return Err(Reason::TooManyHeaders);
        }
        let (name, value) = field_line(line)?;
        if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(Reason::ContentLength);
            }
            length = Some(content_length(value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encoding = encoding.add(value)?;
        }
    }
    match (length, encoding) {
        (Some(_), Encoding::None) | (None, _) => {}
        (Some(_), _) => return Err(Reason::LengthAndEncoding),
    }
    match encoding {
        Encoding::None => Ok(match length {
            None | Some(0) => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
        }),
        // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing.
        Encoding::Chunked if version == Version::Http11 => Ok(BodyFraming::Chunked),
        Encoding::Chunked | Encoding::NotChunked => Err(Reason::TransferEncoding),
    }
}

/// The line at the start of `bytes` without its CRLF, and what follows it.
fn split_line(bytes: &[u8]) -> Result<(&[u8], &[u8]), Reason> {
    let lf = memchr::memchr(b'\n', bytes).ok_or(Reason::BareLf)?;
    match lf.checked_sub(1).map(|cr| (cr, bytes[cr])) {
        Some((cr, b'\r')) => Ok((&bytes[..cr], &bytes[lf + 1..])),
        _ => Err(Reason::BareLf),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Http10,
    Http11,
}

/// `method SP request-target SP HTTP/1.x`, single spaces, nothing else.
fn request_line(line: &[u8], limits: &HeadLimits) -> Result<Version, Reason> {
    let method_end = line.iter().position(|&b| !is_tchar(b)).ok_or(Reason::RequestLine)?;
    if method_end == 0 || line[method_end] != b' ' {
        return Err(Reason::RequestLine);
    }
    let rest = &line[method_end + 1..];
    let target_end = rest.iter().position(|&b| b == b' ').ok_or(Reason::RequestLine)?;
    let target = &rest[..target_end];
    if target.is_empty() {
        return Err(Reason::RequestLine);
    }
    if target.len() > limits.max_target {
        return Err(Reason::TargetTooLong);
    }
    // Visible ASCII only: no controls, no spaces, no raw bytes above 0x7E.
    if !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(Reason::Target);
    }
    match &rest[target_end + 1..] {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        _ => Err(Reason::RequestLine),
    }
}

/// `field-name ":" OWS field-value OWS`: the name and the value without its surrounding
/// whitespace.
fn field_line(line: &[u8]) -> Result<(&[u8], &[u8]), Reason> {
    // obs-fold (RFC 9112 §5.2): a continuation of the previous line. Refused, not unfolded.
    if let Some(b' ' | b'\t') = line.first() {
        return Err(Reason::ObsFold);
    }
    let colon = line.iter().position(|&b| !is_tchar(b)).ok_or(Reason::FieldName)?;
    match line[colon] {
        b':' if colon > 0 => {}
        // RFC 9112 §5.1: whitespace between the name and the colon MUST be refused with 400.
        b' ' | b'\t' => return Err(Reason::SpaceBeforeColon),
        _ => return Err(Reason::FieldName),
    }
    let value = &line[colon + 1..];
    // field-vchar / SP / HTAB; obs-text (0x80-0xFF) is let through as RFC 9110 §5.5 does.
    // Without a short cut, so the compiler checks several bytes at once.
    let control = value.iter().fold(false, |seen, &b| seen | ((b < 0x20) & (b != b'\t')) | (b == 0x7f));
    if control {
        return Err(Reason::ControlCharacter);
    }
    Ok((&line[..colon], value.trim_ascii()))
}

/// A `Content-Length` value: digits only, one value (no lists, even of equal values).
fn content_length(value: &[u8]) -> Result<u64, Reason> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(Reason::ContentLength);
    }
    Ok(value.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// The transfer codings seen so far, across every `Transfer-Encoding` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    None,
    /// Exactly one coding, `chunked`.
    Chunked,
    /// Anything else: another coding, chunked twice, chunked not last, an empty list.
    NotChunked,
}

impl Encoding {
    /// Adds one `Transfer-Encoding` line. Only a lone `chunked` is accepted: another coding
    /// before it would reach the upstream without its `Transfer-Encoding` (a hop-by-hop
    /// header), so its body would be read as something it is not.
    fn add(self, value: &[u8]) -> Result<Self, Reason> {
        let mut next = self;
        for coding in value.split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            if coding.is_empty() {
                continue;
            }
            next = match (next, coding.eq_ignore_ascii_case(b"chunked")) {
                (Self::None, true) => Self::Chunked,
                _ => Self::NotChunked,
            };
        }
        match next {
            Self::None => Err(Reason::TransferEncoding),
            other => Ok(other),
        }
    }
}

/// RFC 9110 §5.6.2 `tchar`, one table look-up a byte.
fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits { max_head: 32 * 1024, max_headers: 100, max_target: 8192 };

    fn checked(head: &str) -> Result<BodyFraming, Reason> {
        let bytes = head.as_bytes();
        let mut scanned = 0;
        match find_end(bytes, &mut scanned)? {
            Some(end) => {
                assert_eq!(end, bytes.len(), "the head ends where the test says: {head:?}");
                check(bytes, &LIMITS)
            }
            None => panic!("no end found in {head:?}"),
        }
    }

    #[test]
    fn plain_heads_pass_with_their_framing() {
        assert_eq!(checked("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(BodyFraming::Empty));
        assert_eq!(
            checked("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n"),
            Ok(BodyFraming::Length(12))
        );
        assert_eq!(
            checked("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \r\n\r\n"),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(checked("\r\nGET / HTTP/1.0\r\n\r\n"), Ok(BodyFraming::Empty));
        assert_eq!(checked("GET http://a.example/p?q HTTP/1.1\r\nX:\r\n\r\n"), Ok(BodyFraming::Empty));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let cl_te = "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let te_cl = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(checked(cl_te), Err(Reason::LengthAndEncoding));
        assert_eq!(checked(te_cl), Err(Reason::LengthAndEncoding));
        for te in ["gzip", "chunked, gzip", "gzip, chunked", "chunked, chunked", ",", "identity"] {
            let head = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(checked(&head), Err(Reason::TransferEncoding), "{te}");
        }
        let twice = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(checked(twice), Err(Reason::TransferEncoding));
        assert_eq!(
            checked("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(Reason::TransferEncoding)
        );
        for cl in [
            "5\r\nContent-Length: 6",
            "5\r\nContent-Length: 5",
            "5, 5",
            "-1",
            "+5",
            "0x10",
            "",
            "99999999999999999999",
        ] {
            let head = format!("POST / HTTP/1.1\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(checked(&head), Err(Reason::ContentLength), "{cl}");
        }
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert_eq!(checked("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), Err(Reason::ObsFold));
        assert_eq!(checked("GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n"), Err(Reason::SpaceBeforeColon));
        assert_eq!(checked("GET / HTTP/1.1\r\nA: b\0c\r\n\r\n"), Err(Reason::ControlCharacter));
        assert_eq!(checked("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"), Err(Reason::ControlCharacter));
        assert_eq!(checked("GET / HTTP/1.1\r\nA: b\x7fc\r\n\r\n"), Err(Reason::ControlCharacter));
        assert_eq!(checked("GET /a\x01b HTTP/1.1\r\n\r\n"), Err(Reason::Target));
        assert_eq!(checked("GET  / HTTP/1.1\r\n\r\n"), Err(Reason::RequestLine));
        assert_eq!(checked("GET / HTTP/2.0\r\n\r\n"), Err(Reason::RequestLine));
        assert_eq!(checked("GET / HTTP/1.1\r\n: b\r\n\r\n"), Err(Reason::FieldName));
        assert_eq!(checked("GET / HTTP/1.1\r\nA\r\n\r\n"), Err(Reason::FieldName));
        let mut scanned = 0;
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\nX: y\r\n\r\n", &mut scanned), Err(Reason::BareLf));
        let mut scanned = 0;
        assert_eq!(find_end(b"GET / HTTP/1.1\n\n", &mut scanned), Err(Reason::BareLf));
    }

    #[test]
    fn limits_are_kept() {
        let limits = HeadLimits { max_head: 1024, max_headers: 2, max_target: 8 };
        let three = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(check(three, &limits), Err(Reason::TooManyHeaders));
        assert_eq!(check(b"GET /123456789 HTTP/1.1\r\n\r\n", &limits), Err(Reason::TargetTooLong));
        assert_eq!(check(b"GET /1234567 HTTP/1.1\r\n\r\n", &limits), Ok(BodyFraming::Empty));
    }

    #[test]
    fn a_head_in_pieces_is_found_once_whole() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut scanned = 0;
        for end in 1..head.len() {
            assert_eq!(find_end(&head[..end], &mut scanned), Ok(None), "{end}");
        }
        assert_eq!(find_end(head, &mut scanned), Ok(Some(head.len())));
    }
}

/// Properties over generated heads: the checker never panics, takes every sound head with the
/// framing it declares (and so does httparse, hyper's parser), and refuses every head
/// mutated in one of the ways a smuggling attempt uses.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    const LIMITS: HeadLimits = HeadLimits { max_head: 64 * 1024, max_headers: 100, max_target: 8192 };

    /// A sound head, line by line (without line ends), and the framing it declares.
    #[derive(Debug, Clone)]
    struct Head {
        lines: Vec<Vec<u8>>,
        framing: BodyFraming,
    }

    impl Head {
        fn bytes(&self) -> Vec<u8> {
            let mut bytes = Vec::new();
            for line in &self.lines {
                bytes.extend_from_slice(line);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"\r\n");
            bytes
        }
    }

    fn checked(bytes: &[u8]) -> Result<BodyFraming, Reason> {
        let mut scanned = 0;
        match find_end(bytes, &mut scanned)? {
            Some(end) if end == bytes.len() => check(bytes, &LIMITS),
            // The blank line came early (a mutation made one): what follows is not this head.
            Some(_) => Err(Reason::RequestLine),
            None => Err(Reason::BareLf),
        }
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
    }

    fn field() -> impl Strategy<Value = (String, String)> {
        // `x-` keeps generated names off the framing fields, which are added on purpose.
        (token(), "[ \t]?[!-~]([ \t!-~]{0,30}[!-~])?[ \t]?")
            .prop_map(|(name, value)| (format!("x-{name}"), value))
    }

    prop_compose! {
        fn head()(
            method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "X-CUSTOM"]),
            target in "(/[!-~]{0,40})|(http://[a-z]{1,10}\\.test(:[0-9]{1,4})?/[!-~]{0,20})|\\*",
            http10 in any::<bool>(),
            fields in prop::collection::vec(field(), 0..20),
            framing in 0u8..3,
            length in 0u64..1_000_000,
            at in any::<prop::sample::Index>(),
        ) -> Head {
            let mut lines = vec![format!("{method} {target} HTTP/1.{}", if http10 { 0 } else { 1 }).into_bytes()];
            lines.extend(fields.iter().map(|(n, v)| format!("{n}:{v}").into_bytes()));
            let (line, framing) = match framing {
                0 => (None, BodyFraming::Empty),
                1 => (
                    Some(format!("Content-Length: {length}")),
                    if length == 0 { BodyFraming::Empty } else { BodyFraming::Length(length) },
                ),
                _ if http10 => (None, BodyFraming::Empty),
                _ => (Some("Transfer-Encoding: chunked".to_owned()), BodyFraming::Chunked),
            };
            if let Some(line) = line {
                lines.insert(1 + at.index(lines.len()), line.into_bytes());
            }
            Head { lines, framing }
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut scanned = 0;
            if let Ok(Some(end)) = find_end(&bytes, &mut scanned) {
                let _ = check(&bytes[..end], &LIMITS);
            }
            let _ = check(&bytes, &LIMITS);
            let _ = super::super::chunked::Chunked::new().advance(&bytes);
        }

        #[test]
        fn never_panics_on_near_heads(head in head(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = head.bytes();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let _ = checked(&bytes);
        }

        #[test]
        fn every_sound_head_passes_with_its_framing(head in head()) {
            let bytes = head.bytes();
            prop_assert_eq!(checked(&bytes), Ok(head.framing));
            // What the checker passes, hyper's parser takes whole.
            let mut fields = [httparse::EMPTY_HEADER; 128];
            let mut request = httparse::Request::new(&mut fields);
            prop_assert!(matches!(request.parse(&bytes), Ok(httparse::Status::Complete(n)) if n == bytes.len()));
        }

        #[test]
        fn a_head_arriving_in_pieces_ends_where_it_ends(head in head(), piece in 1usize..64) {
            let bytes = head.bytes();
            let mut scanned = 0;
            let mut end = None;
            for upto in (piece..bytes.len()).step_by(piece).chain([bytes.len()]) {
                end = find_end(&bytes[..upto], &mut scanned).expect("no bare LF");
                if end.is_some() {
                    break;
                }
            }
            prop_assert_eq!(end, Some(bytes.len()));
        }

        #[test]
        fn a_bare_lf_anywhere_is_refused(head in head(), at in any::<prop::sample::Index>()) {
            let mut bytes = head.bytes();
            let crs: Vec<usize> = bytes.iter().enumerate().filter(|(_, b)| **b == b'\r').map(|(i, _)| i).collect();
            bytes.remove(crs[at.index(crs.len())]);
            prop_assert!(checked(&bytes).is_err());
        }

        #[test]
        fn an_obs_fold_is_refused(head in head(), at in any::<prop::sample::Index>(), tab in any::<bool>()) {
            let mut head = head;
            let line = 1 + at.index(head.lines.len());
            let fold = if tab { b"\tfolded".to_vec() } else { b" folded".to_vec() };
            head.lines.insert(line, fold);
            prop_assert_eq!(checked(&head.bytes()), Err(Reason::ObsFold));
        }

        #[test]
        fn whitespace_before_a_colon_is_refused(head in head(), at in any::<prop::sample::Index>(), tab in any::<bool>()) {
            let mut head = head;
            prop_assume!(head.lines.len() > 1);
            let fields = head.lines.len() - 1;
            let line = &mut head.lines[1 + at.index(fields)];
            let colon = line.iter().position(|&b| b == b':').expect("a field line");
            line.insert(colon, if tab { b'\t' } else { b' ' });
            prop_assert_eq!(checked(&head.bytes()), Err(Reason::SpaceBeforeColon));
        }

        #[test]
        fn a_control_character_in_a_value_is_refused(
            head in head(),
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select((0u8..0x20).filter(|b| *b != b'\t').chain([0x7f]).collect::<Vec<u8>>()),
        ) {
            let mut head = head;
            prop_assume!(head.lines.len() > 1);
            let fields = head.lines.len() - 1;
            let line = &mut head.lines[1 + at.index(fields)];
            let colon = line.iter().position(|&b| b == b':').expect("a field line");
            line.insert(colon + 1, byte);
            prop_assert!(checked(&head.bytes()).is_err());
        }

        #[test]
        fn a_control_character_in_the_target_is_refused(head in head(), byte in prop::sample::select((0u8..0x20).chain([0x7f]).collect::<Vec<u8>>())) {
            let mut head = head;
            let space = head.lines[0].iter().position(|&b| b == b' ').expect("a request line");
            head.lines[0].insert(space + 2, byte);
            prop_assert!(checked(&head.bytes()).is_err());
        }

        #[test]
        fn conflicting_framing_is_refused(
            head in head(),
            extra in prop::sample::select(vec![
                "Content-Length: 7",
                "Content-Length: 1x",
                "Content-Length: 1, 1",
                "Transfer-Encoding: chunked",
                "Transfer-Encoding: gzip",
                "Transfer-Encoding: chunked, identity",
            ]),
            at in any::<prop::sample::Index>(),
        ) {
            let mut head = head;
            let valid_alone = matches!(extra, "Content-Length: 7" | "Transfer-Encoding: chunked");
            // A lone valid framing line on a head without one is sound, not a mutation.
            prop_assume!(!(valid_alone && head.framing == BodyFraming::Empty && !head.lines.iter().any(|l| l.starts_with(b"Content-Length"))));
            head.lines.insert(1 + at.index(head.lines.len()), extra.as_bytes().to_vec());
            prop_assert!(checked(&head.bytes()).is_err());
        }
    }
}
