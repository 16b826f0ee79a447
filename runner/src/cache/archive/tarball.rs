//! The tar layer of an entry: GNU headers (with `././@LongLink` entries for names and link
//! targets over 100 bytes), and reading them back from the decompressed stream.

use std::io::{self, Read, Write};

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

/// The decompressed tar stream.
pub(super) struct Stream<R: Read> {
    input: R,
}

impl<R: Read> Stream<R> {
    pub fn new(input: R) -> Stream<R> {
        Stream { input }
    }

    /// Reads header bytes.
    fn header(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.input.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                truncated()
            } else {
                e
            }
        })
    }

    /// Passes over `n` bytes of file data.
    pub fn skip(&mut self, n: u64) -> io::Result<()> {
        self.copy_to(n, &mut io::sink())
    }

    /// Copies the next `n` bytes of file data to `out`.
    pub fn copy_to(&mut self, n: u64, out: &mut impl Write) -> io::Result<()> {
        if io::copy(&mut self.input.by_ref().take(n), out)? < n {
            return Err(truncated());
        }
        Ok(())
    }

    /// The next member, `None` after the end-of-archive blocks.
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
                // Read to the end, so that the zstd checksum is checked: only zeros may follow.
                let mut rest = [0u8; 8192];
                loop {
                    let n = match self.input.read(&mut rest) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    if rest[..n].iter().any(|&b| b != 0) {
                        return Err(invalid("the entry has data after its end".into()));
                    }
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
