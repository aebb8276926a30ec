//! Training on heterogeneous problems (`mnist-attributes`, `features`; issue 15):
//! the `HeteroNet`, Adam, one loss per task summed, Selective Sharing across task
//! kinds, and per-task metrics in each task's own unit.
//!
//! The best epoch is the one with the lowest validation loss (the sum over tasks of
//! each task's mean loss, regression on standardised targets): the tasks' metrics
//! have different units and directions, their losses one scale.

use super::checkpoint;
use super::resume::{self, Progress};
use super::{progress, sharing_step};
use crate::atomic_file::{write as write_atomically, write_json};
use crate::backend::profile::phase;
use crate::backend::{Backend, OptimStep};
use crate::data::{HeteroData, TaskKind};
use crate::model::{Branched, HeteroActs, HeteroNet, HeteroSpec};
pub use crate::run::{metric_name, Checkpointing, HeteroConfig, HeteroEpoch, HeteroSummary};
use crate::sharing::selective::{task_groups, Sharing};
use anyhow::{Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// Samples a rank metric compares pairwise at most (the first ones of the split):
/// 3000 make 4.5 M pairs.
const RANK_SAMPLES: usize = 3000;

/// The net's tasks: all of the data's, or the one an STL net learns.
fn task_indices(cfg: &HeteroConfig, data: &HeteroData) -> Vec<usize> {
    match cfg.only_task {
        Some(t) => vec![t],
        None => (0..data.tasks.len()).collect(),
    }
}

/// Host-side batch assembly: inputs and each task's targets as its loss reads them.
pub struct Batcher<'a> {
    data: &'a HeteroData,
    tasks: Vec<usize>,
    /// Regression: the training split's (mean, std) per net task; others (0, 1).
    moments: Vec<(f64, f64)>,
    x: Vec<f32>,
    targets: Vec<Vec<f32>>,
}

impl<'a> Batcher<'a> {
    /// For a net learning `tasks` (indices into the data's tasks, in net order).
    pub fn new(data: &'a HeteroData, tasks: Vec<usize>) -> Self {
        let moments = tasks
            .iter()
            .map(|&t| match data.tasks[t].kind {
                TaskKind::Regression => data.train_moments(t),
                _ => (0.0, 1.0),
            })
            .collect();
        Self {
            data,
            targets: vec![Vec::new(); tasks.len()],
            tasks,
            moments,
            x: Vec::new(),
        }
    }

    /// Gathers rows `idx` and writes them into `act`.
    pub fn load<B: Backend>(&mut self, be: &B, act: &mut HeteroActs<B>, idx: &[usize]) {
        let d = self.data;
        self.x.resize(idx.len() * d.inputs.dim(), 0.0);
        d.inputs.gather(idx, &mut self.x);
        be.write(&mut act.x, &self.x);
        for (k, &t) in self.tasks.iter().enumerate() {
            let host = &mut self.targets[k];
            host.clear();
            let (mean, std) = self.moments[k];
            match d.tasks[t].kind {
                TaskKind::Class { classes } => {
                    host.resize(idx.len() * classes, 0.0);
                    for (n, &row) in idx.iter().enumerate() {
                        let c = d.target(row, t);
                        // Missing: an all-zero row, out of the loss.
                        if !c.is_nan() {
                            host[n * classes + c as usize] = 1.0;
                        }
                    }
                }
                TaskKind::Regression => host.extend(
                    idx.iter()
                        .map(|&r| ((d.target(r, t) as f64 - mean) / std) as f32),
                ),
                TaskKind::Binary | TaskKind::Rank => {
                    host.extend(idx.iter().map(|&r| d.target(r, t)))
                }
            }
            be.write(&mut act.targets[k], host);
        }
    }
}

/// Validation loss and per-task metrics of `rows`.
struct Evaluation {
    loss: f64,
    metrics: Vec<f64>,
}

fn evaluate<B: Backend>(
    be: &B,
    net: &mut HeteroNet<B>,
    act: &mut HeteroActs<B>,
    batcher: &mut Batcher<'_>,
    rows: &[usize],
    batch: usize,
) -> Evaluation {
    let tasks = batcher.tasks.clone();
    // Per net task: logits of every row, in row order.
    let mut logits: Vec<Vec<f32>> = vec![Vec::new(); tasks.len()];
    let (mut loss_sum, mut batches) = (0.0f64, 0usize);
    for chunk in rows.chunks(batch) {
        let n = chunk.len();
        batcher.load(be, act, chunk);
        net.forward(be, act, n, false);
        net.loss(be, act, n);
        for (k, kind) in net.spec.tasks.iter().enumerate() {
            let host = be.download(&act.logits[k]);
            logits[k].extend_from_slice(&host[..n * kind.outputs()]);
            loss_sum += be.download(&act.loss[k])[0] as f64;
        }
        batches += 1;
    }
    let d = batcher.data;
    let metrics = tasks
        .iter()
        .enumerate()
        .map(|(k, &t)| {
            let truth: Vec<f32> = rows.iter().map(|&r| d.target(r, t)).collect();
            task_metric(&d.tasks[t].kind, &logits[k], &truth, batcher.moments[k])
        })
        .collect();
    Evaluation {
        loss: loss_sum / batches.max(1) as f64,
        metrics,
    }
}

/// The metric of one task over samples present (NaN truth = missing): see
/// `metric_name`. `logits`: `[n, outputs]`; `truth` in the data's unit;
/// `(mean, std)` undoes a regression's standardisation.
pub fn task_metric(kind: &TaskKind, logits: &[f32], truth: &[f32], (mean, std): (f64, f64)) -> f64 {
    let present = || (0..truth.len()).filter(|&n| !truth[n].is_nan());
    let count = present().count().max(1) as f64;
    match *kind {
        TaskKind::Class { classes } => {
            let right = present()
                .filter(|&n| {
                    let row = &logits[n * classes..(n + 1) * classes];
                    let best = (0..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b });
                    best == truth[n] as usize
                })
                .count();
            100.0 * right as f64 / count
        }
        TaskKind::Binary => {
            let right = present()
                .filter(|&n| (logits[n] > 0.0) == (truth[n] > 0.5))
                .count();
            100.0 * right as f64 / count
        }
        TaskKind::Regression => {
            present()
                .map(|n| (logits[n] as f64 * std + mean - truth[n] as f64).abs())
                .sum::<f64>()
                / count
        }
        TaskKind::Rank => {
            let sample: Vec<usize> = present().take(RANK_SAMPLES).collect();
            let (mut right, mut pairs) = (0.0f64, 0usize);
            for &i in &sample {
                for &j in &sample {
                    if truth[i] > truth[j] {
                        pairs += 1;
                        right += match logits[i].partial_cmp(&logits[j]) {
                            Some(std::cmp::Ordering::Greater) => 1.0,
                            Some(std::cmp::Ordering::Equal) => 0.5,
                            _ => 0.0,
                        };
                    }
                }
            }
            100.0 * right / pairs.max(1) as f64
        }
    }
}

/// Trains a heterogeneous net on `data` as `cfg` says, writing `config.json`,
/// `log.jsonl`, `grouping.json` (selective), `summary.json`, `summary.md` with its
/// figures, and the last and best checkpoints to `cfg.out`.
pub fn train_hetero<B: Backend>(
    be: &B,
    cfg: &HeteroConfig,
    data: &HeteroData,
) -> Result<HeteroSummary> {
    anyhow::ensure!(
        !data.train.is_empty(),
        "{}: the training split is empty",
        data.name
    );
    let tasks = task_indices(cfg, data);
    let config = serde_json::json!({ "config": cfg, "data": data.name, "tasks": tasks.iter().map(|&t| &data.tasks[t].name).collect::<Vec<_>>() });
    resume::open_run(&cfg.out, &config, cfg.checkpoints.resume)?;

    let kinds: Vec<TaskKind> = tasks.iter().map(|&t| data.tasks[t].kind).collect();
    if let Some(convs) = &cfg.convs {
        anyhow::ensure!(
            convs.input_len() == data.inputs.dim(),
            "{}: {} values per sample, but the conv stack reads {:?} images ({} values)",
            data.name,
            data.inputs.dim(),
            convs.input,
            convs.input_len()
        );
    }
    let spec = HeteroSpec {
        input: data.inputs.dim(),
        convs: cfg.convs.clone(),
        shared: cfg.shared,
        branch_hidden: cfg.branch_hidden,
        dropout: cfg.dropout,
        branches: kinds.len(),
        tasks: kinds.clone(),
        identical_branches: !cfg.sharing.as_ref().is_some_and(|s| s.independent_branches),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut net = HeteroNet::new(be, spec.clone(), cfg.seed, &mut rng);
    let mut act = HeteroActs::new(be, &spec, cfg.batch);
    let mut sharing = cfg
        .sharing
        .clone()
        .map(|sc| Sharing::start(sc, cfg.seed, be, &mut net));
    let (mut run, mut records): (Progress, Vec<HeteroEpoch>) = Progress::start(
        (be, &mut net, sharing.as_mut()),
        (rng, data.train.clone()),
        &cfg.out,
        cfg.checkpoints.resume,
    )?;
    net.set_steps(be, run.at.steps);
    let mut batcher = Batcher::new(data, tasks.clone());
    println!(
        "sskernel: {} {} on {} — {} tasks ({}), {} trainable parameters, train/val/test {}/{}/{}",
        data.name,
        cfg.mode.name(),
        cfg.device,
        kinds.len(),
        kinds
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        net.param_count(),
        data.train.len(),
        data.val.len(),
        data.test.len()
    );

    let max_steps_reached = |steps: usize| cfg.max_steps.is_some_and(|max| steps >= max);
    while run.at.epoch <= cfg.epochs {
        let epoch = run.at.epoch;
        let batches = run.epoch_batches(cfg.batch);
        let bar = progress::EpochBar::new(epoch, cfg.epochs, batches.end);
        let started = Instant::now();
        let samples_before = run.at.tally.samples;
        for b in batches {
            if max_steps_reached(run.at.steps) {
                break;
            }
            let chunk = run.batch(b, cfg.batch);
            let n = chunk.len();
            phase("data").run(|| batcher.load(be, &mut act, chunk));
            phase("forward").run(|| net.forward(be, &mut act, n, true));
            phase("loss").run(|| net.loss(be, &mut act, n));
            phase("backward").run(|| net.backward(be, &mut act, n));
            let adam = OptimStep::Adam {
                lr: cfg.lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            };
            phase("optimiser").run(|| net.optim_step(be, &adam));
            crate::crash::point("step");
            let losses: Vec<f64> = act.loss.iter().map(|l| be.download(l)[0] as f64).collect();
            if let Some(k) = losses.iter().position(|l| !l.is_finite()) {
                anyhow::bail!(
                    "the loss of task {} became {} at epoch {epoch}, step {} (the run \
                     diverged: lower --lr); last good checkpoint: {}",
                    data.tasks[tasks[k]].name,
                    losses[k],
                    run.at.steps + 1,
                    run.last_good()
                );
            }
            bar.advance(run.at.tally.add(&losses, n));
            run.at.steps += 1;
            run.at.batch += 1;
            let model = (be, &net, sharing.as_ref());
            let end = run.step_end(cfg.checkpoints.every);
            phase("checkpoint").run(|| run.after_step(model, &net.spec, end))?;
        }
        let seconds = started.elapsed().as_secs_f64();
        bar.finish();
        let tally = &run.at.tally;
        if tally.batches == 0 {
            break;
        }
        phase("sharing")
            .run(|| sharing_step(sharing.as_mut(), be, &mut net, (epoch, tally), &cfg.out))?;
        let (val, test) = phase("evaluation").run(|| {
            let val = evaluate(be, &mut net, &mut act, &mut batcher, &data.val, cfg.batch);
            (
                val,
                evaluate(be, &mut net, &mut act, &mut batcher, &data.test, cfg.batch),
            )
        });
        let branches = net.branches.count();
        let groups = task_groups(&net.branches.task_branch, branches);
        let named_groups: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|&k| format!("{} ({})", data.tasks[tasks[k]].name, kinds[k]))
                    .collect()
            })
            .collect();
        for shared in named_groups.iter().filter(|g| g.len() > 1) {
            println!("  one branch serves {}", shared.join(", "));
        }
        let record = HeteroEpoch {
            epoch,
            steps: run.at.steps,
            train_loss: tally.mean_loss(),
            val_loss: val.loss,
            val: val.metrics,
            test: test.metrics.clone(),
            params: net.param_count(),
            branches,
            task_groups: groups,
            named_groups,
            locked: sharing.as_ref().map(|s| s.locked()),
            seconds,
            samples_per_s: (tally.samples - samples_before) as f64 / seconds,
        };
        println!(
            "epoch {epoch:>3}/{}  loss {:.4}  val loss {:.4}  test {}  {} params  {:.1}s",
            cfg.epochs,
            record.train_loss,
            record.val_loss,
            record
                .test
                .iter()
                .zip(&kinds)
                .map(|(v, k)| format!("{v:.3} {}", metric_name(k)))
                .collect::<Vec<_>>()
                .join(", "),
            record.params,
            seconds
        );
        run.log(&record)?;
        // The best model first: the last checkpoint is the commit point.
        // Ties keep the earlier epoch.
        let best = run.at.best_epoch.map(|e| &records[e - 1]);
        if best.is_none_or(|b| record.val_loss < b.val_loss) {
            let about =
                serde_json::json!({ "epoch": epoch, "steps": run.at.steps, "spec": &net.spec });
            let model = checkpoint::serialize_net(be, &net, about, None)?;
            write_atomically(&cfg.out.join(checkpoint::BEST), &model)?;
            run.at.best_epoch = Some(epoch);
        }
        records.push(record);
        run.at.next_epoch(kinds.len());
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
        .context("no training step ran: --max-steps is 0")?;
    let summary = HeteroSummary {
        tasks: tasks.iter().map(|&t| data.tasks[t].name.clone()).collect(),
        metrics: kinds.iter().map(metric_name).collect(),
        kinds,
        best_epoch: best.epoch,
        best_val_loss: best.val_loss,
        test: best.test.clone(),
        params: best.params,
        branches: best.branches,
        task_groups: best.task_groups.clone(),
        lock_epoch: sharing.as_ref().and_then(|s| s.lock_epoch),
        epochs_run: records.len(),
        steps: run.at.steps,
    };
    write_json(&cfg.out.join("summary.json"), &summary)?;
    let title = format!("{} — {}, seed {}", data.name, cfg.label(), cfg.seed);
    let decisions = sharing.as_ref().map(|s| s.decisions.as_slice());
    let curves = crate::report::plot::Curves::hetero(title, &records, &summary, decisions);
    crate::report::write_run_plots(&cfg.out, &curves, decisions)?;
    crate::report::hetero::write_summary_md(
        &cfg.out.join("summary.md"),
        cfg,
        data,
        &records,
        &summary,
        decisions,
    )?;
    println!(
        "best validation epoch {}: test {} — {} parameters; wrote {}",
        summary.best_epoch,
        summary
            .tasks
            .iter()
            .zip(&summary.test)
            .zip(&summary.metrics)
            .map(|((t, v), m)| format!("{t} {v:.3} {m}"))
            .collect::<Vec<_>>()
            .join(", "),
        summary.params,
        cfg.out.display()
    );
    Ok(summary)
}
