//! The tar layer of an entry: GNU headers (with `././@LongLink` entries for names and link
//! targets over 100 bytes), read back from the pieces of `frames::read`.

use std::io::{self, Write};
use std::ops::Range;
use std::sync::Arc;

use super::frames::{Data, Decoded, Pieces};
use super::invalid;

const BLOCK: usize = 512;
/// The longest name or link target a long-name entry may hold.
const MAX_LONG_NAME: u64 = 16 << 10;

/// The zeros after `size` bytes of data, up to the next block.
pub(super) fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// What a member is.
#[derive(Debug)]
pub(super) enum Kind {
    File,
    Link(Vec<u8>),
    Other(tar::EntryType),
}

/// The header bytes of a member (long-name entries first when needed).
pub(super) fn header(name: &str, kind: &Kind, mode: u32, mtime: u64, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK);
    let mut header = tar::Header::new_gnu();
    long_name(&mut out, name.as_bytes(), b'L');
    let field = &mut header.as_old_mut().name;
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name.as_bytes()[..n]);
    header.set_mtime(mtime);
    header.set_mode(mode);
    match kind {
        Kind::File => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(size);
        }
        Kind::Link(target) => {
            long_name(&mut out, target, b'K');
            let field = &mut header.as_old_mut().linkname;
            let n = target.len().min(field.len());
            field[..n].copy_from_slice(&target[..n]);
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
        }
        Kind::Other(t) => {
            header.set_entry_type(*t);
            header.set_size(size);
        }
    }
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out
}

/// A GNU long-name (`L`) or long-link (`K`) entry for `value`, if it does not fit a header.
fn long_name(out: &mut Vec<u8>, value: &[u8], kind: u8) {
    if value.len() <= 100 {
        return;
    }
    let mut header = tar::Header::new_gnu();
    let name = b"././@LongLink";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_size(value.len() as u64 + 1);
    header.set_entry_type(tar::EntryType::new(kind));
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(value);
    out.push(0);
    out.resize(out.len() + padding(value.len() as u64 + 1), 0);
}

/// A member's header, read back.
#[derive(Debug)]
pub(super) struct Member {
    pub name: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub mtime: u64,
    /// The size of the data that follows the header.
    pub size: u64,
}

/// The tar stream, read from `frames::Piece`s. Header bytes are read with [`Stream::header`]: from
/// the decoded data, checked against the piece's header copy when it has one, or from the copy
/// alone when the data was skipped. A piece is left only when its copy is used up, so the
/// copies are exactly the headers of the stream.
pub(super) struct Stream<'a> {
    pieces: &'a mut dyn Pieces,
    /// The piece being read and the position in it.
    bytes: Option<Arc<Decoded>>,
    at: usize,
    /// Bytes left of a skipped piece.
    skipped: u64,
    /// The current piece's header copy, and how much of it was read.
    copy: Option<Vec<u8>>,
    copied: usize,
}

impl<'a> Stream<'a> {
    pub fn new(pieces: &'a mut dyn Pieces) -> Stream<'a> {
        Stream {
            pieces,
            bytes: None,
            at: 0,
            skipped: 0,
            copy: None,
            copied: 0,
        }
    }

    /// Makes sure something is left to read in the current piece; false at the end.
    fn refill(&mut self) -> io::Result<bool> {
        loop {
            if self.skipped > 0 {
                return Ok(true);
            }
            if let Some(bytes) = &self.bytes {
                if self.at < bytes.len() {
                    return Ok(true);
                }
            }
            if self.copy.as_ref().is_some_and(|c| self.copied < c.len()) {
                return Err(mismatch());
            }
            // Let go of the piece before the next is made (it may be waiting for its memory).
            self.bytes = None;
            self.at = 0;
            let Some(piece) = self.pieces.next_piece()? else {
                self.copy = None;
                return Ok(false);
            };
            match piece.data {
                Data::Bytes(bytes) => self.bytes = Some(bytes),
                Data::Skipped(len) => {
                    if piece.headers.is_none() {
                        return Err(mismatch());
                    }
                    self.skipped = len;
                }
            }
            self.copy = piece.headers;
            self.copied = 0;
        }
    }

    /// Reads header bytes (see the type's docs).
    fn header(&mut self, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            if !self.refill()? {
                return Err(truncated());
            }
            let left = self.copy.as_ref().map(|c| &c[self.copied..]);
            let n = if self.skipped > 0 {
                let copy = left.expect("a skipped piece has a copy");
                let n = buf.len().min(copy.len()).min(self.skipped as usize);
                if n == 0 {
                    return Err(mismatch());
                }
                buf[..n].copy_from_slice(&copy[..n]);
                self.skipped -= n as u64;
                n
            } else {
                let bytes = self.bytes.as_ref().expect("refilled");
                let n = buf.len().min(bytes.len() - self.at);
                let got = &bytes[self.at..self.at + n];
                if let Some(copy) = left {
                    if copy.len() < n || copy[..n] != *got {
                        return Err(mismatch());
                    }
                }
                buf[..n].copy_from_slice(got);
                self.at += n;
                n
            };
            if self.copy.is_some() {
                self.copied += n;
            }
            buf = &mut buf[n..];
        }
        Ok(())
    }

    /// Passes over `n` bytes of file data.
    pub fn skip(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            if !self.refill()? {
                return Err(truncated());
            }
            if self.skipped > 0 {
                let now = self.skipped.min(n);
                self.skipped -= now;
                n -= now;
            } else {
                let left = self.bytes.as_ref().map_or(0, |b| b.len() - self.at);
                let now = (left as u64).min(n);
                self.at += now as usize;
                n -= now;
            }
        }
        Ok(())
    }

    /// The next `n` bytes of file data as a slice of one decoded piece, if they all lie in the
    /// current one.
    pub fn slice(&mut self, n: usize) -> io::Result<Option<(Arc<Decoded>, Range<usize>)>> {
        if !self.refill()? {
            return Err(truncated());
        }
        match &self.bytes {
            Some(bytes) if self.skipped == 0 && bytes.len() - self.at >= n => {
                let range = self.at..self.at + n;
                self.at += n;
                Ok(Some((Arc::clone(bytes), range)))
            }
            _ => Ok(None),
        }
    }

    /// Copies the next `n` bytes of file data to `out`.
    pub fn copy_to(&mut self, mut n: u64, out: &mut impl Write) -> io::Result<()> {
        while n > 0 {
            if !self.refill()? {
                return Err(truncated());
            }
            let Some(bytes) = &self.bytes else {
                return Err(io::Error::other("copying file data that was skipped"));
            };
            let now = (bytes.len() - self.at).min(n.min(usize::MAX as u64) as usize);
            out.write_all(&bytes[self.at..self.at + now])?;
            self.at += now;
            n -= now as u64;
        }
        Ok(())
    }

    /// The next member, `None` after the end-of-archive blocks (the rest of the stream must be
    /// zeros: every frame is read, so every checksum is checked).
    pub fn next_member(&mut self) -> io::Result<Option<Member>> {
        let mut long: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let mut block = [0u8; BLOCK];
            self.header(&mut block)?;
            if block.iter().all(|&b| b == 0) {
                self.header(&mut block)?;
                if block.iter().any(|&b| b != 0) {
                    return Err(invalid("the entry is corrupt: a header is empty".into()));
                }
                // Read to the end, so that every frame is checked: only zeros may follow (an
                // indexed entry ends right after the blocks).
                while self.refill()? {
                    let zeros = match &self.bytes {
                        Some(bytes) if self.skipped == 0 => {
                            bytes[self.at..].iter().all(|&b| b == 0)
                        }
                        _ => false,
                    };
                    if self.copy.is_some() {
                        return Err(mismatch());
                    }
                    if !zeros {
                        return Err(invalid("the entry has data after its end".into()));
                    }
                    self.at = self.bytes.as_ref().map_or(0, |b| b.len());
                }
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block);
            let sum: u32 = block
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u32::from(b)
                    }
                })
                .sum();
            if header.cksum().ok() != Some(sum) {
                return Err(invalid(
                    "the entry is corrupt: a header checksum is wrong".into(),
                ));
            }
            let size = header.entry_size()?;
            let kind = header.entry_type();
            if kind.is_gnu_longname() || kind.is_gnu_longlink() {
                let slot = if kind.is_gnu_longname() {
                    &mut long
                } else {
                    &mut long_link
                };
                if slot.is_some() || size > MAX_LONG_NAME {
                    return Err(invalid("the entry has an invalid long name".into()));
                }
                let mut value = vec![0u8; size as usize + padding(size)];
                self.header(&mut value)?;
                value.truncate(size as usize);
                while value.last() == Some(&0) {
                    value.pop();
                }
                *slot = Some(value);
                continue;
            }
            let name = long.unwrap_or_else(|| header.path_bytes().into_owned());
            let kind = match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
                tar::EntryType::Symlink => Kind::Link(
                    long_link
                        .or_else(|| header.link_name_bytes().map(|l| l.into_owned()))
                        .unwrap_or_default(),
                ),
                other => Kind::Other(other),
            };
            // Another type is refused: its other fields do not matter.
            let (mode, mtime) = match kind {
                Kind::Other(_) => (0, 0),
                _ => (header.mode()? & 0o7777, header.mtime()?),
            };
            return Ok(Some(Member {
                name,
                kind,
                mode,
                mtime,
                size,
            }));
        }
    }
}

fn truncated() -> io::Error {
    invalid("the entry is truncated".into())
}

fn mismatch() -> io::Error {
    invalid("the entry is corrupt: its index does not match its tar headers".into())
}
