//! The one error type of the crate.
//!
//! Every fallible function returns [`Error`], which carries an [`ErrorKind`] (what class of
//! failure it is, stable across versions, mapped one-to-one onto the Python exception tree)
//! and a message that says what went wrong and, where there is something to do, what to do.

use std::fmt;

/// The class of an [`Error`]. New kinds may be added in later versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed something the codec cannot work with: an unknown dtype, a buffer
    /// whose length does not match the shape, impossible parameters.
    InvalidArgument,
    /// The bytes are not a valid frame: bad magic, truncated, inconsistent fields, a stream
    /// that does not decode. Untrusted input that fails any check ends here.
    CorruptFrame,
    /// A chunk or the header does not match its checksum: the frame was damaged in transit.
    ChecksumMismatch,
    /// The frame was written by a newer format version (or uses a stage) this build does not
    /// know.
    UnsupportedVersion,
    /// Decoding would exceed a caller-set resource limit (output bytes, dimensions, chunks).
    LimitExceeded,
    /// The frame decoded, but its values fail the caller's validation (non-finite values or
    /// magnitudes above `max_abs`).
    RejectedValue,
    /// The tensor holds NaN or an infinity, which the chosen lossy mode was told not to carry
    /// (a kind of invalid argument).
    NonFinite,
    /// A frame of a shared-basis session does not follow the state of the session decoding
    /// it: another session, a dropped, duplicated or reordered frame, or diverged state.
    /// Nothing was decoded and the session is unchanged; a resync frame restores it.
    SessionMismatch,
}

impl ErrorKind {
    /// A short stable name, used in messages and by the Python bindings.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::CorruptFrame => "corrupt frame",
            ErrorKind::ChecksumMismatch => "checksum mismatch",
            ErrorKind::UnsupportedVersion => "unsupported version",
            ErrorKind::LimitExceeded => "limit exceeded",
            ErrorKind::RejectedValue => "rejected value",
            ErrorKind::NonFinite => "non-finite value",
            ErrorKind::SessionMismatch => "session mismatch",
        }
    }
}

/// An error with a kind and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The input ended early: more bytes might make it valid (streaming decoders wait).
    truncated: bool,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            truncated: false,
        }
    }

    /// A [`ErrorKind::CorruptFrame`] error for input that ends before a field does.
    pub(crate) fn truncated(message: impl Into<String>) -> Self {
        Error {
            truncated: true,
            ..Error::corrupt(message)
        }
    }

    /// Whether the input ended before a field did, so that more bytes might make it valid.
    pub fn is_truncation(&self) -> bool {
        self.truncated
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::CorruptFrame, message)
    }

    pub fn limit(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::LimitExceeded, message)
    }

    /// A corrupt-frame error met inside chunk `index`'s payload, its message prefixed with
    /// the chunk (other kinds are returned as they are).
    pub(crate) fn in_chunk(self, index: u64) -> Self {
        if self.kind != ErrorKind::CorruptFrame {
            return self;
        }
        Error {
            message: format!("chunk {index}: {}", self.message),
            ..self
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns early with a [`ErrorKind::CorruptFrame`] error when `cond` is false.
macro_rules! ensure_frame {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::error::Error::corrupt(format!($($fmt)+)));
        }
    };
}
pub(crate) use ensure_frame;
