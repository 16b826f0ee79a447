//! Streaming secret masking.
//!
//! A [`Masker`] is built from the build's secret values (resolved parameters, secrets and `--secret`
//! values) and sits between a command's output pipes and the [`Output`](crate::events::EventKind::Output)
//! events: every occurrence of a secret becomes `***`, even when the secret arrives split over
//! several reads, and no byte of a secret is ever emitted.
//!
//! # Semantics
//!
//! The output is exactly what a one-shot, non-overlapping, *leftmost-longest* replacement over the
//! whole stream would produce: scanning left to right, the match that starts first wins, and among
//! matches starting at the same byte the longest secret wins (so with the secrets `abc` and `abcdef`,
//! `abcdef` becomes `***`, not `***def`).
//!
//! To decide that without seeing the future, the masker holds back the shortest tail of what it has
//! seen that could still be the beginning of a secret (a proper prefix of one), and nothing else.
//! [`Masker::finish`] flushes that tail at the end of the stream.
//!
//! # Performance
//!
//! Matching uses an Aho-Corasick automaton (with its SIMD prefilters), so the cost per byte does not
//! grow with the number of secrets. With no secrets, or when a chunk neither contains a secret nor
//! ends with the start of one, [`Masker::push`] returns the input slice itself without copying.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, Input, MatchKind};

/// What a secret is replaced with.
pub const MASK: &[u8] = b"***";

/// Why a [`Masker`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaskError {
    /// The secrets are too many or too large for the matching automaton.
    #[error("cannot build the secret matcher")]
    Build(#[source] aho_corasick::BuildError),
}

/// A streaming secret masker for one output stream.
///
/// Use one `Masker` per stream (stdout and stderr each hold back their own tail); build the second
/// one with [`Masker::clone`], which is cheap.
///
/// ```
/// use buildagent_runner::mask::Masker;
///
/// let mut m = Masker::new(["hunter2"]).unwrap();
/// let mut out = Vec::new();
/// out.extend_from_slice(&m.push(b"password: hun"));
/// out.extend_from_slice(&m.push(b"ter2\n"));
/// out.extend_from_slice(&m.finish());
/// assert_eq!(out, b"password: ***\n");
/// ```
#[derive(Clone, Debug)]
pub struct Masker {
    matcher: Option<Matcher>,
    held: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Matcher {
    automaton: AhoCorasick,
    secrets: Vec<Vec<u8>>,
    /// `first_byte[b]` is true when some secret starts with byte `b`.
    first_byte: [bool; 256],
    max_len: usize,
}

impl Masker {
    /// Builds a masker for `secrets`. Empty values are ignored and duplicates are merged; values
    /// may contain any bytes, newlines included.
    pub fn new<I, S>(secrets: I) -> Result<Masker, MaskError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut list: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.as_ref().to_vec())
            .filter(|s| !s.is_empty())
            .collect();
        list.sort();
        list.dedup();
        if list.is_empty() {
            return Ok(Masker::none());
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&list)
            .map_err(MaskError::Build)?;
        let mut first_byte = [false; 256];
        for s in &list {
            first_byte[usize::from(s[0])] = true;
        }
        let max_len = list.iter().map(Vec::len).max().unwrap_or(0);
        Ok(Masker {
            matcher: Some(Matcher {
                automaton,
                secrets: list,
                first_byte,
                max_len,
            }),
            held: Vec::new(),
        })
    }

    /// A masker with no secrets: it passes everything through unchanged.
    pub fn none() -> Masker {
        Masker {
            matcher: None,
            held: Vec::new(),
        }
    }

    /// Whether this masker has no secrets to mask.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// How many bytes are currently held back (always less than the longest secret).
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Masks the next chunk of the stream and returns what can be emitted now.
    ///
    /// The result borrows `chunk` when nothing had to change (the common case), and is owned
    /// otherwise. Bytes that could still turn out to be the start of a secret are kept back for the
    /// next call or for [`finish`](Masker::finish).
    pub fn push<'a>(&mut self, chunk: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(m) = &self.matcher else {
            return Cow::Borrowed(chunk);
        };
        if self.held.is_empty()
            && !m.automaton.is_match(chunk)
            && m.tail_start(chunk, 0) == chunk.len()
        {
            return Cow::Borrowed(chunk);
        }
        let mut out = Vec::with_capacity(chunk.len() + self.held.len());
        self.push_into(chunk, &mut out);
        Cow::Owned(out)
    }

    /// Like [`push`](Masker::push), appending the emitted bytes to `out`.
    pub fn push_into(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(m) = &self.matcher else {
            out.extend_from_slice(chunk);
            return;
        };
        if self.held.is_empty() {
            let consumed = m.mask(chunk, false, out);
            self.held.extend_from_slice(&chunk[consumed..]);
        } else {
            self.held.extend_from_slice(chunk);
            let consumed = m.mask(&self.held, false, out);
            self.held.drain(..consumed);
        }
    }

    /// Ends the stream: masks and returns the held-back tail. The masker is then ready for a new
    /// stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        match &self.matcher {
            None => held,
            Some(m) => {
                let mut out = Vec::with_capacity(held.len());
                m.mask(&held, true, &mut out);
                out
            }
        }
    }

    /// Masks a complete value in one go (for example an exported variable or a report field).
    pub fn mask_all(&self, text: &[u8]) -> Vec<u8> {
        match &self.matcher {
            None => text.to_vec(),
            Some(m) => {
                let mut out = Vec::with_capacity(text.len());
                m.mask(text, true, &mut out);
                out
            }
        }
    }

    /// [`mask_all`](Masker::mask_all) for text.
    pub fn mask_str(&self, text: &str) -> String {
        match String::from_utf8(self.mask_all(text.as_bytes())) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

impl Default for Masker {
    fn default() -> Self {
        Masker::none()
    }
}

impl Matcher {
    /// Appends the masked form of `buf` to `out` and returns how many bytes of `buf` it consumed;
    /// the rest (a possible secret prefix) must be held back. With `last`, everything is consumed.
    fn mask(&self, buf: &[u8], last: bool, out: &mut Vec<u8>) -> usize {
        let end = buf.len();
        let undecided_from = |from: usize| {
            if last {
                end
            } else {
                self.tail_start(buf, from)
            }
        };
        let mut pos = 0;
        let mut tail = undecided_from(0);
        loop {
            let found = self
                .automaton
                .find(Input::new(buf).span(pos..end))
                .filter(|m| m.start() < tail);
            let Some(m) = found else {
                out.extend_from_slice(&buf[pos..tail]);
                return tail;
            };
            // A match that starts before the undecided tail is final: no earlier start can still
            // grow into a match (it would be in the tail), and no longer secret can start here
            // (this position would be in the tail too).
            out.extend_from_slice(&buf[pos..m.start()]);
            out.extend_from_slice(MASK);
            pos = m.end();
            if tail < pos {
                tail = undecided_from(pos);
            }
        }
    }

    /// The smallest `p >= from` such that `buf[p..]` is a proper prefix of some secret, or
    /// `buf.len()` when there is none.
    fn tail_start(&self, buf: &[u8], from: usize) -> usize {
        let end = buf.len();
        let start = from.max(end.saturating_sub(self.max_len - 1));
        for p in start..end {
            if !self.first_byte[usize::from(buf[p])] {
                continue;
            }
            let rest = &buf[p..];
            if self
                .secrets
                .iter()
                .any(|s| s.len() > rest.len() && s.starts_with(rest))
            {
                return p;
            }
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: one-shot leftmost-longest replacement, written the slow and obvious way.
    fn reference(text: &[u8], secrets: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < text.len() {
            let best = secrets
                .iter()
                .filter(|k| !k.is_empty() && text[pos..].starts_with(k))
                .map(|k| k.len())
                .max();
            match best {
                Some(len) => {
                    out.extend_from_slice(MASK);
                    pos += len;
                }
                None => {
                    out.push(text[pos]);
                    pos += 1;
                }
            }
        }
        out
    }

    /// Feeds `chunks` and checks that every intermediate output is a prefix of the expected result
    /// (so nothing was emitted too early) and that the whole equals it.
    fn stream(secrets: &[&[u8]], chunks: &[&[u8]]) -> Vec<u8> {
        let text: Vec<u8> = chunks.concat();
        let expected = reference(&text, secrets);
        let mut m = Masker::new(secrets.iter().copied()).unwrap();
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&m.push(c));
            assert!(
                expected.starts_with(&out),
                "emitted too early: {:?} is not a prefix of {:?} (chunks {:?})",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&expected),
                chunks
                    .iter()
                    .map(|c| String::from_utf8_lossy(c))
                    .collect::<Vec<_>>()
            );
        }
        out.extend_from_slice(&m.finish());
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected)
        );
        out
    }

    #[test]
    fn secret_split_across_two_reads() {
        let out = stream(&[b"s3cr3t"], &[b"token=s3c", b"r3t done"]);
        assert_eq!(out, b"token=*** done");
    }

    #[test]
    fn secret_split_across_three_reads() {
        let out = stream(&[b"s3cr3t"], &[b"a s3", b"cr", b"3t b"]);
        assert_eq!(out, b"a *** b");
    }

    #[test]
    fn secret_at_chunk_ends() {
        assert_eq!(stream(&[b"XYZ"], &[b"XYZ", b"XYZ"]), b"******");
        assert_eq!(stream(&[b"XYZ"], &[b"abXYZ", b"", b"XYZcd"]), b"ab******cd");
        assert_eq!(stream(&[b"XYZ"], &[b"ab", b"XYZ"]), b"ab***");
    }

    #[test]
    fn held_tail_is_released_when_it_stops_matching() {
        let mut m = Masker::new(["secret"]).unwrap();
        assert_eq!(&*m.push(b"the sec"), b"the ");
        assert_eq!(m.held_len(), 3);
        assert_eq!(&*m.push(b"ond"), b"second");
        assert_eq!(m.held_len(), 0);
        assert_eq!(m.finish(), b"");
    }

    #[test]
    fn finish_flushes_a_partial_prefix() {
        let mut m = Masker::new(["secret"]).unwrap();
        assert_eq!(&*m.push(b"the secr"), b"the ");
        assert_eq!(m.finish(), b"secr");
    }

    #[test]
    fn multi_line_secret() {
        let key = b"-----BEGIN KEY-----\nAAAA\nBBBB\n-----END KEY-----\n";
        let text = [b"before\n".as_slice(), key, b"after\n"].concat();
        for cut in 0..=text.len() {
            let out = stream(&[key], &[&text[..cut], &text[cut..]]);
            assert_eq!(out, b"before\n***after\n");
        }
    }

    #[test]
    fn overlapping_secrets_prefer_the_longest() {
        assert_eq!(stream(&[b"abc", b"abcdef"], &[b"xabcdefx"]), b"x***x");
        assert_eq!(stream(&[b"abc", b"abcdef"], &[b"xabc", b"def"]), b"x***");
        assert_eq!(stream(&[b"abc", b"abcdef"], &[b"xabc", b"dex"]), b"x***dex");
        // The leftmost start wins over a longer match that starts later.
        assert_eq!(stream(&[b"abc", b"bcdefg"], &[b"abcdefg"]), b"***defg");
        // A long secret that could still complete keeps a shorter inner one undecided.
        assert_eq!(
            stream(&[b"abcdefg", b"cd"], &[b"ab", b"cd", b"efg!"]),
            b"***!"
        );
        assert_eq!(
            stream(&[b"abcdefg", b"cd"], &[b"ab", b"cd", b"e!"]),
            b"ab***e!"
        );
    }

    #[test]
    fn no_secrets_borrows_the_input() {
        let mut m = Masker::new(Vec::<String>::new()).unwrap();
        assert!(m.is_empty());
        let chunk = b"nothing to hide";
        assert!(matches!(m.push(chunk), Cow::Borrowed(_)));
        assert_eq!(m.finish(), b"");
        // Empty values are ignored too.
        assert!(Masker::new([""]).unwrap().is_empty());
    }

    #[test]
    fn clean_chunk_is_borrowed_even_with_secrets() {
        let mut m = Masker::new(["hunter2"]).unwrap();
        assert!(matches!(m.push(b"plain output\n"), Cow::Borrowed(_)));
        assert!(matches!(m.push(b"a hunter2 b"), Cow::Owned(_)));
    }

    #[test]
    fn mask_all_and_mask_str() {
        let m = Masker::new(["pw", "pw2"]).unwrap();
        assert_eq!(m.mask_str("pw pw2 pwx"), "*** *** ***x");
        assert_eq!(m.mask_all(b"p"), b"p");
    }

    /// A small deterministic generator, so the randomized test needs no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn text(&mut self, len: usize) -> Vec<u8> {
            // A tiny alphabet makes partial and overlapping matches frequent.
            (0..len).map(|_| b"ab\nc"[self.below(4)]).collect()
        }
    }

    #[test]
    fn randomized_every_split_position() {
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        for _ in 0..300 {
            let n = 1 + rng.below(3);
            let secrets: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let len = 1 + rng.below(5);
                    rng.text(len)
                })
                .collect();
            let secret_refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
            let len = rng.below(40);
            let text = rng.text(len);
            // Every single split point.
            for cut in 0..=text.len() {
                stream(&secret_refs, &[&text[..cut], &text[cut..]]);
            }
            // Every pair of split points for short texts, random multi-way splits otherwise.
            if text.len() <= 16 {
                for a in 0..=text.len() {
                    for b in a..=text.len() {
                        stream(&secret_refs, &[&text[..a], &text[a..b], &text[b..]]);
                    }
                }
            }
            let mut chunks = Vec::new();
            let mut rest = text.as_slice();
            while !rest.is_empty() {
                let take = 1 + rng.below(rest.len());
                chunks.push(&rest[..take]);
                rest = &rest[take..];
            }
            stream(&secret_refs, &chunks);
            // One byte at a time.
            let bytes: Vec<&[u8]> = text.chunks(1).collect();
            stream(&secret_refs, &bytes);
        }
    }
}
