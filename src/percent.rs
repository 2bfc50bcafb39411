//! Percent-decoding (RFC 3986 §2.1), one implementation for every reader of URL text in
//! keygate, on the `percent-encoding` crate. The readers differ only in what they do with
//! the result:
//!
//! - [`decode`] and [`decode_lossy`]: every valid `%XX` decoded, an invalid escape (`%zz`,
//!   a `%` near the end) kept as it is; for matching a path as a server would route it.
//! - [`decode_plus`]: the same, and a raw `+` read as a space, as form bodies and some
//!   servers read it; for the secret scan, so a secret is found whichever way the tool
//!   reads the text.
//! - [`escapes`]: the text cut at its escapes, an invalid escape an error; for the path
//!   canonicalizer, which must tell a decoded byte from the same byte sent plainly and
//!   refuses what it cannot read one way.

use std::borrow::Cow;

/// Every valid `%XX` decoded; invalid escapes are kept as they are.
pub fn decode(s: &[u8]) -> Cow<'_, [u8]> {
    // Most text has no escape: found at memchr's speed, and nothing else done.
    if memchr::memchr(b'%', s).is_none() {
        return Cow::Borrowed(s);
    }
    percent_encoding::percent_decode(s).into()
}

/// [`decode`] of text, with invalid UTF-8 in the result replaced by U+FFFD.
pub fn decode_lossy(s: &str) -> Cow<'_, str> {
    // Without an escape the text is its own decoding, and already UTF-8.
    if memchr::memchr(b'%', s.as_bytes()).is_none() {
        return Cow::Borrowed(s);
    }
    percent_encoding::percent_decode_str(s).decode_utf8_lossy()
}

/// [`decode`], with a raw `+` read as a space (an escaped `%2B` stays a `+`).
pub fn decode_plus(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'+') {
        return decode(s);
    }
    let spaced: Vec<u8> = s
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    match decode(&spaced) {
        Cow::Borrowed(_) => Cow::Owned(spaced),
        Cow::Owned(d) => Cow::Owned(d),
    }
}

/// A run of text between escapes, or one escape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Bytes sent as they are (no `%` among them).
    Plain(&'a [u8]),
    /// The byte a `%XX` escape stands for.
    Escaped(u8),
}

/// A `%` not followed by two hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// The pieces of `s`, in order; after a malformed escape, an error and nothing more.
pub fn escapes(s: &[u8]) -> Escapes<'_> {
    Escapes { rest: s }
}

/// The iterator of [`escapes`].
pub struct Escapes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Escapes<'a> {
    type Item = Result<Piece<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let plain = memchr::memchr(b'%', self.rest).unwrap_or(self.rest.len());
        if plain > 0 {
            let (run, rest) = self.rest.split_at(plain);
            self.rest = rest;
            return Some(Ok(Piece::Plain(run)));
        }
        // The crate decodes a valid escape to one byte and keeps an invalid one as its
        // three bytes.
        let byte = self.rest.get(..3).and_then(|esc| {
            let mut d = percent_encoding::percent_decode(esc);
            match (d.next(), d.next()) {
                (Some(b), None) => Some(b),
                _ => None,
            }
        });
        match byte {
            Some(b) => {
                self.rest = &self.rest[3..];
                Some(Ok(Piece::Escaped(b)))
            }
            None => {
                self.rest = &[];
                Some(Err(Malformed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_decoding() {
        assert_eq!(&*decode(b"a%41b+c%2f"), b"aAb+c/");
        assert_eq!(&*decode(b"100%"), b"100%");
        assert_eq!(&*decode(b"%4"), b"%4");
        assert_eq!(&*decode(b"%zz%"), b"%zz%");
        assert!(matches!(decode(b"plain"), Cow::Borrowed(_)));
        assert_eq!(decode_lossy("%e2%82%AC%ff"), "€\u{fffd}");
        assert!(matches!(decode_lossy("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn plus_as_space() {
        assert_eq!(&*decode_plus(b"a+b%2B%20c"), b"a b+ c");
        assert_eq!(&*decode_plus(b"a+b"), b"a b");
        assert!(matches!(decode_plus(b"ab"), Cow::Borrowed(_)));
    }

    #[test]
    fn pieces() {
        fn all(s: &str) -> Vec<Result<Piece<'_>, Malformed>> {
            escapes(s.as_bytes()).collect()
        }
        assert_eq!(
            all("/a%2Fb%e2"),
            [
                Ok(Piece::Plain(b"/a")),
                Ok(Piece::Escaped(b'/')),
                Ok(Piece::Plain(b"b")),
                Ok(Piece::Escaped(0xe2)),
            ]
        );
        assert_eq!(all(""), []);
        assert_eq!(
            all("%41%42"),
            [Ok(Piece::Escaped(b'A')), Ok(Piece::Escaped(b'B'))]
        );
        for bad in ["/a%zz/b", "/a%4", "/a%", "%g0", "%0g"] {
            let p = all(bad);
            assert_eq!(p.last(), Some(&Err(Malformed)), "{bad}");
            assert_eq!(p.iter().filter(|p| p.is_err()).count(), 1, "{bad}");
        }
    }
}
