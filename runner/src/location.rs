//! Where artifacts and cache entries go: a local directory or an S3 location.

use std::fmt;
use std::path::PathBuf;

use crate::s3::S3Url;

/// A local directory or an `s3://bucket/prefix` location (`-a`, `--cache`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// A directory on this machine.
    Dir(PathBuf),
    /// A bucket and key prefix.
    S3(S3Url),
}

impl Location {
    /// Reads `s3://bucket/prefix` as an S3 location and anything else as a directory.
    pub fn parse(text: &str) -> Result<Location, String> {
        if text.starts_with("s3://") {
            text.parse().map(Location::S3)
        } else if text.contains("://") {
            Err(format!(
                "`{text}`: only directories and s3://bucket/prefix locations are supported"
            ))
        } else {
            Ok(Location::Dir(PathBuf::from(text)))
        }
    }

    /// The directory, for a local location.
    pub fn dir(&self) -> Option<&std::path::Path> {
        match self {
            Location::Dir(dir) => Some(dir),
            Location::S3(_) => None,
        }
    }
}

impl From<PathBuf> for Location {
    fn from(dir: PathBuf) -> Location {
        Location::Dir(dir)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Dir(dir) => write!(f, "{}", dir.display()),
            Location::S3(url) => write!(f, "{url}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_and_directories_are_told_apart() {
        assert_eq!(
            Location::parse("out/dir").unwrap(),
            Location::Dir("out/dir".into())
        );
        let Location::S3(url) = Location::parse("s3://bucket/p").unwrap() else {
            panic!("not an S3 location");
        };
        assert_eq!((url.bucket.as_str(), url.prefix.as_str()), ("bucket", "p"));
        assert!(Location::parse("gs://bucket/p").is_err());
        assert!(Location::parse("s3://B").is_err());
    }
}
