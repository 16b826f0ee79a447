//! What the runner's benches share: a reproducible random source, generated text files, and the
//! process's CPU time and peak memory. Each bench uses a part of it (`mod common;`), hence the
//! `dead_code` allowance.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use nix::sys::resource::{getrusage, UsageWho};

/// xorshift64*: reproducible, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A vocabulary of 4000 random lowercase words.
pub fn vocabulary(rng: &mut Rng) -> Vec<String> {
    (0..4000)
        .map(|_| {
            let len = 2 + rng.below(9) as usize;
            (0..len)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect()
        })
        .collect()
}

/// Writes `size` bytes of text: prose-like or code-like lines of words.
pub fn write_text(path: &Path, size: u64, words: &[String], rng: &mut Rng) {
    let mut out = BufWriter::new(File::create(path).unwrap());
    let code = rng.below(2) == 0;
    let mut written = 0u64;
    let mut line = String::new();
    while written < size {
        line.clear();
        if code {
            let indent = rng.below(4) as usize * 2;
            line.push_str(&" ".repeat(indent));
            line.push_str(["const ", "function ", "if (", "return ", ""][rng.below(5) as usize]);
        }
        for _ in 0..(4 + rng.below(10)) {
            // Zipf-ish: common words far more often.
            let r = rng.below(words.len() as u64);
            let i = (r * r / words.len() as u64) as usize;
            line.push_str(&words[i]);
            line.push(if code && rng.below(5) == 0 { '.' } else { ' ' });
        }
        line.push_str(if code { ";\n" } else { ".\n" });
        let take = (size - written).min(line.len() as u64) as usize;
        out.write_all(&line.as_bytes()[..take]).unwrap();
        written += take as u64;
    }
    out.flush().unwrap();
}

/// CPU seconds (user + system) used so far by `who`.
pub fn cpu(who: UsageWho) -> f64 {
    let usage = getrusage(who).unwrap();
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

/// This process's peak resident set (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .to_string();
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}
