//! Shared by the parity tests: the Python interpreter with the reference libraries.

use std::path::PathBuf;
use std::process::Command;

/// `$SSKERNEL_PYTHON`, else the project's `.venv/bin/python`, made on first use by
/// scripts/python-venv.sh (which pins the libraries and holds a lock, so test
/// binaries running at once wait for one install). When it cannot be had: a loud
/// skip message and None, or a panic under CI, where skipping would hide the test.
pub fn python(imports: &str, who: &str) -> Option<PathBuf> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let explicit = std::env::var_os("SSKERNEL_PYTHON").map(PathBuf::from);
    let py = explicit
        .clone()
        .unwrap_or_else(|| repo.join(".venv/bin/python"));
    let can_import = || {
        Command::new(&py)
            .args(["-c", &format!("import {imports}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if can_import() {
        return Some(py);
    }
    let mut why = String::new();
    if explicit.is_none() {
        match Command::new("bash")
            .arg(repo.join("scripts/python-venv.sh"))
            .output()
        {
            Ok(o) if o.status.success() && can_import() => return Some(py),
            Ok(o) => why = String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => why = e.to_string(),
        }
    }
    let msg = format!(
        "{who}: no Python that can `import {imports}` at {} (scripts/python-venv.sh: {why})",
        py.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
    None
}
