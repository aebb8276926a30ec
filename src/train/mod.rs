//! The training loop: seeded shuffling, batches, forward/loss/backward/step,
//! per-epoch evaluation, logs and checkpoints in `runs/NAME/` (DESIGN.md §8).

pub mod checkpoint;
pub mod hetero;
pub mod metrics;
mod progress;
pub mod reproduce;
pub mod resume;
pub mod split;

pub use crate::run::{EpochRecord, RunSummary, TrainConfig};
pub use split::{tally_logged, DeviceSplit, Diverged};

use crate::atomic_file::{write as write_atomically, write_json};
use crate::backend::profile::phase;
use crate::backend::{Backend, OptimStep};
use crate::data::{Dataset, Split};
use crate::model::{Activations, Branched, Mode, Net, NetSpec, StepProgram};
use crate::sharing::selective::{task_groups, Sharing, StepTimes};
use anyhow::{Context, Result};
use metrics::Evaluation;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use resume::Progress;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A dataset split turned into network inputs once: pixel/255 as f32.
pub struct Inputs<'a> {
    pub split: &'a Split,
    pub pixels: Vec<f32>,
}

impl<'a> Inputs<'a> {
    pub fn new(split: &'a Split) -> Self {
        let pixels = split.images.iter().map(|&b| b as f32 / 255.0).collect();
        Self { split, pixels }
    }

    pub fn len(&self) -> usize {
        self.split.len()
    }

    pub fn is_empty(&self) -> bool {
        self.split.is_empty()
    }

    /// Copies samples `indices` into the host staging buffers: images
    /// `[n, H·W]` and one-hot targets `[n, classes]`.
    pub fn gather(
        &self,
        indices: &[usize],
        classes: usize,
        images: &mut Vec<f32>,
        targets: &mut Vec<f32>,
    ) {
        let size = self.split.image_len();
        images.clear();
        targets.clear();
        targets.resize(indices.len() * classes, 0.0);
        for (row, &i) in indices.iter().enumerate() {
            images.extend_from_slice(&self.pixels[i * size..(i + 1) * size]);
            targets[row * classes + self.split.labels[i] as usize] = 1.0;
        }
    }
}

/// Selective Sharing's end-of-epoch step, when the run has one: decides (and says
/// what it decided), then rewrites `grouping.json`. Returns the step's time and
/// where it went when a grouping ran.
pub(crate) fn sharing_step<B: Backend>(
    sharing: Option<&mut Sharing>,
    be: &B,
    net: &mut impl Branched<B>,
    (epoch, tally): (usize, &Tally),
    out: &Path,
) -> Result<Option<(f64, StepTimes)>> {
    let Some(sharing) = sharing else {
        return Ok(None);
    };
    let times = sharing
        .end_epoch(be, net, epoch, &tally.task_loss)?
        .map(|d| {
            println!("{}", progress::decision_line(d));
            (d.seconds, d.breakdown)
        });
    write_json(&out.join("grouping.json"), &sharing.decisions)?;
    Ok(times)
}

/// One epoch's running totals of the training steps.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    /// Per task: the sum over steps of its batch loss (Selective Sharing's
    /// kept-branch rule reads it).
    pub task_loss: Vec<f64>,
    pub loss_sum: f64,
    pub batches: usize,
    pub samples: usize,
}

impl Tally {
    pub fn new(tasks: usize) -> Self {
        Self {
            task_loss: vec![0.0; tasks],
            loss_sum: 0.0,
            batches: 0,
            samples: 0,
        }
    }

    /// Adds a step of `n` samples with these task losses; returns the batch loss
    /// (their sum).
    pub fn add(&mut self, losses: &[f64], n: usize) -> f64 {
        for (sum, &l) in self.task_loss.iter_mut().zip(losses) {
            *sum += l;
        }
        let batch_loss: f64 = losses.iter().sum();
        self.loss_sum += batch_loss;
        self.batches += 1;
        self.samples += n;
        batch_loss
    }

    /// Mean over the epoch's batches of the batch loss.
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.batches as f64
    }
}

/// Trains `net` on `data` as `cfg` says, writing everything to `cfg.out`; with
/// `cfg.checkpoints.resume`, continues the run there from its last checkpoint.
pub fn train<B: Backend>(be: &B, cfg: &TrainConfig, data: &Dataset) -> Result<RunSummary> {
    resume::open_run(&cfg.out, &config_json(cfg, data), cfg.checkpoints.resume)?;

    let mut spec = NetSpec::mnist(cfg.mode, data.classes);
    if cfg.sharing.as_ref().is_some_and(|s| s.independent_branches) {
        spec.identical_branches = false;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut net = Net::new(be, spec, &mut rng);
    let mut act = Activations::new(be, &net.spec, cfg.batch);
    let mut sharing = cfg
        .sharing
        .clone()
        .map(|sc| Sharing::start(sc, cfg.seed, be, &mut net));
    let step = OptimStep::Sgd {
        lr: cfg.lr,
        momentum: cfg.momentum,
    };
    let train = Inputs::new(&data.train);
    let val = Inputs::new(&data.val);
    let test = Inputs::new(&data.test);
    let (mut run, mut records): (Progress, Vec<EpochRecord>) = Progress::start(
        (be, &mut net, sharing.as_mut()),
        (rng, (0..train.len()).collect()),
        &cfg.out,
        cfg.checkpoints.resume,
    )?;
    // The optimiser's step counter (on the device) continues a resumed run's.
    net.step_state(be).set_steps(be, run.at.steps);
    println!(
        "sskernel: {} {} on {} — {} trainable parameters, branches: {}, train/val/test {}/{}/{}",
        data.name,
        cfg.mode.name(),
        cfg.device,
        net.param_count(),
        net.spec.branches,
        data.train.len(),
        data.val.len(),
        data.test.len()
    );

    let mut split = DeviceSplit::new(
        be,
        &train,
        net.spec.classes,
        be.buf_len(&act.loss),
        cfg.batch,
    );
    let mut val = metrics::EvalSplit::new(be, &val, net.spec.classes, cfg.batch);
    let mut test = metrics::EvalSplit::new(be, &test, net.spec.classes, cfg.batch);
    // The step as one recorded launch program on kernel devices; profiling times
    // each op, so it launches them one by one.
    let eager = cfg.eager || crate::backend::profile::is_on();
    let mut program = StepProgram::default();
    let tasks = net.spec.tasks;
    let max_steps_reached = |steps: usize| cfg.max_steps.is_some_and(|max| steps >= max);
    // A diverged run stops before a non-finite model is evaluated or checkpointed:
    // the last checkpoint stays the last good one.
    let diverged = |d: Diverged, epoch: usize, run: &Progress| {
        anyhow::anyhow!(
            "the training loss became {} at epoch {epoch}, step {} (the run diverged: lower \
             --lr); last good checkpoint: {}",
            d.value,
            d.step,
            run.last_good()
        )
    };
    while run.at.epoch <= cfg.epochs {
        let epoch = run.at.epoch;
        let batches = run.epoch_batches(cfg.batch);
        let bar = progress::EpochBar::new(epoch, cfg.epochs, batches.end);
        let started = Instant::now();
        let samples_before = run.at.tally.samples;
        split.start_epoch(be, &run.order, batches.start);
        for b in batches {
            if max_steps_reached(run.at.steps) {
                break;
            }
            let n = run.batch(b, cfg.batch).len();
            let key = (n, net.branches.task_branch.clone());
            let mut one_step = || {
                phase("data").run(|| split.gather(be, n, &mut act.x, &mut act.targets));
                net.train_step(be, &mut act, n, &step);
                split.advance(be, n, &act.loss);
            };
            if eager {
                one_step();
            } else {
                // SAFETY: the same net, activations and split for the whole run
                // (written in place between epochs); the programs are forgotten
                // after a sharing step that may prune or restart the capture
                // (reallocating buffers).
                unsafe { program.run(be, key, &mut one_step) };
            }
            crate::crash::point("step");
            run.at.steps += 1;
            run.at.batch += 1;
            // The losses stay on the device until the bar is due or a checkpoint
            // records the tally.
            let end = run.step_end(cfg.checkpoints.every);
            if end.save || split.read_due() {
                tally_logged(be, &mut split, &mut run, &bar)
                    .map_err(|d| diverged(d, epoch, &run))?;
            }
            let model = (be, &net, sharing.as_ref());
            phase("checkpoint").run(|| run.after_step(model, &net.spec, end))?;
        }
        tally_logged(be, &mut split, &mut run, &bar).map_err(|d| diverged(d, epoch, &run))?;
        let seconds = started.elapsed().as_secs_f64();
        bar.finish();
        let tally = &run.at.tally;
        if tally.batches == 0 {
            break;
        }

        // Selective Sharing decides before evaluation, so the log and the
        // checkpoint describe the same (possibly merged) model.
        // The recorded step points into the branch buffers: a prune (fewer branches)
        // reallocates them and the lock drops the capture. Otherwise — no grouping
        // change; the capture restarts in place — the step program stays valid.
        let layout = |net: &Net<B>, sharing: &Option<Sharing>| {
            let locked = sharing.as_ref().is_some_and(|s| s.locked());
            (net.branches.count(), locked)
        };
        let before = layout(&net, &sharing);
        let sharing_times = phase("sharing")
            .run(|| sharing_step(sharing.as_mut(), be, &mut net, (epoch, tally), &cfg.out))?;
        if layout(&net, &sharing) != before {
            program.forget();
        }
        let groups =
            (net.spec.tasks > 1).then(|| task_groups(&net.branches.task_branch, net.spec.branches));

        let (val_eval, test_eval) = phase("evaluation").run(|| {
            let val_eval = metrics::evaluate(be, &mut net, &mut act, &mut val, cfg.batch);
            (
                val_eval,
                metrics::evaluate(be, &mut net, &mut act, &mut test, cfg.batch),
            )
        });
        let record = EpochRecord {
            epoch,
            steps: run.at.steps,
            train_loss: tally.mean_loss(),
            val_acc: val_eval.accuracy,
            test_acc: test_eval.accuracy,
            val_task_acc: val_eval.task_accuracy,
            test_task_acc: test_eval.task_accuracy,
            params: net.param_count(),
            branches: net.spec.branches,
            task_groups: groups,
            locked: sharing.as_ref().map(|s| s.locked()),
            sharing_seconds: sharing_times.map(|t| t.0),
            sharing_breakdown: sharing_times.map(|t| t.1),
            seconds,
            images_per_s: (tally.samples - samples_before) as f64 / seconds,
            device: cfg.device.clone(),
        };
        println!("{}", progress::epoch_line(&record, cfg.epochs));
        run.log(&record)?;
        // The best model first: the last checkpoint is the commit point.
        // Ties keep the earlier epoch.
        let best = run.at.best_epoch.map(|e| &records[e - 1]);
        if best.is_none_or(|b| record.val_acc > b.val_acc) {
            let model = checkpoint::serialize(be, &net, epoch, run.at.steps)?;
            write_atomically(&cfg.out.join(checkpoint::BEST), &model)?;
            run.at.best_epoch = Some(epoch);
        }
        records.push(record);
        run.at.next_epoch(tasks);
        phase("checkpoint").run(|| run.save((be, &net, sharing.as_ref()), &net.spec))?;
        run.after_epoch()?;
        if max_steps_reached(run.at.steps) {
            break;
        }
    }

    let best = run
        .at
        .best_epoch
        .map(|e| &records[e - 1])
        .context("no training step ran: the training split is empty or --max-steps is 0")?;
    let summary = RunSummary {
        best_epoch: best.epoch,
        best_val_acc: best.val_acc,
        test_acc: best.test_acc,
        test_task_acc: best.test_task_acc.clone(),
        params: best.params,
        branches: best.branches,
        task_groups: best.task_groups.clone(),
        final_params: net.param_count(),
        final_branches: net.spec.branches,
        final_task_groups: (net.spec.tasks > 1)
            .then(|| task_groups(&net.branches.task_branch, net.spec.branches)),
        lock_epoch: sharing.as_ref().and_then(|s| s.lock_epoch),
        epochs_run: records.len(),
        steps: run.at.steps,
        mean_images_per_s: records.iter().map(|r| r.images_per_s).sum::<f64>()
            / records.len() as f64,
    };
    write_json(&cfg.out.join("summary.json"), &summary)?;
    let decisions = sharing.as_ref().map(|s| s.decisions.as_slice());
    let title = format!("{} — {}, seed {}", data.name, cfg.label(), cfg.seed);
    let curves = crate::report::plot::Curves::digits(title, &records, &summary, decisions);
    crate::report::write_run_plots(&cfg.out, &curves, decisions)?;
    crate::report::write_summary_md(
        &cfg.out.join("summary.md"),
        cfg,
        data,
        &records,
        &summary,
        decisions,
    )?;
    println!(
        "best validation epoch {}: val {:.2}%, test {:.2}% — {} parameters; wrote {}",
        summary.best_epoch,
        100.0 * summary.best_val_acc,
        100.0 * summary.test_acc,
        summary.params,
        cfg.out.display()
    );
    Ok(summary)
}

fn config_json(cfg: &TrainConfig, data: &Dataset) -> serde_json::Value {
    serde_json::json!({
        "config": cfg,
        "data": {
            "name": data.name,
            "source": data.source,
            "train": data.train.len(),
            "val": data.val.len(),
            "test": data.test.len(),
            "classes": data.classes,
        },
        "optimizer": { "kind": "sgd", "lr": cfg.lr, "momentum": cfg.momentum },
        "versions": {
            "sskernel": env!("CARGO_PKG_VERSION"),
            "git": option_env!("SSKERNEL_GIT_COMMIT").unwrap_or("unknown"),
            "rustc": option_env!("SSKERNEL_RUSTC_VERSION").unwrap_or("unknown"),
        },
    })
}

/// The largest batch `eval` accepts from a run's config.json.
const MAX_EVAL_BATCH: u64 = 65_536;

/// A finished digit run rebuilt from its directory: the network with a checkpoint's
/// weights, the data it was trained on, and its batch size.
pub struct LoadedRun<B: Backend> {
    pub net: Net<B>,
    pub data: Dataset,
    pub mode: Mode,
    pub batch: usize,
}

/// Rebuilds the digit run in `run` from its config.json and the checkpoint `file`
/// (`checkpoint::BEST` or `LAST`). A heterogeneous run (mnist-attributes, features)
/// is refused by name: its net is not the digit CNN.
pub fn load_run<B: Backend>(be: &B, run: &Path, file: &str) -> Result<LoadedRun<B>> {
    use clap::ValueEnum;
    let config_path = run.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", config_path.display()))?;
    if let Some(name) = json["data"].as_str() {
        anyhow::bail!(
            "{}: a heterogeneous run (data {name}); only digit runs (mnist, fashion-mnist) \
             can be loaded here",
            config_path.display()
        );
    }
    let field = |name: &str| {
        json["config"][name]
            .as_str()
            .with_context(|| format!("{}: config.{name} is missing", config_path.display()))
    };
    let dataset = crate::data::DatasetName::from_str(field("dataset")?, true)
        .map_err(|e| anyhow::anyhow!("{}: config.dataset: {e}", config_path.display()))?;
    let mode = Mode::from_str(field("mode")?, true)
        .map_err(|e| anyhow::anyhow!("{}: config.mode: {e}", config_path.display()))?;
    // Any batch gives the same evaluation (running statistics); a damaged value
    // must not size the activations.
    let batch = json["config"]["batch"].as_u64().unwrap_or(64);
    anyhow::ensure!(
        (1..=MAX_EVAL_BATCH).contains(&batch),
        "{}: config.batch = {batch} is not a batch size (1 to {MAX_EVAL_BATCH})",
        config_path.display()
    );
    let data_dir = json["config"]["data_dir"].as_str().map(PathBuf::from);
    let data = crate::data::load(dataset, data_dir.as_deref())?;

    let spec = NetSpec::mnist(mode, data.classes);
    let mut net = Net::new(be, spec, &mut ChaCha8Rng::seed_from_u64(0));
    checkpoint::load(be, &mut net, &run.join(file))?;
    Ok(LoadedRun {
        net,
        data,
        mode,
        batch: batch as usize,
    })
}

/// `sskernel eval runs/NAME`: rebuilds the run's network from its config.json and a
/// checkpoint — `best.safetensors`, the model whose figures summary.json reports,
/// or with `last` the final epoch's — evaluates it on the validation and test
/// splits, and prints both.
pub fn evaluate_run<B: Backend>(
    be: &B,
    run: &Path,
    last: bool,
) -> Result<(Evaluation, Evaluation)> {
    let file = if last {
        checkpoint::LAST
    } else {
        checkpoint::BEST
    };
    let LoadedRun {
        mut net,
        data,
        mode,
        batch,
    } = load_run(be, run, file)?;
    let mut act = Activations::new(be, &net.spec, batch);
    let mut evaluate = |split| {
        let inputs = Inputs::new(split);
        let mut split = metrics::EvalSplit::new(be, &inputs, net.spec.classes, batch);
        metrics::evaluate(be, &mut net, &mut act, &mut split, batch)
    };
    let (val, test) = (evaluate(&data.val), evaluate(&data.test));
    println!(
        "{} ({file}): {} {} — val {:.2}%, test {:.2}% ({} parameters)",
        run.display(),
        data.name,
        mode.name(),
        100.0 * val.accuracy,
        100.0 * test.accuracy,
        net.param_count()
    );
    Ok((val, test))
}
