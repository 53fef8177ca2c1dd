//! Why the h2 library ended a client's HTTP/2 connection: the limits of `[limits]` it
//! enforces itself (rapid reset, CONTINUATION floods, the header list size), read back from
//! the error the connection ends with, so that they are counted and logged like the HTTP/1
//! refusals.
//!
//! h2 ends such a connection with a `GOAWAY` it sends itself (a *library* error). Which bound
//! was passed it writes only in that `GOAWAY`'s debug data (`too_many_resets`,
//! `too_many_continuations`, `too_many_internal_resets`, `too_many_data_frames`,
//! `header_list_way_too_large`, which the client sees), and the error the connection ends with
//! keeps the code without the debug data; so the floods share one kind, told apart by code.
//! A connection the client closed, or one that ended in an I/O error, is none of these.

/// A client's HTTP/2 connection ended by h2 for what the client sent, by `GOAWAY` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum H2Abuse {
    /// `GOAWAY ENHANCE_YOUR_CALM`: more than `limits.h2_max_pending_accept_reset_streams`
    /// streams opened and reset before the server accepted them (rapid reset,
    /// CVE-2023-44487); more CONTINUATION frames in one header block than the header list
    /// size can need (CVE-2024-27316); more than `limits.h2_max_local_error_reset_streams`
    /// streams reset for the client's errors; a flood of small DATA frames.
    Flood,
    /// `GOAWAY COMPRESSION_ERROR`: a header block grown past the header list size while it
    /// was still being decoded.
    HeaderList,
    /// Any other connection error h2 found in what the client sent (`PROTOCOL_ERROR`,
    /// `FRAME_SIZE_ERROR`, `FLOW_CONTROL_ERROR`, …).
    ConnectionError,
}

impl H2Abuse {
    /// Every kind, for metrics that exist from zero.
    pub const ALL: [Self; 3] = [Self::Flood, Self::HeaderList, Self::ConnectionError];

    /// The metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flood => "h2_flood",
            Self::HeaderList => "h2_header_list",
            Self::ConnectionError => "h2_connection_error",
        }
    }

    /// The kind of a connection's error (or of any error in its `source` chain), when it is
    /// a `GOAWAY` h2 sent for what the client did; with the `GOAWAY`'s error code.
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Option<(Self, h2::Reason)> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(h2) = error.downcast_ref::<h2::Error>() {
                return Self::of_h2(h2);
            }
            next = error.source();
        }
        None
    }

    fn of_h2(error: &h2::Error) -> Option<(Self, h2::Reason)> {
        if !(error.is_go_away() && error.is_library()) {
            return None;
        }
        let reason = error.reason()?;
        Self::from_goaway(reason).map(|kind| (kind, reason))
    }

    /// The kind of a `GOAWAY` code; `None` for `NO_ERROR` (a graceful end).
    fn from_goaway(reason: h2::Reason) -> Option<Self> {
        match reason {
            h2::Reason::NO_ERROR => None,
            h2::Reason::ENHANCE_YOUR_CALM => Some(Self::Flood),
            h2::Reason::COMPRESSION_ERROR => Some(Self::HeaderList),
            _ => Some(Self::ConnectionError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_goaway_code_names_the_kind() {
        assert_eq!(H2Abuse::from_goaway(h2::Reason::ENHANCE_YOUR_CALM), Some(H2Abuse::Flood));
        assert_eq!(H2Abuse::from_goaway(h2::Reason::COMPRESSION_ERROR), Some(H2Abuse::HeaderList));
        assert_eq!(H2Abuse::from_goaway(h2::Reason::PROTOCOL_ERROR), Some(H2Abuse::ConnectionError));
        assert_eq!(H2Abuse::from_goaway(h2::Reason::NO_ERROR), None);
    }

    #[test]
    fn errors_the_client_caused_are_told_from_the_others() {
        // Outside h2, an error can be built only from a bare reason: not a GOAWAY h2 sent
        // for the client's frames.
        let bare: h2::Error = h2::Reason::ENHANCE_YOUR_CALM.into();
        assert_eq!(H2Abuse::of(&bare), None);
        assert_eq!(H2Abuse::of(&std::io::Error::other("not h2")), None);
    }
}
