//! Getting fashion-mnist through the Debian archive: package `dataset-fashion-mnist`
//! (0.0~git20200523.55506a9-1 in bookworm) installs the four upstream IDX `.gz`
//! files under /usr/share/datasets/fashion-mnist/. Without it installed, we
//! `apt-get download` the .deb into the user cache and unpack it with
//! `dpkg-deb -x`; neither needs root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cache::user_cache_dir;
use super::error::{DataError, Result};
use super::mnist::{find_standard_files, load_fashion_dir};

pub const FASHION_PACKAGE: &str = "dataset-fashion-mnist";
pub const FASHION_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Where the package puts the files, relative to the root it is unpacked into.
const FASHION_IN_PACKAGE: &str = "usr/share/datasets/fashion-mnist";

/// `$XDG_CACHE_HOME/sskernel/debian/dataset-fashion-mnist` (or under `~/.cache`).
pub fn fashion_cache_root() -> Option<PathBuf> {
    user_cache_dir().map(|c| c.join("sskernel").join("debian").join(FASHION_PACKAGE))
}

/// Directory holding the four fashion-mnist files, downloading them if needed;
/// not yet verified.
pub fn locate_fashion() -> Result<PathBuf> {
    let root = fashion_cache_root().ok_or_else(|| {
        DataError::NothingToFetch(
            "neither XDG_CACHE_HOME nor HOME is set: no cache directory to download \
             dataset-fashion-mnist into"
                .into(),
        )
    })?;
    locate_fashion_in(Path::new(FASHION_SYSTEM_DIR), &root)
}

/// `system` if it holds the four files, else `cache_root/extracted/...` if a
/// previous download did, else download and unpack there.
pub fn locate_fashion_in(system: &Path, cache_root: &Path) -> Result<PathBuf> {
    if find_standard_files(system).is_ok() {
        return Ok(system.to_path_buf());
    }
    let extracted = cache_root.join("extracted");
    let dir = extracted.join(FASHION_IN_PACKAGE);
    if find_standard_files(&dir).is_ok() {
        return Ok(dir);
    }
    let deb = download_deb(&cache_root.join("deb"))?;
    unpack_deb(&deb, &extracted)?;
    find_standard_files(&dir)?;
    Ok(dir)
}

/// Downloads fashion-mnist if needed, verifies the four files (IDX checks and
/// sha256 of the decompressed bytes) and returns their directory.
pub fn fetch_fashion() -> Result<PathBuf> {
    let dir = locate_fashion()?;
    load_fashion_dir(&dir, true)?;
    Ok(dir)
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| DataError::Command {
        command: shown.clone(),
        detail: format!(
            "could not start it: {e} (fashion-mnist is fetched with Debian's apt tools)"
        ),
    })?;
    if !out.status.success() {
        return Err(DataError::Command {
            command: shown,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// `apt-get download` into `dir`; returns the .deb's path.
fn download_deb(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    eprintln!(
        "downloading {FASHION_PACKAGE} with apt-get into {}",
        dir.display()
    );
    run(Command::new("apt-get")
        .args(["download", FASHION_PACKAGE])
        .current_dir(dir))?;
    let prefix = format!("{FASHION_PACKAGE}_");
    let entries = fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut debs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .collect();
    debs.sort();
    debs.pop().ok_or_else(|| DataError::Missing {
        what: format!("the .deb after apt-get download in {}", dir.display()),
        looked_for: vec![dir.join(format!("{prefix}*.deb"))],
    })
}

/// `dpkg-deb -x` into a temp dir beside `dest`, then rename, so `dest` is complete
/// or absent.
fn unpack_deb(deb: &Path, dest: &Path) -> Result<()> {
    let tmp = crate::atomic_file::temp_path(dest);
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))?;
    let _ = fs::remove_dir_all(dest);
    fs::rename(&tmp, dest).map_err(|e| DataError::io(dest, e))
}
