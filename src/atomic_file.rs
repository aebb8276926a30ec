//! Files that are complete or absent: written to a temporary name beside the
//! target, flushed to disk, then renamed over it. The one owner of that procedure
//! (run outputs, checkpoints, the kernel cache, the data caches).

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh name beside `target` (`.NAME.tmp.PID.N`): unique across processes (the
/// pid) and across threads of this one (a counter), so concurrent writers of the
/// same target never share a temporary file.
pub fn temp_path(target: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".{name}.tmp.{}.{n}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename. On error
/// the temporary file is removed and `path` is left as it was.
pub fn write_io(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = std::fs::File::create(&tmp)
        .and_then(|mut file| {
            let (head, tail) = bytes.split_at(bytes.len() / 2);
            file.write_all(head)?;
            crate::crash::point("write");
            file.write_all(tail)?;
            file.sync_all()
        })
        .and_then(|_| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_io`] with an error that names the file.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    write_io(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Pretty JSON and a final newline, written atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_unique_and_beside_the_target() {
        let target = Path::new("/some/dir/conv.sm_90.cubin");
        let (a, b) = (temp_path(target), temp_path(target));
        assert_ne!(a, b);
        assert_eq!(a.parent(), target.parent());
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".conv.sm_90.cubin.tmp."));
    }

    #[test]
    fn concurrent_writers_of_one_file_leave_one_whole_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        // Eight threads write different sizes of the same file at once; each
        // write is whole, so the file ends as exactly one of them.
        std::thread::scope(|s| {
            for k in 1..=8u8 {
                let path = &path;
                s.spawn(move || write(path, &vec![k; 100_000 * k as usize]).unwrap());
            }
        });
        let bytes = std::fs::read(&path).unwrap();
        let k = bytes[0];
        assert_eq!(bytes.len(), 100_000 * k as usize);
        assert!(bytes.iter().all(|&b| b == k));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_names_the_file_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("x.json");
        let err = format!("{:#}", write(&path, b"{}").unwrap_err());
        assert!(err.contains("missing-dir"), "{err}");
    }
}
