//! The CUDA path without a GPU: `sskernel kernels compile` compiles every kernel
//! with NVRTC from the PyPI wheel nvidia-cuda-nvrtc-cu12 (installed into .venv by
//! scripts/python-venv.sh, found through LD_LIBRARY_PATH) for sm_80 and sm_90 and
//! must report every kernel with no spills, in both variants (f32, and TF32 with
//! `SSKERNEL_TF32=1`); and the device flags say plainly what
//! is missing where there is no GPU.

mod common;

use sskernel::backend::cuda::{nvrtc, Cuda};
use sskernel::backend::kernels::KERNELS;
use sskernel::backend::ops::*;
use std::path::PathBuf;
use std::process::{Command, Output};

fn sskernel(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sskernel"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The wheel's lib directory (holds libnvrtc.so.12 and libnvrtc-builtins.so.12.9).
fn wheel_lib_dir() -> Option<PathBuf> {
    let py = common::python("nvidia.cuda_nvrtc", "nvrtc_compile")?;
    let o = Command::new(&py)
        .args([
            "-c",
            "import nvidia.cuda_nvrtc as m; print(list(m.__path__)[0])",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("lib");
    assert!(
        dir.join("libnvrtc.so.12").is_file(),
        "no libnvrtc.so.12 in {}",
        dir.display()
    );
    Some(dir)
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90_without_spills() {
    let Some(lib) = wheel_lib_dir() else {
        return;
    };
    let f32_names = compile_all(&lib, false);
    let tf32_names = compile_all(&lib, true);
    // The TF32 variant has its own cache key: no file name is shared.
    assert!(f32_names.iter().all(|n| !tf32_names.contains(n)));
}

/// `sskernel kernels compile --arch sm_80,sm_90` (the TF32 variant when `tf32`):
/// every kernel reported with no spills, every cubin cached. Returns the cached
/// file names.
fn compile_all(lib: &std::path::Path, tf32: bool) -> Vec<String> {
    let cache = tempfile::tempdir().unwrap();
    let o = sskernel(
        &["kernels", "compile", "--arch", "sm_80,sm_90"],
        &[
            ("LD_LIBRARY_PATH", lib.to_str().unwrap()),
            ("SSKERNEL_KERNEL_CACHE", cache.path().to_str().unwrap()),
            ("SSKERNEL_TF32", if tf32 { "1" } else { "0" }),
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    println!("{stdout}");
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.contains("-DSSK_TF32"), tf32, "{stdout}");
    assert!(
        stdout.starts_with("NVRTC 12.") && stdout.contains("libnvrtc.so.12"),
        "{stdout}"
    );
    // Rows: arch file kernel regs smem stack spill-stores spill-loads.
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 8 && f[0].starts_with("sm_"))
        .collect();
    for arch in ["sm_80", "sm_90"] {
        for k in KERNELS {
            let row = rows
                .iter()
                .find(|r| r[0] == arch && r[1] == k.file && r[2] == k.name)
                .unwrap_or_else(|| panic!("{arch} {} {}: not reported\n{stdout}", k.file, k.name));
            let n = |i: usize| -> u32 { row[i].parse().unwrap() };
            assert!(n(3) > 0, "{arch} {}: 0 registers?", k.name);
            assert_eq!(
                (n(6), n(7)),
                (0, 0),
                "{arch} {}: spills ({} bytes stored, {} loaded)",
                k.name,
                n(6),
                n(7)
            );
            assert_eq!(row.len(), 8, "{arch} {}: flagged: {row:?}", k.name);
        }
    }
    assert_eq!(rows.len(), 2 * KERNELS.len(), "{stdout}");
    // The cubins went to the cache: one per kernel file and architecture.
    let cubins: Vec<String> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cubin"))
        .collect();
    assert_eq!(cubins.len(), 2 * nvrtc::kernel_files().count());
    cubins
}

#[test]
fn kernels_compile_without_libnvrtc_says_so() {
    if nvrtc::nvrtc_version().is_ok() {
        eprintln!("libnvrtc is on this machine's loader path: nothing to check");
        return;
    }
    let o = sskernel(&["kernels", "compile", "--arch", "sm_90"], &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("libnvrtc not found on the loader path")
            && stderr.contains("LD_LIBRARY_PATH"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let o = sskernel(&["kernels", "compile", "--arch", "compute_90"], &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("not a GPU architecture like sm_80"),
        "{stderr}"
    );
}

#[test]
fn device_flags_without_a_gpu_say_why() {
    // --device cuda explains in full; --device auto gives the short reason only.
    let (reason, short_reason) = match Cuda::new() {
        Ok(dev) => {
            eprintln!("a CUDA device is here ({}): nothing to check", dev.name());
            return;
        }
        Err(e) => (format!("{e:#}"), format!("{e}")),
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |device: &str| {
        let out = dir.path().join(device);
        sskernel(
            &[
                "train",
                "mnist",
                "--mode",
                "stl",
                "--epochs",
                "1",
                "--max-steps",
                "1",
                "--device",
                device,
                "--out",
                out.to_str().unwrap(),
            ],
            &[],
        )
    };
    let o = run("cuda");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "--device cuda succeeded: {stderr}");
    assert!(
        stderr.contains(&format!(
            "--device cuda: no CUDA backend available: {reason}"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let o = run("auto");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("--device auto: picked cpu ({short_reason})")),
        "{stderr}"
    );
    assert!(dir.path().join("auto/checkpoint.safetensors").is_file());
}

/// A compile error names the file and the line and carries NVRTC's log.
#[test]
fn compile_errors_name_the_file_and_line() {
    let Some(lib) = wheel_lib_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.cu");
    std::fs::write(
        &path,
        "#include \"common.cuh\"\n\
         extern \"C\" __global__ void broken(float* y) {\n    \
         y[threadIdx.x] = undefined_name;\n}\n",
    )
    .unwrap();
    let o = sskernel(
        &[
            "kernels",
            "compile",
            "--arch",
            "sm_90",
            "--source",
            path.to_str().unwrap(),
        ],
        &[("LD_LIBRARY_PATH", lib.to_str().unwrap())],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    let want = format!(
        "{}:3: error: identifier \"undefined_name\" is undefined",
        path.display()
    );
    assert!(stderr.contains(&want), "want {want}\n{stderr}");
    assert!(stderr.contains("1 error detected"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
