//! Runs that survive a crash, a kill or Ctrl-C: `--resume runs/NAME` continues a run
//! from its last checkpoint with the same result as if it had never stopped (bit
//! for bit on the CPU).
//!
//! The last checkpoint is the run's one commit point. It holds the model, every
//! optimiser state, Selective Sharing's capture, the training split's order and,
//! in its metadata, the [`Position`]: no timings, so an interrupted run's last
//! checkpoint is byte-identical to an uninterrupted one's. What the run writes
//! before the commit (its `log.jsonl` line, `grouping.json`, `best.safetensors`)
//! is cut back to the checkpoint's epoch on resume, so a kill between two writes
//! leaves nothing out of step.

use super::{checkpoint, Tally};
use crate::atomic_file::write_json;
use crate::backend::Backend;
use crate::model::Branched;
use crate::sharing::selective::{Decision, Sharing, SharingState};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a run stands at a checkpoint, besides its tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Position {
    /// The epoch in progress (1-based); the run has logged the epochs before it.
    pub epoch: usize,
    /// Batches of `epoch` trained; 0: the epoch's order is not drawn yet.
    pub batch: usize,
    /// Optimiser steps of the whole run.
    pub steps: usize,
    /// The epoch's running totals so far.
    pub tally: Tally,
    /// The best-validation epoch so far.
    pub best_epoch: Option<usize>,
    /// The data-order generator's position (ChaCha8 words drawn, a u128 in decimal;
    /// filled in when saved).
    pub order_rng: String,
    /// Selective Sharing's state (its decisions are in grouping.json).
    pub sharing: Option<SharingState>,
}

impl Position {
    pub fn start(tasks: usize) -> Self {
        Self {
            epoch: 1,
            batch: 0,
            steps: 0,
            tally: Tally::new(tasks),
            best_epoch: None,
            order_rng: String::new(),
            sharing: None,
        }
    }

    /// The next epoch, not started.
    pub fn next_epoch(&mut self, tasks: usize) {
        self.epoch += 1;
        self.batch = 0;
        self.tally = Tally::new(tasks);
    }

    /// The metadata of a resumable checkpoint: `about` (epochs finished, steps, spec) with
    /// this position under `resume`, the generator's position filled in.
    pub fn about(
        &self,
        spec: &impl Serialize,
        rng: &ChaCha8Rng,
        sharing: Option<SharingState>,
    ) -> serde_json::Value {
        let position = Self {
            order_rng: rng.get_word_pos().to_string(),
            sharing,
            ..self.clone()
        };
        serde_json::json!({
            "epoch": self.epoch - 1,
            "steps": self.steps,
            "spec": spec,
            "resume": position,
        })
    }

    /// The position in a checkpoint's metadata; `rng` (seeded as the run seeds it
    /// and past the model's initialisation) moves to the saved position.
    pub fn from_about(
        about: &serde_json::Value,
        rng: &mut ChaCha8Rng,
        path: &Path,
    ) -> Result<Self> {
        let position: Self =
            serde_json::from_value(about["resume"].clone()).with_context(|| {
                format!(
                    "{}: not a resumable checkpoint (no training position in its metadata)",
                    path.display()
                )
            })?;
        let words: u128 = position.order_rng.parse().with_context(|| {
            format!(
                "{}: order_rng {:?} is not a number",
                path.display(),
                position.order_rng
            )
        })?;
        rng.set_word_pos(words);
        Ok(position)
    }
}

/// Refuses to resume with other settings than the run's: `old` (the run's
/// config.json) and `new` must agree in every field but those that only say how
/// long, where or by which build it runs.
pub fn check_same_settings(
    old: &serde_json::Value,
    new: &serde_json::Value,
    run: &Path,
) -> Result<()> {
    const MAY_DIFFER: [&str; 6] = [
        "config.epochs",
        "config.max_steps",
        "config.device",
        "config.out",
        "config.checkpoints",
        "versions",
    ];
    let mut differ = Vec::new();
    compare("", old, new, &MAY_DIFFER, &mut differ);
    if !differ.is_empty() {
        bail!(
            "cannot resume {}: the run was made with other settings — {}; pass the run's \
             settings (only --epochs, --max-steps, --device and --checkpoint-every may change)",
            run.display(),
            differ.join("; "),
        );
    }
    Ok(())
}

/// Appends to `differ` "NAME was A, now B" for every leaf where `old` and `new`
/// differ, NAME the dotted path, skipping the paths `may_differ`.
fn compare(
    name: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
    may_differ: &[&str],
    differ: &mut Vec<String>,
) {
    use serde_json::Value::{Null, Object};
    if may_differ.contains(&name) {
        return;
    }
    match (old, new) {
        (Object(a), Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (x, y) = (a.get(k).unwrap_or(&Null), b.get(k).unwrap_or(&Null));
                let path = if name.is_empty() {
                    k.clone()
                } else {
                    format!("{name}.{k}")
                };
                compare(&path, x, y, may_differ, differ);
            }
        }
        (a, b) if a != b => differ.push(format!("{name} was {a}, now {b}")),
        _ => {}
    }
}

/// The first `epochs` lines of the run's log (the epochs the checkpoint has seen),
/// parsed; the file is cut back to them.
pub fn restore_log<R: DeserializeOwned>(path: &Path, epochs: usize) -> Result<Vec<R>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot resume: cannot read {}", path.display()))?;
    let lines: Vec<&str> = text.lines().take(epochs).collect();
    if lines.len() < epochs {
        bail!(
            "cannot resume: {} has {} epochs, the checkpoint is after epoch {epochs}",
            path.display(),
            lines.len()
        );
    }
    let records = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| {
                format!("{}: line {} is not an epoch record", path.display(), i + 1)
            })
        })
        .collect::<Result<Vec<R>>>()?;
    let kept: String = lines.iter().map(|l| format!("{l}\n")).collect();
    crate::atomic_file::write(path, kept.as_bytes())?;
    Ok(records)
}

/// The decisions of `grouping.json` made before `epoch`.
pub fn restore_decisions(path: &Path, epoch: usize) -> Result<Vec<Decision>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot resume: cannot read {}", path.display()))?;
    let all: Vec<Decision> = serde_json::from_str(&text).with_context(|| {
        format!(
            "cannot resume: {} is not a list of decisions",
            path.display()
        )
    })?;
    Ok(all.into_iter().filter(|d| d.epoch < epoch).collect())
}

/// The checkpoint's order of the training split: a permutation of `split`.
pub fn check_order(order: Option<Vec<usize>>, split: &[usize], path: &Path) -> Result<Vec<usize>> {
    let order = order.with_context(|| {
        format!(
            "{}: not a resumable checkpoint (no training order)",
            path.display()
        )
    })?;
    let (mut a, mut b) = (order.clone(), split.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    if a != b {
        bail!(
            "{}: the training order ({} samples) is not an order of this run's training \
             split ({} samples)",
            path.display(),
            order.len(),
            split.len()
        );
    }
    Ok(order)
}

/// Removes the temporary files a killed writer left in the run directory.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp.") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A run stopped by SIGINT or SIGTERM, its checkpoint written: `main` prints the
/// message and exits with 130.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// From now on SIGINT and SIGTERM ask the training loop to checkpoint and stop at
/// the end of its current step; a second one stops the process at once.
pub fn catch_interrupts() {
    #[cfg(unix)]
    {
        extern "C" fn on_signal(signal: libc::c_int) {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                // SAFETY: signal and raise are async-signal-safe.
                unsafe {
                    libc::signal(signal, libc::SIG_DFL);
                    libc::raise(signal);
                }
            }
        }
        // SAFETY: the handler only stores to an atomic (or restores the default
        // disposition and re-raises), which is async-signal-safe.
        unsafe {
            let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::signal(libc::SIGINT, handler);
            libc::signal(libc::SIGTERM, handler);
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// The error that ends an interrupted run: where it stopped and the command that
/// continues it (this process's arguments with `--resume DIR` for `--out`).
pub fn interruption(out: &Path, position: &Position) -> anyhow::Error {
    let mut args: Vec<String> = Vec::new();
    let mut skip = false;
    for a in std::env::args().skip(1) {
        if std::mem::take(&mut skip) {
            continue;
        }
        match a.as_str() {
            "--out" | "--resume" => skip = true,
            _ if a.starts_with("--out=") || a.starts_with("--resume=") => {}
            _ => args.push(a),
        }
    }
    Interrupted(format!(
        "interrupted in epoch {} after step {}; the checkpoint {} holds the run. \
         Continue it with:\n  sskernel {} --resume {}",
        position.epoch,
        position.steps,
        out.join(super::checkpoint::LAST).display(),
        args.join(" "),
        out.display()
    ))
    .into()
}

/// What a training loop carries from step to step besides the model: where it
/// stands, the training split's order and the generator that shuffles it.
pub struct Progress {
    pub at: Position,
    pub order: Vec<usize>,
    pub rng: ChaCha8Rng,
    /// The run directory.
    pub out: PathBuf,
    /// `log.jsonl`, open to append.
    log: std::fs::File,
    /// The step of the last checkpoint this run wrote or resumed from.
    saved: Option<usize>,
}

impl Progress {
    /// A fresh run's start, or with `resume` the state of the last checkpoint in
    /// `out`: the model, optimiser and capture go into `net` and `sharing`, the
    /// position and order into the result, and the run's files are cut back to
    /// the checkpoint. `rng` is seeded as the run seeds it and past the model's
    /// initialisation; `order` is the training split in its initial order.
    pub fn start<B: Backend, R: DeserializeOwned>(
        (be, net, sharing): (&B, &mut impl Branched<B>, Option<&mut Sharing>),
        (mut rng, order): (ChaCha8Rng, Vec<usize>),
        out: &Path,
        resume: bool,
    ) -> Result<(Self, Vec<R>)> {
        let tasks = net.branches().task_branch.len();
        let log_path = out.join(LOG);
        let (at, order, records) = if resume {
            restore((be, net, sharing), &mut rng, order, out)?
        } else {
            std::fs::File::create(&log_path)
                .with_context(|| format!("cannot create {}", log_path.display()))?;
            (Position::start(tasks), order, Vec::new())
        };
        // Opened after a resume's cut, which replaces the file.
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let out = out.to_path_buf();
        let saved = (at.steps > 0).then_some(at.steps);
        Ok((
            Self {
                at,
                order,
                rng,
                out,
                log,
                saved,
            },
            records,
        ))
    }

    /// Starts the epoch in progress — draws its order, unless a resumed run is
    /// inside it — and returns its batches of `batch` samples left to train.
    pub fn epoch_batches(&mut self, batch: usize) -> std::ops::Range<usize> {
        if self.at.batch == 0 {
            self.order.shuffle(&mut self.rng);
        }
        self.at.batch..self.order.len().div_ceil(batch)
    }

    /// The samples of batch `b` of the epoch's order.
    pub fn batch(&self, b: usize, batch: usize) -> &[usize] {
        &self.order[b * batch..((b + 1) * batch).min(self.order.len())]
    }

    /// Appends an epoch's record to `log.jsonl`.
    pub fn log(&mut self, record: &impl Serialize) -> Result<()> {
        use std::io::Write;
        writeln!(self.log, "{}", serde_json::to_string(record)?)
            .with_context(|| format!("cannot write {}", self.out.join(LOG).display()))
    }

    /// The last good checkpoint, for the message of a run that diverged.
    pub fn last_good(&self) -> String {
        match self.saved {
            None => "none (no epoch finished, no checkpoint yet)".into(),
            Some(step) => format!(
                "{} (after step {step})",
                self.out.join(checkpoint::LAST).display()
            ),
        }
    }

    /// Writes the run's resumable checkpoint, the commit point, atomically.
    pub fn save<B: Backend>(
        &mut self,
        (be, net, sharing): (&B, &impl Branched<B>, Option<&Sharing>),
        spec: &impl Serialize,
    ) -> Result<()> {
        let about = self.at.about(spec, &self.rng, sharing.map(Sharing::state));
        let bytes = checkpoint::serialize_net(be, net, about, Some(&self.order))?;
        crate::atomic_file::write(&self.out.join(checkpoint::LAST), &bytes)?;
        self.saved = Some(self.at.steps);
        Ok(())
    }

    /// What ends the optimiser step the run has just counted: a checkpoint every
    /// `every` steps, and on SIGINT/SIGTERM a checkpoint and a stop. Decided once,
    /// here, so the caller can bring the tally up to date before
    /// [`Self::after_step`] writes it.
    pub fn step_end(&self, every: Option<usize>) -> StepEnd {
        let stop = interrupted();
        StepEnd {
            save: stop || every.is_some_and(|k| self.at.steps.is_multiple_of(k)),
            stop,
        }
    }

    /// Ends a step as `end` says: writes the checkpoint, and on a stop returns the
    /// [`Interrupted`] error.
    pub fn after_step<B: Backend>(
        &mut self,
        model: (&B, &impl Branched<B>, Option<&Sharing>),
        spec: &impl Serialize,
        end: StepEnd,
    ) -> Result<()> {
        if end.save {
            self.save(model, spec)?;
        }
        if end.stop {
            return Err(interruption(&self.out, &self.at));
        }
        Ok(())
    }

    /// After an epoch's checkpoint: the [`Interrupted`] error on SIGINT/SIGTERM.
    pub fn after_epoch(&self) -> Result<()> {
        if interrupted() {
            return Err(interruption(&self.out, &self.at));
        }
        Ok(())
    }
}

/// [`Progress::step_end`]: what follows an optimiser step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepEnd {
    /// A checkpoint is due.
    pub save: bool,
    /// SIGINT/SIGTERM: checkpoint and stop.
    pub stop: bool,
}

/// [`Progress::start`] of a resumed run: the last checkpoint's state (none yet:
/// the start), with `log.jsonl` and `grouping.json` cut back to it.
fn restore<B: Backend, R: DeserializeOwned>(
    (be, net, sharing): (&B, &mut impl Branched<B>, Option<&mut Sharing>),
    rng: &mut ChaCha8Rng,
    order: Vec<usize>,
    out: &Path,
) -> Result<(Position, Vec<usize>, Vec<R>)> {
    let path = out.join(checkpoint::LAST);
    let (at, order) = if path.exists() {
        let loaded = checkpoint::load(be, net, &path)?;
        let at = Position::from_about(&loaded.about, rng, &path)?;
        (at, check_order(loaded.order, &order, &path)?)
    } else {
        // Killed before its first checkpoint: nothing is committed yet.
        (Position::start(net.branches().task_branch.len()), order)
    };
    let records = restore_log(&out.join(LOG), at.epoch - 1)?;
    if let Some(sharing) = sharing {
        if let Some(state) = &at.sharing {
            let grouping = out.join(GROUPING);
            sharing.restore(state, restore_decisions(&grouping, at.epoch)?)?;
            write_json(&grouping, &sharing.decisions)?;
        } else if at.steps > 0 {
            bail!(
                "{}: a selective run's checkpoint without its sharing state",
                path.display()
            );
        }
    }
    println!(
        "resuming {} at epoch {}, step {} (batch {} of the epoch)",
        out.display(),
        at.epoch,
        at.steps,
        at.batch
    );
    Ok((at, order, records))
}

/// The run directory's files that `--resume` cuts back to the checkpoint.
pub const LOG: &str = "log.jsonl";
pub const GROUPING: &str = "grouping.json";

/// Makes the run directory and writes `config.json`; with `resume`, first checks
/// that `config` agrees with the run's own and clears what a killed writer left.
pub fn open_run(out: &Path, config: &serde_json::Value, resume: bool) -> Result<()> {
    let config_path = out.join("config.json");
    if resume {
        let text = std::fs::read_to_string(&config_path).with_context(|| {
            format!(
                "cannot resume {}: cannot read {}",
                out.display(),
                config_path.display()
            )
        })?;
        let old: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", config_path.display()))?;
        check_same_settings(&old, config, out)?;
        remove_stale_temporaries(out);
    } else {
        std::fs::create_dir_all(out)
            .with_context(|| format!("cannot create the run directory {}", out.display()))?;
    }
    write_json(&config_path, config)
}
