//! A deterministic tar writer: POSIX ustar headers, with a PAX extended header only where ustar
//! cannot hold a value (a path or link target that does not fit, a size of 8 GiB or more, an id
//! above 2,097,151). Owner and group names are empty, device numbers zero, and the modification
//! time is whatever the caller gives (one fixed value for a whole layer), so the same entries
//! always give the same bytes.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TarKind {
    /// A regular file of `size` bytes (the data follows).
    File {
        /// Its size.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symbolic link to `target`.
    Symlink(String),
    /// A hard link to the earlier entry `target`.
    Link(String),
}

/// One entry's header.
#[derive(Clone, Debug)]
pub struct TarHeader<'a> {
    /// The path, relative, `/`-separated, without a trailing `/` (one is added for directories).
    pub path: &'a str,
    /// What it is.
    pub kind: TarKind,
    /// Permission bits (and setuid, setgid, sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
}

/// Writes tar entries to `W`.
pub struct TarWriter<W: Write> {
    out: W,
    /// File data goes through here in large pieces (`io::copy`'s 8 KiB would mean many small
    /// writes into the hashers and the compressor).
    copy_buf: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    /// A writer on `out`.
    pub fn new(out: W) -> Self {
        TarWriter {
            out,
            copy_buf: vec![0; 256 * 1024],
        }
    }

    /// Writes one entry; for a file, exactly `size` bytes are read from `data`.
    pub fn append(
        &mut self,
        header: &TarHeader<'_>,
        data: Option<&mut dyn Read>,
    ) -> io::Result<()> {
        let mut name = header.path.trim_end_matches('/').to_string();
        if header.kind == TarKind::Dir {
            name.push('/');
        }
        let (typeflag, size, link) = match &header.kind {
            TarKind::File { size } => (b'0', *size, ""),
            TarKind::Dir => (b'5', 0, ""),
            TarKind::Symlink(t) => (b'2', 0, t.as_str()),
            TarKind::Link(t) => (b'1', 0, t.as_str()),
        };
        let mut pax: Vec<(&str, String)> = Vec::new();
        let split = split_name(&name);
        if split.is_none() {
            pax.push(("path", name.clone()));
        }
        if link.len() > 100 {
            pax.push(("linkpath", link.to_string()));
        }
        if size > 0o77777777777 {
            pax.push(("size", size.to_string()));
        }
        if header.uid > 0o7777777 {
            pax.push(("uid", header.uid.to_string()));
        }
        if header.gid > 0o7777777 {
            pax.push(("gid", header.gid.to_string()));
        }
        if !pax.is_empty() {
            let mut records = Vec::new();
            for (key, value) in &pax {
                records.extend_from_slice(&pax_record(key, value));
            }
            // A fixed, path-derived name for the extended header itself, as Go's writer does.
            let base = name.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            let mut pax_name = format!("PaxHeaders.0/{base}");
            truncate_to(&mut pax_name, 100);
            let block = raw_header(
                &pax_name,
                "",
                b'x',
                records.len() as u64,
                0o644,
                0,
                0,
                header.mtime,
                link_field(""),
            );
            self.out.write_all(&block)?;
            self.out.write_all(&records)?;
            pad(&mut self.out, records.len() as u64)?;
        }
        let (prefix, short) = split.unwrap_or_else(|| (String::new(), truncated(&name, 100)));
        let mut block = raw_header(
            &short,
            &prefix,
            typeflag,
            size.min(0o77777777777),
            header.mode & 0o7777,
            header.uid.min(0o7777777),
            header.gid.min(0o7777777),
            header.mtime,
            link_field(link),
        );
        checksum(&mut block);
        self.out.write_all(&block)?;
        if let TarKind::File { size } = header.kind {
            let data = data.ok_or_else(|| io::Error::other("a file entry needs its data"))?;
            let mut copied = 0u64;
            while copied < size {
                let want = (size - copied).min(self.copy_buf.len() as u64) as usize;
                let n = match data.read(&mut self.copy_buf[..want]) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                self.out.write_all(&self.copy_buf[..n])?;
                copied += n as u64;
            }
            if copied != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: the file shrank while it was read", header.path),
                ));
            }
            pad(&mut self.out, size)?;
        }
        Ok(())
    }

    /// Writes the two zero blocks that end an archive and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.out)
    }
}

/// ustar's `prefix` (155 bytes) and `name` (100 bytes) for `path`, split at a `/`; `None` when it
/// cannot be split so.
fn split_name(path: &str) -> Option<(String, String)> {
    if path.len() <= 100 {
        return Some((String::new(), path.to_string()));
    }
    let bytes = path.as_bytes();
    // The name part must be at most 100 bytes, the prefix at most 155; split at the first
    // suitable slash (the longest name).
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'/' && i <= 155 && path.len() - i - 1 <= 100 && i > 0 && i + 1 < path.len() {
            return Some((path[..i].to_string(), path[i + 1..].to_string()));
        }
    }
    None
}

fn truncate_to(s: &mut String, max: usize) {
    while s.len() > max {
        s.pop();
    }
}

fn truncated(s: &str, max: usize) -> String {
    let mut t = s.to_string();
    truncate_to(&mut t, max);
    t
}

fn link_field(link: &str) -> String {
    truncated(link, 100)
}

/// A PAX record: `"<len> key=value\n"`, where `<len>` counts the whole record, itself included.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // space, '=', newline
    let mut len = rest + 1;
    loop {
        let total = rest + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    format!("{len} {key}={value}\n").into_bytes()
}

#[allow(clippy::too_many_arguments)]
fn raw_header(
    name: &str,
    prefix: &str,
    typeflag: u8,
    size: u64,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: String,
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    put(&mut h[0..100], name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime.min(0o77777777777));
    h[156] = typeflag;
    put(&mut h[157..257], link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    put(&mut h[345..500], prefix.as_bytes());
    if typeflag == b'x' {
        checksum(&mut h);
    }
    h
}

fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal with a terminating NUL, filling the field.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    put(field, text.as_bytes());
    field[digits] = 0;
}

fn checksum(h: &mut [u8; BLOCK]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
}

fn pad<W: Write>(out: &mut W, size: u64) -> io::Result<()> {
    let rem = (size % BLOCK as u64) as usize;
    if rem != 0 {
        out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(path: &str, kind: TarKind) -> TarHeader<'_> {
        TarHeader {
            path,
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }

    #[test]
    fn the_tar_crate_reads_every_kind_back() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let longer = "x".repeat(300);
        let mut w = TarWriter::new(Vec::new());
        w.append(&header("a", TarKind::Dir), None).unwrap();
        w.append(
            &header("a/file", TarKind::File { size: 5 }),
            Some(&mut &b"hello"[..]),
        )
        .unwrap();
        w.append(&header("a/sym", TarKind::Symlink("file".into())), None)
            .unwrap();
        w.append(&header("a/hard", TarKind::Link("a/file".into())), None)
            .unwrap();
        w.append(
            &header(&long, TarKind::File { size: 1 }),
            Some(&mut &b"1"[..]),
        )
        .unwrap();
        w.append(&header(&longer, TarKind::Symlink(longer.clone())), None)
            .unwrap();
        let mut big = header("big-ids", TarKind::Dir);
        big.uid = 5_000_000;
        big.gid = 3_000_000;
        w.append(&big, None).unwrap();
        let bytes = w.finish().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            let (uid, gid) = (entry.header().uid().unwrap(), entry.header().gid().unwrap());
            let kind = entry.header().entry_type();
            let mut data = String::new();
            entry.read_to_string(&mut data).unwrap();
            seen.push((path, format!("{kind:?}"), link, data, uid, gid));
        }
        assert_eq!(seen.len(), 7, "{seen:?}");
        assert_eq!(seen[0].0, "a/");
        assert_eq!(seen[1].3, "hello");
        assert_eq!(seen[2].2, "file");
        assert_eq!((seen[3].1.as_str(), seen[3].2.as_str()), ("Link", "a/file"));
        assert_eq!(seen[4].0, long);
        assert_eq!(
            (seen[5].0.as_str(), seen[5].2.as_str()),
            (longer.as_str(), longer.as_str())
        );
        assert_eq!((seen[6].4, seen[6].5), (5_000_000, 3_000_000));
    }

    #[test]
    fn pax_records_count_themselves() {
        for value in ["", "x", &"y".repeat(93), &"z".repeat(994)] {
            let r = pax_record("path", value);
            let text = String::from_utf8(r.clone()).unwrap();
            let len: usize = text.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(len, r.len(), "{text}");
        }
    }
}
