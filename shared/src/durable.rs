//! The fsyncs sled 0.34 does not do, and directory creation that survives a power cut.
//!
//! Why this exists: sled's flush syncs only its `db` file. A log record over a quarter of its
//! segment size (one large value, or a consolidated page of many) goes to its own file under
//! `blobs/`, written and never fsync'd, and no directory entry sled creates (`conf`, `db`,
//! `blobs/`, the blob files, snapshots) is ever synced. A kill -9 cannot show that (the page cache
//! survives it); a power cut can lose an event answered 200, or leave a page pointing at a blob
//! that is not there. [`SledFiles`] closes that gap for any sled database (the queue and the
//! worker's state), and [`create_dir_all`] makes new directories' entries durable.
//!
//! Checked by `tests/tests/durability.rs`, which reads the system calls under `strace -f`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// fsyncs the directory `dir` itself: what makes the entries created in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io::Error::new(e.kind(), format!("fsync directory {}: {e}", dir.display())))
}

/// The directory holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `std::fs::create_dir_all`, then fsyncs the parent of every directory it created (outermost
/// first), so a crash cannot lose the new entries. Returns whether `path` was created.
pub fn create_dir_all(path: &Path) -> io::Result<bool> {
    // The missing ancestors, innermost first.
    let mut missing = Vec::new();
    let mut cur = Some(path);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() || p.exists() {
            break;
        }
        missing.push(p.to_path_buf());
        cur = p.parent();
    }
    if missing.is_empty() {
        return Ok(false);
    }
    std::fs::create_dir_all(path)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
    for dir in missing.iter().rev() {
        sync_dir(parent_of(dir))?;
    }
    Ok(true)
}

/// After a directory (or file) `path` was created by other means (`DirBuilder` with a mode,
/// `rename`), makes its entry durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    sync_dir(parent_of(path))
}

/// The files of one sled database directory that sled does not sync: call
/// [`SledFiles::sync_new`] after every `flush()` and before answering for what it flushed.
pub struct SledFiles {
    dir: PathBuf,
    blobs: PathBuf,
    /// Names seen (and synced) in `dir` and in `blobs/`.
    seen: Mutex<(HashSet<OsString>, HashSet<OsString>)>,
}

impl SledFiles {
    /// Right after `sled::Config::open` on `dir`: fsyncs `conf`, `db`, every existing blob and
    /// snapshot, `blobs/` and `dir`, so nothing sled created so far can be lost.
    pub fn after_open(dir: &Path) -> io::Result<SledFiles> {
        let files = SledFiles {
            dir: dir.to_path_buf(),
            blobs: dir.join("blobs"),
            seen: Mutex::new((HashSet::new(), HashSet::new())),
        };
        files.sync_new()?;
        Ok(files)
    }

    /// fsyncs every file in the database directory and in `blobs/` not synced by an earlier
    /// call, then each directory whose entries changed. One `readdir` of each per call: cheap
    /// when sled writes no blobs, which is how the queue keeps its records.
    pub fn sync_new(&self) -> io::Result<()> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (top, blobs) = &mut *seen;
        // The blob files first: a page that points at one must never be durable without it.
        if sync_changed(&self.blobs, blobs, true)? {
            sync_dir(&self.blobs)?;
        }
        // `conf`, snapshots and `db` itself (sled's flush syncs `db`'s data, not its entry).
        if sync_changed(&self.dir, top, false)? {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// fsyncs the regular files of `dir` not in `seen` (all of them when `all_files`, else only those
/// sled writes once and never syncs: everything but `db`, which the caller syncs), records the
/// current names in `seen`, and returns whether the set of names changed.
fn sync_changed(dir: &Path, seen: &mut HashSet<OsString>, all_files: bool) -> io::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("listing {}: {e}", dir.display()),
            ))
        }
    };
    let mut now = HashSet::with_capacity(seen.len());
    let mut changed = false;
    for entry in entries {
        let entry = entry
            .map_err(|e| io::Error::new(e.kind(), format!("listing {}: {e}", dir.display())))?;
        let name = entry.file_name();
        if !seen.contains(&name) {
            changed = true;
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if is_file && (all_files || name != "db") {
                let path = entry.path();
                match File::open(&path).and_then(|f| f.sync_all()) {
                    Ok(()) => {}
                    // sled removed it meanwhile (a blob of a rewritten page): nothing to keep.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("fsync {}: {e}", path.display()),
                        ))
                    }
                }
            }
        }
        now.insert(name);
    }
    // A removed name needs no sync: losing a removal only brings back a file nothing refers to.
    *seen = now;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_dir_all_reports_whether_it_created() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a/b/c");
        assert!(create_dir_all(&p).unwrap());
        assert!(p.is_dir());
        assert!(!create_dir_all(&p).unwrap());
    }

    #[test]
    fn sync_new_sees_new_blobs_once() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("blobs")).unwrap();
        std::fs::write(t.path().join("conf"), "x").unwrap();
        let f = SledFiles::after_open(t.path()).unwrap();
        {
            let seen = f.seen.lock().unwrap();
            assert_eq!(seen.0.len(), 2, "conf and blobs/");
            assert!(seen.1.is_empty());
        }
        std::fs::write(t.path().join("blobs/7"), "blob").unwrap();
        f.sync_new().unwrap();
        assert!(f.seen.lock().unwrap().1.contains(&OsString::from("7")));
        std::fs::remove_file(t.path().join("blobs/7")).unwrap();
        f.sync_new().unwrap();
        assert!(f.seen.lock().unwrap().1.is_empty());
    }
}
