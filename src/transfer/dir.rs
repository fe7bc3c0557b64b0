//! Folders used by handle, never through a symbolic link. A download folder
//! may be writable by others (a shared folder, `/tmp`): whatever they plant
//! there between a check and a use must not redirect a write. So each
//! folder is opened once (`openat` with `O_NOFOLLOW | O_DIRECTORY`) and
//! everything inside it is opened, linked, renamed and removed relative to
//! that handle with `O_NOFOLLOW`; a link found on the way is an error, not
//! a detour. Only the folder the user named is opened by its path as typed.
//!
//! Elsewhere than Unix the same calls check each name just before using it
//! (best effort: the check and the use are apart there).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// What a name in a folder is, without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Missing,
    File,
    Folder,
    Symlink,
    Other,
}

/// What [`Dir::stat`] tells of a name, without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    pub entry: Entry,
    pub len: u64,
    /// How many names the file has.
    pub links: u64,
    /// Device and inode: which file it is (0 where the platform does not
    /// say).
    pub id: (u64, u64),
}

/// How [`Dir::open_file`] opens a file. Files it creates are private to
/// the user (mode 0600) until they are placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Read and write, created if missing, never truncated.
    Update,
    /// Read and write a file that must exist (never created, never
    /// truncated).
    Modify,
    /// Read and append, created if missing.
    Append,
    /// Write, created or emptied.
    Replace,
}

/// An open folder; `path` is for messages only.
pub struct Dir {
    #[cfg(unix)]
    fd: std::os::fd::OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// The folder the user named, created with its parents if missing.
    /// Links in the path as typed are the user's own and are followed.
    pub fn open_or_create(path: &Path) -> io::Result<Dir> {
        std::fs::create_dir_all(path)?;
        Self::open(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second handle on the same folder (not reopened by its path).
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            #[cfg(unix)]
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// Writes `bytes` as `name` (created or replaced, never through a
    /// link), not synced.
    pub fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        self.open_file(name, Access::Replace)?.write_all(bytes)
    }

    /// The bytes of `name`, never read through a link.
    pub fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut bytes = Vec::new();
        self.open_file(name, Access::Read)?
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Makes renames in this folder durable where the platform allows it.
    pub fn sync(&self) {
        #[cfg(unix)]
        let _ = rustix::fs::fsync(&self.fd);
    }

    /// Makes everything written to this folder's filesystem durable at
    /// once (`syncfs`): one flush for a download of many files. Elsewhere
    /// than on Linux, this folder alone.
    pub fn sync_filesystem(&self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        return Ok(rustix::fs::syncfs(&self.fd)?);
        #[cfg(all(unix, not(target_os = "linux")))]
        return Ok(rustix::fs::fsync(&self.fd)?);
        #[cfg(not(unix))]
        Ok(())
    }
}

#[cfg(unix)]
mod unix {
    use super::*;
    use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};
    use std::os::unix::fs::MetadataExt;

    /// Files this module creates: as any program creates them (the umask
    /// narrows it).
    const FILE_MODE: u32 = 0o666;

    impl Dir {
        /// The folder at `path`, as typed (no creating).
        pub fn open(path: &Path) -> io::Result<Dir> {
            let fd = rustix::fs::openat(
                CWD,
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            Ok(Dir {
                fd,
                path: path.to_path_buf(),
            })
        }

        /// What `name` here is, its size and its number of names, not
        /// following a link; an error if it is missing.
        pub fn stat(&self, name: &str) -> io::Result<Facts> {
            let stat = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(Facts {
                entry: entry_of(&stat),
                len: stat.st_size as u64,
                links: stat.st_nlink as u64,
                id: (stat.st_dev as u64, stat.st_ino as u64),
            })
        }

        /// What `name` is here, not following a link.
        pub fn entry(&self, name: &str) -> io::Result<Entry> {
            match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => Ok(entry_of(&stat)),
                Err(rustix::io::Errno::NOENT) => Ok(Entry::Missing),
                Err(error) => Err(error.into()),
            }
        }

        /// The folder `name` here, created first with `create`'s mode (the
        /// umask narrows it) if given and missing. A link or anything but a
        /// folder in its place is an error.
        pub fn subdir(&self, name: &str, create: Option<u32>) -> io::Result<Dir> {
            if let Some(mode) = create {
                match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode as _)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            let fd = rustix::fs::openat(
                &self.fd,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            Ok(Dir {
                fd,
                path: self.path.join(name),
            })
        }

        /// Opens the file `name` here, never through a link.
        pub fn open_file(&self, name: &str, access: Access) -> io::Result<File> {
            let flags = match access {
                Access::Read => OFlags::RDONLY,
                Access::Update => OFlags::RDWR | OFlags::CREATE,
                Access::Modify => OFlags::RDWR,
                Access::Append => OFlags::RDWR | OFlags::APPEND | OFlags::CREATE,
                Access::Replace => OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC,
            };
            let fd = rustix::fs::openat(
                &self.fd,
                name,
                flags | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
                Mode::from_raw_mode(FILE_MODE as _),
            )?;
            Ok(File::from(fd))
        }

        /// Gives the file `name` here a second name, `to_name` in `to`;
        /// fails if that name is taken (by anything, a link too).
        pub fn link_to(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
            Ok(rustix::fs::linkat(
                &self.fd,
                name,
                &to.fd,
                to_name,
                AtFlags::empty(),
            )?)
        }

        /// Moves `name` here to `to_name` in `to`, replacing what is there
        /// (a link is replaced, never followed).
        pub fn rename_to(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
            Ok(rustix::fs::renameat(&self.fd, name, &to.fd, to_name)?)
        }

        /// Moves `name` here to `to_name` in `to` only if that name is
        /// free (atomically); [`io::ErrorKind::AlreadyExists`] if taken.
        /// Where the filesystem or the platform cannot, an error of
        /// another kind ([`Dir::link_to`] and a removal do the same).
        pub fn rename_new(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            return Ok(rustix::fs::renameat_with(
                &self.fd,
                name,
                &to.fd,
                to_name,
                rustix::fs::RenameFlags::NOREPLACE,
            )?);
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            Err(io::ErrorKind::Unsupported.into())
        }

        pub fn remove_file(&self, name: &str) -> io::Result<()> {
            Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
        }

        pub fn remove_dir(&self, name: &str) -> io::Result<()> {
            Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)?)
        }

        /// Makes this folder the user's alone (mode 0700) if it belongs to
        /// the user running this process; `false` if it belongs to someone
        /// else, who could plant anything in it.
        pub fn make_private(&self) -> io::Result<bool> {
            let meta = File::from(self.fd.try_clone()?).metadata()?;
            if meta.uid() != rustix::process::geteuid().as_raw() {
                return Ok(false);
            }
            if meta.mode() & 0o077 != 0 {
                rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(0o700))?;
            }
            Ok(true)
        }

        /// Whether `name` here is the file [`Dir::stat`] described as
        /// `facts` (not a link, not another file).
        pub fn holds(&self, name: &str, facts: &Facts) -> io::Result<bool> {
            let placed = self.stat(name)?;
            Ok(placed.entry == Entry::File && placed.id == facts.id)
        }
    }

    fn entry_of(stat: &rustix::fs::Stat) -> Entry {
        match FileType::from_raw_mode(stat.st_mode as _) {
            FileType::RegularFile => Entry::File,
            FileType::Directory => Entry::Folder,
            FileType::Symlink => Entry::Symlink,
            _ => Entry::Other,
        }
    }

    /// How many names the file of `meta` has: more than one means
    /// someone else can reach its bytes through another name.
    pub fn link_count(meta: &std::fs::Metadata) -> u64 {
        meta.nlink()
    }
}

#[cfg(unix)]
pub use unix::link_count;

#[cfg(not(unix))]
mod other {
    use super::*;
    use std::fs::{self, OpenOptions};

    fn refuse_link(path: &Path) -> io::Result<()> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a symbolic link is in the way",
            )),
            _ => Ok(()),
        }
    }

    impl Dir {
        pub fn open(path: &Path) -> io::Result<Dir> {
            if !fs::metadata(path)?.is_dir() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "not a folder"));
            }
            Ok(Dir {
                path: path.to_path_buf(),
            })
        }

        pub fn stat(&self, name: &str) -> io::Result<Facts> {
            let meta = fs::symlink_metadata(self.path.join(name))?;
            Ok(Facts {
                entry: self.entry(name)?,
                len: meta.len(),
                links: 1,
                id: (0, 0),
            })
        }

        pub fn entry(&self, name: &str) -> io::Result<Entry> {
            match fs::symlink_metadata(self.path.join(name)) {
                Ok(meta) if meta.file_type().is_symlink() => Ok(Entry::Symlink),
                Ok(meta) if meta.is_dir() => Ok(Entry::Folder),
                Ok(meta) if meta.is_file() => Ok(Entry::File),
                Ok(_) => Ok(Entry::Other),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Entry::Missing),
                Err(error) => Err(error),
            }
        }

        pub fn subdir(&self, name: &str, create: Option<u32>) -> io::Result<Dir> {
            let path = self.path.join(name);
            refuse_link(&path)?;
            if create.is_some() {
                match fs::create_dir(&path) {
                    Err(error) if error.kind() != io::ErrorKind::AlreadyExists => {
                        return Err(error)
                    }
                    _ => {}
                }
            }
            refuse_link(&path)?;
            Self::open(&path)
        }

        pub fn open_file(&self, name: &str, access: Access) -> io::Result<File> {
            let path = self.path.join(name);
            refuse_link(&path)?;
            let mut options = OpenOptions::new();
            match access {
                Access::Read => options.read(true),
                Access::Update => options.read(true).write(true).create(true),
                Access::Modify => options.read(true).write(true),
                Access::Append => options.read(true).append(true).create(true),
                Access::Replace => options.write(true).create(true).truncate(true),
            };
            options.open(path)
        }

        pub fn link_to(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
            fs::hard_link(self.path.join(name), to.path.join(to_name))
        }

        pub fn rename_to(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
            fs::rename(self.path.join(name), to.path.join(to_name))
        }

        pub fn rename_new(&self, _name: &str, _to: &Dir, _to_name: &str) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }

        pub fn remove_file(&self, name: &str) -> io::Result<()> {
            fs::remove_file(self.path.join(name))
        }

        pub fn remove_dir(&self, name: &str) -> io::Result<()> {
            fs::remove_dir(self.path.join(name))
        }

        pub fn make_private(&self) -> io::Result<bool> {
            Ok(true)
        }

        pub fn holds(&self, name: &str, _facts: &Facts) -> io::Result<bool> {
            Ok(self.entry(name)? == Entry::File)
        }
    }

    pub fn link_count(_meta: &fs::Metadata) -> u64 {
        1
    }
}

#[cfg(not(unix))]
pub use other::link_count;
