//! Gathering every row of a 100k × 512 float32 X (205 MB), batch by batch, leaves X
//! in its memory map (the claim in `data::features`).
//!
//! What the peak resident set (VmHWM) holds: the pages of X's map that gathering
//! touched (file-backed, clean, so the kernel may drop them under pressure and
//! re-read them on the next touch), about X's size once every row was read, plus a
//! few MB of the process. A copy of X, even a transient one, would add its 205 MB
//! of anonymous memory on top: 410 MB or more. So the bound of 300 MB fails on any
//! copy and passes on the map alone.

use std::fs::File;
use std::io::{BufWriter, Write};

use sskernel::data::features::{load_features, SplitSpec};
use sskernel::data::npy::encode;
use sskernel::data::tasks::parse_task_flag;

const ROWS: usize = 100_000;
const DIM: usize = 512;
const BATCH: usize = 100;

fn value(r: usize, c: usize) -> f32 {
    ((r * 31 + c) % 1000) as f32 / 1000.0
}

/// kB fields of /proc/self/status (VmHWM: peak resident set), Linux only.
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn gathering_every_row_keeps_x_mapped_not_copied() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.csv"));
    // Written row by row, so writing does not raise the peak either.
    let mut w = BufWriter::new(File::create(&x).unwrap());
    w.write_all(&encode("<f4", &[ROWS, DIM], &[])).unwrap();
    for r in 0..ROWS {
        for c in 0..DIM {
            w.write_all(&value(r, c).to_le_bytes()).unwrap();
        }
    }
    w.into_inner().unwrap().sync_all().unwrap();
    let mut w = BufWriter::new(File::create(&y).unwrap());
    writeln!(w, "y").unwrap();
    for r in 0..ROWS {
        writeln!(w, "{}", r % 7).unwrap();
    }
    drop(w);

    let before = status_kb("VmHWM:");
    let tasks = [parse_task_flag("y:regression").unwrap()];
    let data = load_features(&x, &y, &tasks, SplitSpec::Auto, 0).unwrap();
    let mut out = vec![0f32; BATCH * DIM];
    let mut checked = 0;
    for start in (0..ROWS).step_by(BATCH) {
        let idx: Vec<usize> = (start..start + BATCH).collect();
        data.inputs.gather(&idx, &mut out);
        let (r, c) = (start + 37, (start / BATCH) % DIM);
        assert_eq!(out[37 * DIM + c], value(r, c));
        checked += 1;
    }
    assert_eq!(checked, ROWS / BATCH);

    let Some(peak) = status_kb("VmHWM:") else {
        eprintln!("no /proc/self/status: peak RSS not measured");
        return;
    };
    let kb = |f| status_kb(f).map_or("?".into(), |v| format!("{} MB", v / 1000));
    eprintln!(
        "X {} MB; peak RSS before load {} MB, after gathering all rows {} MB \
         (now: anon {}, file {}, shmem {})",
        ROWS * DIM * 4 / 1_000_000,
        before.unwrap_or(0) / 1000,
        peak / 1000,
        kb("RssAnon:"),
        kb("RssFile:"),
        kb("RssShmem:"),
    );
    assert!(peak < 300_000, "peak RSS {peak} kB: was X copied?");
}
