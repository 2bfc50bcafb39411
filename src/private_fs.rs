//! Files and directories keygate creates are owner-only: files 0600, directories 0700.
//!
//! The mode is given to `open(2)` / `mkdir(2)` at creation, never set by a `chmod`
//! afterwards, so there is no moment when another local user could open a new token, key,
//! store or audit file. (The process umask can only remove permission bits, never add
//! them, so it cannot widen these.) Existing files and directories keep their mode:
//! keygate does not change what an operator set up.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::path::Path;

/// Mode of every file keygate creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory keygate creates.
pub const DIR_MODE: u32 = 0o700;

/// `OpenOptions` that create a file owner-only (the caller sets read/write/create/append).
pub fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(FILE_MODE);
    }
    o
}

/// `create_dir_all` creating every missing directory owner-only. An empty path (the
/// current directory) is left alone.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let mut b = DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(DIR_MODE);
    }
    b.create(dir)
}

/// Writes `contents` to `path`, replacing what it holds; a new file is created owner-only.
pub fn write(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(contents)?;
    f.flush()
}

/// Refuses a key file others can read (any group or other permission bit): `what` names
/// it in the error ("the App's private key").
pub fn check_owner_only(path: &Path, what: &str) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} can be read by others (mode {:o}): {what} must be readable by its owner only (chmod 600)",
                path.display(),
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_files_and_directories_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        let file = deep.join("f");
        write(&file, b"x").unwrap();
        for (p, want) in [
            (dir.path().join("a"), DIR_MODE),
            (dir.path().join("a/b"), DIR_MODE),
            (deep.clone(), DIR_MODE),
            (file.clone(), FILE_MODE),
        ] {
            assert_eq!(mode(&p), want, "{}", p.display());
        }
        // An existing directory is left as it is.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir_all(dir.path()).unwrap();
        assert_eq!(mode(dir.path()), 0o755);
    }
}
