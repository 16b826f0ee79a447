//! The disk side of a restore: what `verify` checks before anything is written, and how
//! `unpack` creates directories, files and links without following a link, writing small files
//! on a pool of threads.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use super::frames::Decoded;
use super::invalid;

fn not_a_directory(path: &Path) -> io::Error {
    invalid(format!(
        "restoring would write through {}, which is not a directory",
        path.display()
    ))
}

fn a_directory(path: &Path) -> io::Error {
    invalid(format!(
        "{} is a directory on disk, where the entry stores a file or link",
        path.display()
    ))
}

/// Checks members against the disk without writing: the directories on the way must be real
/// directories (or missing), the place itself must not be a directory. Members come in order,
/// so the directories checked for the previous one are remembered.
#[derive(Default)]
pub(super) struct DiskCheck {
    anchor: &'static str,
    /// The directories of the previous member: name and whether it exists.
    dirs: Vec<(String, bool)>,
}

impl DiskCheck {
    pub fn check(&mut self, anchor: &'static str, root: &Path, rest: &str) -> io::Result<()> {
        let segments: Vec<&str> = rest.split('/').collect();
        let (name, dirs) = segments.split_last().expect("split gives one item");
        if anchor != self.anchor {
            self.anchor = anchor;
            self.dirs.clear();
        }
        let same = self
            .dirs
            .iter()
            .zip(dirs)
            .take_while(|((a, _), b)| a == *b)
            .count();
        self.dirs.truncate(same);
        let mut path = root.to_path_buf();
        path.extend(&dirs[..same]);
        for dir in &dirs[same..] {
            path.push(dir);
            let exists = self.dirs.last().is_none_or(|(_, e)| *e)
                && match path.symlink_metadata() {
                    Ok(m) if m.is_dir() => true,
                    Ok(_) => return Err(not_a_directory(&path)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                    Err(e) => return Err(e),
                };
            self.dirs.push((dir.to_string(), exists));
        }
        if self.dirs.last().is_none_or(|(_, e)| *e) {
            path.push(name);
            match path.symlink_metadata() {
                Ok(m) if m.is_dir() => return Err(a_directory(&path)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The open directories of the previous member, made as needed; none is reached through a link.
#[derive(Default)]
pub(super) struct Dirs {
    anchor: &'static str,
    root: PathBuf,
    /// The anchor's root, then each directory below it.
    open: Vec<(String, Arc<OwnedFd>)>,
}

impl Dirs {
    /// The directory `dirs` under `root` (the anchor's), created if missing.
    pub fn get(
        &mut self,
        anchor: &'static str,
        root: &Path,
        dirs: &[&str],
    ) -> io::Result<Arc<OwnedFd>> {
        if anchor != self.anchor || self.open.is_empty() {
            let fd = nix::fcntl::open(
                root,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("{}: {e}", root.display()),
                )
            })?;
            self.anchor = anchor;
            self.root = root.to_path_buf();
            self.open = vec![(String::new(), Arc::new(fd))];
        }
        let same = self.open[1..]
            .iter()
            .zip(dirs)
            .take_while(|((a, _), b)| a == *b)
            .count();
        self.open.truncate(same + 1);
        for (i, dir) in dirs.iter().enumerate().skip(same) {
            let parent = &self.open.last().expect("the root is open").1;
            let shown = || {
                let mut path = self.root.clone();
                path.extend(&dirs[..=i]);
                path
            };
            match nix::sys::stat::mkdirat(parent.as_fd(), *dir, Mode::from_bits_truncate(0o777)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::Error::from(e).kind(),
                        format!("cannot create {}: {e}", shown().display()),
                    ))
                }
            }
            let fd = match nix::fcntl::openat(
                parent.as_fd(),
                *dir,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOTDIR | Errno::ELOOP) => return Err(not_a_directory(&shown())),
                Err(e) => {
                    return Err(io::Error::new(
                        io::Error::from(e).kind(),
                        format!("cannot open {}: {e}", shown().display()),
                    ))
                }
            };
            self.open.push((dir.to_string(), Arc::new(fd)));
        }
        Ok(Arc::clone(&self.open.last().expect("the root is open").1))
    }
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| invalid(format!("{name:?} holds a NUL byte")))
}

/// Creates `name` in `dir` as a new file, never opening an existing one or following a link: an
/// existing file or link is removed first, a directory is an error.
pub(super) fn create_file(
    dir: &OwnedFd,
    name: &str,
    shown: &dyn Fn() -> PathBuf,
) -> io::Result<File> {
    let name = c_name(name)?;
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(0o600);
    match nix::fcntl::openat(dir.as_fd(), name.as_c_str(), flags, mode) {
        Ok(fd) => return Ok(File::from(fd)),
        Err(Errno::EEXIST) => {}
        Err(e) => {
            return Err(io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot create {}: {e}", shown().display()),
            ))
        }
    }
    replace(dir, &name, shown)?;
    nix::fcntl::openat(dir.as_fd(), name.as_c_str(), flags, mode)
        .map(File::from)
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot create {}: {e}", shown().display()),
            )
        })
}

/// Removes the file or link `name` in `dir` so that it can be created again.
fn replace(dir: &OwnedFd, name: &CString, shown: &dyn Fn() -> PathBuf) -> io::Result<()> {
    let stat = nix::sys::stat::fstatat(dir.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if stat.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR {
        return Err(a_directory(&shown()));
    }
    nix::unistd::unlinkat(
        dir.as_fd(),
        name.as_c_str(),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    )?;
    Ok(())
}

/// Gives a written file its mode and modification time.
pub(super) fn finish_file(file: &File, mode: u32, mtime: u64) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))
}

/// Creates the link `name` in `dir` (replacing a file or link there) and sets its own time.
pub(super) fn create_link(
    dir: &OwnedFd,
    name: &str,
    target: &[u8],
    mtime: u64,
    shown: &dyn Fn() -> PathBuf,
) -> io::Result<()> {
    let name = c_name(name)?;
    let target = std::ffi::OsStr::from_bytes(target);
    let link = || nix::unistd::symlinkat(target, dir.as_fd(), name.as_c_str());
    match link() {
        Ok(()) => {}
        Err(Errno::EEXIST) => {
            replace(dir, &name, shown)?;
            link().map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("cannot create {}: {e}", shown().display()),
                )
            })?;
        }
        Err(e) => {
            return Err(io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot create {}: {e}", shown().display()),
            ))
        }
    }
    // Best effort: some systems cannot set a link's time.
    let time = nix::sys::time::TimeSpec::from_duration(Duration::from_secs(mtime));
    let _ = nix::sys::stat::utimensat(
        dir.as_fd(),
        name.as_c_str(),
        &time,
        &time,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
    Ok(())
}

/// A file for the pool to write: its bytes are a slice of a decoded frame.
pub(super) struct WriteJob {
    pub dir: Arc<OwnedFd>,
    pub name: String,
    pub shown: PathBuf,
    pub data: Option<(Arc<Decoded>, Range<usize>)>,
    pub mode: u32,
    pub mtime: u64,
}

impl WriteJob {
    fn run(self) -> io::Result<()> {
        let shown = || self.shown.clone();
        let mut file = create_file(&self.dir, &self.name, &shown)?;
        if let Some((bytes, range)) = &self.data {
            file.write_all(&bytes[range.clone()]).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot write {}: {e}", self.shown.display()),
                )
            })?;
        }
        finish_file(&file, self.mode, self.mtime)
    }
}

/// Threads that write files handed to them; the first failure stops the rest. Each thread has
/// its own queue, and the files of one directory go to one thread: two threads creating files
/// in one directory would wait for each other on its lock (and spin).
pub(super) struct Writers<'scope> {
    jobs: Vec<SyncSender<WriteJob>>,
    threads: Vec<std::thread::ScopedJoinHandle<'scope, ()>>,
    failed: Arc<AtomicBool>,
    error: Arc<Mutex<Option<io::Error>>>,
}

impl<'scope> Writers<'scope> {
    pub fn start(
        scope: &'scope std::thread::Scope<'scope, '_>,
        threads: usize,
    ) -> io::Result<Writers<'scope>> {
        let failed = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let mut jobs = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..threads.max(1) {
            let (tx, rx) = mpsc::sync_channel::<WriteJob>(32);
            let failed = Arc::clone(&failed);
            let error = Arc::clone(&error);
            let thread = std::thread::Builder::new().name("cache-write".into());
            handles.push(thread.spawn_scoped(scope, move || {
                for job in rx {
                    if failed.load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Err(e) = job.run() {
                        failed.store(true, Ordering::Relaxed);
                        let mut slot = error.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                    }
                }
            })?);
            jobs.push(tx);
        }
        Ok(Writers {
            jobs,
            threads: handles,
            failed,
            error,
        })
    }

    /// Queues a file for the thread of directory number `dir` (see the type's docs); fails
    /// with the first writer's error, if any.
    pub fn send(&self, dir: u64, job: WriteJob) -> io::Result<()> {
        self.check()?;
        let queue = &self.jobs[(dir % self.jobs.len() as u64) as usize];
        queue
            .send(job)
            .map_err(|_| io::Error::other("the writer threads stopped"))
    }

    /// Fails with the first writer's error, if any.
    pub fn check(&self) -> io::Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
            return Err(slot
                .take()
                .unwrap_or_else(|| io::Error::other("a file could not be written")));
        }
        Ok(())
    }

    /// Waits until every queued file is written (or skipped after a failure).
    pub fn finish(mut self) -> io::Result<()> {
        self.jobs.clear();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                return Err(io::Error::other("a writer thread panicked"));
            }
        }
        self.check()
    }
}
