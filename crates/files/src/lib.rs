//! Every file conndoc reads or writes goes through here.
//!
//! Reads ([`read`], [`read_to_string`], [`read_stream`]) are bounded by a size limit and refuse
//! directories, FIFOs, sockets and devices with an error naming the path: the file is opened
//! with `O_NONBLOCK` (so a FIFO without a writer cannot hang the open) and checked with
//! `fstat` on the descriptor before one byte is read (so `/dev/zero` cannot fill memory).
//!
//! Writes ([`create_private`], [`open_private`], [`write_private`]) make files `0600`, open
//! with `O_NOFOLLOW` (never through a symlink), refuse anything that is not a regular file,
//! a file with more than one hard link, or one owned by another user, and truncate only
//! after those checks passed.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Size limits per kind of file, in bytes. Far above any real file of the kind, far below
/// what would hurt the machine.
pub mod limit {
    /// `--password-file`, `password_file` in a watch config.
    pub const PASSWORD: u64 = 64 << 10;
    /// `--ca`, `ca_file`: a PEM bundle (the system bundle is about 200 KiB).
    pub const CA: u64 = 4 << 20;
    /// A watch config.
    pub const CONFIG: u64 = 16 << 20;
    /// One redis.conf or one of its includes.
    pub const REDIS_CONF: u64 = 4 << 20;
    /// An evidence file given to `conndoc explain` (replies in it are truncated).
    pub const EVIDENCE: u64 = 64 << 20;
    /// `/etc/hosts` (ad-blocking lists run to a few MiB).
    pub const HOSTS: u64 = 32 << 20;
    /// `/etc/resolv.conf`.
    pub const RESOLV: u64 = 1 << 20;
    /// A server's config or log file conndoc looks into.
    pub const SERVER_FILE: u64 = 16 << 20;
}

/// What a path turned out to be, when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Symlink,
    Other,
}

impl FileKind {
    fn of(ft: std::fs::FileType) -> Option<FileKind> {
        Some(if ft.is_file() {
            return None;
        } else if ft.is_dir() {
            FileKind::Directory
        } else if ft.is_fifo() {
            FileKind::Fifo
        } else if ft.is_socket() {
            FileKind::Socket
        } else if ft.is_char_device() {
            FileKind::CharDevice
        } else if ft.is_block_device() {
            FileKind::BlockDevice
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        })
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "directory",
            FileKind::Fifo => "FIFO (named pipe)",
            FileKind::Socket => "socket",
            FileKind::CharDevice => "character device",
            FileKind::BlockDevice => "block device",
            FileKind::Symlink => "symbolic link",
            FileKind::Other => "special file",
        })
    }
}

/// The OS error as one phrase, without Rust's ` (os error N)` suffix, so a message that
/// names it once reads as one clear line.
pub fn os_error_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A failed read. Display is one line naming the path; the OS error is in the text, not
/// in a source chain, so `{:#}` does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}: {}", path.display(), os_error_text(error))]
    Io { path: PathBuf, error: io::Error },
    #[error("cannot read {}: it is a {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error("cannot read {}: larger than the limit of {} for this file", path.display(), human_size(*limit))]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("cannot read {}: not UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },
}

impl ReadError {
    /// The file does not exist (callers for which a missing file is normal check this).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { error, .. } if error.kind() == io::ErrorKind::NotFound)
    }
    pub fn path(&self) -> &Path {
        match self {
            ReadError::Io { path, .. }
            | ReadError::NotRegular { path, .. }
            | ReadError::TooLarge { path, .. }
            | ReadError::NotUtf8 { path } => path,
        }
    }
}

fn human_size(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// Read a regular file of at most `limit` bytes.
pub fn read(path: impl AsRef<Path>, limit: u64) -> Result<Vec<u8>, ReadError> {
    let path = path.as_ref();
    let io_err = |error| ReadError::Io { path: path.to_path_buf(), error };
    let f = open_for_read(path)?;
    let meta = f.metadata().map_err(io_err)?;
    if meta.len() > limit {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), limit });
    }
    // /proc files report size 0 and a file may grow while read: the limit holds anyway.
    read_limited(f, limit, meta.len()).map_err(|e| match e {
        Limited::Io(error) => io_err(error),
        Limited::TooLarge => ReadError::TooLarge { path: path.to_path_buf(), limit },
    })
}

/// The last `max` bytes of a regular file (a log), with the same refusals as [`read`].
pub fn read_tail(path: impl AsRef<Path>, max: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::{Seek, SeekFrom};
    let path = path.as_ref();
    let io_err = |error| ReadError::Io { path: path.to_path_buf(), error };
    let mut f = open_for_read(path)?;
    let len = f.metadata().map_err(io_err)?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max))).map_err(io_err)?;
    read_limited(f, max, max.min(len)).map_err(|e| match e {
        Limited::Io(error) => io_err(error),
        Limited::TooLarge => ReadError::TooLarge { path: path.to_path_buf(), limit: max },
    })
}

fn open_for_read(path: &Path) -> Result<File, ReadError> {
    let io_err = |error| ReadError::Io { path: path.to_path_buf(), error };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io_err)?;
    let meta = f.metadata().map_err(io_err)?;
    if let Some(kind) = FileKind::of(meta.file_type()) {
        return Err(ReadError::NotRegular { path: path.to_path_buf(), kind });
    }
    Ok(f)
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: impl AsRef<Path>, limit: u64) -> Result<String, ReadError> {
    let path = path.as_ref();
    String::from_utf8(read(path, limit)?).map_err(|_| ReadError::NotUtf8 { path: path.to_path_buf() })
}

/// Read a stream (stdin) of at most `limit` bytes; `what` names it in the error.
pub fn read_stream(r: impl Read, limit: u64, what: &str) -> Result<Vec<u8>, ReadError> {
    read_limited(r, limit, 0).map_err(|e| match e {
        Limited::Io(error) => ReadError::Io { path: PathBuf::from(what), error },
        Limited::TooLarge => ReadError::TooLarge { path: PathBuf::from(what), limit },
    })
}

enum Limited {
    Io(io::Error),
    TooLarge,
}

fn read_limited(r: impl Read, limit: u64, hint: u64) -> Result<Vec<u8>, Limited> {
    let mut buf = Vec::with_capacity(hint.min(limit).min(1 << 20) as usize);
    r.take(limit.saturating_add(1)).read_to_end(&mut buf).map_err(Limited::Io)?;
    if buf.len() as u64 > limit {
        return Err(Limited::TooLarge);
    }
    Ok(buf)
}

/// A failed private write; one line naming the path.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write {}: {}", path.display(), os_error_text(error))]
    Io { path: PathBuf, error: io::Error },
    #[error("cannot write {}: it is a symbolic link (conndoc never writes through one)", path.display())]
    Symlink { path: PathBuf },
    #[error("cannot write {}: it is a {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error("cannot write {}: it has {links} hard links (conndoc writes only a file of its own)", path.display())]
    HardLinked { path: PathBuf, links: u64 },
    #[error("cannot write {}: it belongs to uid {uid}, not to this user", path.display())]
    Foreign { path: PathBuf, uid: u32 },
}

/// Create or truncate `path` as a private file (`0600`) and return it open for writing.
pub fn create_private(path: impl AsRef<Path>) -> Result<File, WriteError> {
    let path = path.as_ref();
    let f = open_private(path)?;
    f.set_len(0).map_err(|error| WriteError::Io { path: path.to_path_buf(), error })?;
    Ok(f)
}

/// Open `path` as a private file (`0600`) for writing without truncating it, creating it if
/// missing (a database, or the check before a run that the output can be written).
pub fn open_private(path: impl AsRef<Path>) -> Result<File, WriteError> {
    let path = path.as_ref();
    let io_err = |error| WriteError::Io { path: path.to_path_buf(), error };
    // O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of blocking the open.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ELOOP) if is_symlink(path) => WriteError::Symlink { path: path.to_path_buf() },
            Some(libc::ENXIO) => WriteError::NotRegular { path: path.to_path_buf(), kind: FileKind::Fifo },
            _ => io_err(error),
        })?;
    let meta = f.metadata().map_err(io_err)?;
    if let Some(kind) = FileKind::of(meta.file_type()) {
        return Err(WriteError::NotRegular { path: path.to_path_buf(), kind });
    }
    if meta.nlink() > 1 {
        return Err(WriteError::HardLinked { path: path.to_path_buf(), links: meta.nlink() });
    }
    if meta.uid() != euid() {
        return Err(WriteError::Foreign { path: path.to_path_buf(), uid: meta.uid() });
    }
    if meta.mode() & 0o7777 != 0o600 {
        // fchmod on our descriptor: the file we checked, not whatever the path names now.
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    }
    Ok(f)
}

/// Write `bytes` to `path` as a private file (see [`create_private`]).
pub fn write_private(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), WriteError> {
    let path = path.as_ref();
    let mut f = create_private(path)?;
    f.write_all(bytes).and_then(|_| f.flush()).map_err(|error| WriteError::Io { path: path.to_path_buf(), error })
}

fn is_symlink(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

#[allow(unsafe_code)]
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests;
