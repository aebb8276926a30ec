//! The paper's other problems end to end (issue 16): the models' parameter counts
//! against their formulas, and small files in each published format — CIFAR-10's
//! binary batches, OmniGlot's PNG folders, CUB-200-2011's annotations with a
//! features matrix — trained for a few steps: the loss goes down on the CPU, and the
//! simulator's losses equal the CPU's.

use image::{GrayImage, Luma};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sskernel::backend::cpu::Cpu;
use sskernel::backend::sim::Sim;
use sskernel::backend::Backend;
use sskernel::data::cifar10::{self, Layout};
use sskernel::data::{birds, images, npy, HeteroData, TaskKind};
use sskernel::model::Branched;
use sskernel::model::{ConvStackSpec, HeteroNet, HeteroSpec, Mode};
use sskernel::train::hetero::{train_hetero, HeteroConfig};
use std::fs;
use std::path::Path;
use std::process::Command;

/// Trainable parameters of a net of `HeteroNet`'s shape: the shared FC on
/// `trunk_in` features, `tasks` branches of FC `shared → h1 → h2`, one head each.
fn fc_part(
    trunk_in: usize,
    shared: usize,
    [h1, h2]: [usize; 2],
    tasks: usize,
    out: usize,
) -> usize {
    let fc = |i: usize, o: usize| i * o + o;
    fc(trunk_in, shared) + tasks * (fc(shared, h1) + fc(h1, h2) + fc(h2, out))
}

#[test]
fn parameter_counts_match_the_formulas() {
    let count = |spec: HeteroSpec| {
        HeteroNet::new(&Cpu, spec, 0, &mut ChaCha8Rng::seed_from_u64(0)).param_count()
    };
    // VGG-16's 13 convs as torchvision counts them (features of vgg16: 14,714,688)
    // plus batchnorm's γ and β: 2 · (2·64 + 2·128 + 3·256 + 6·512) = 8,448.
    let vgg = ConvStackSpec::vgg16([3, 32, 32], 1);
    assert_eq!(vgg.param_count(), 14_714_688 + 8_448);
    assert_eq!(vgg.out_features(), 512);
    let cifar = HeteroSpec::cifar10(1, vec![TaskKind::Binary; 10]);
    let want = 14_714_688 + 8_448 + fc_part(512, 1024, [100, 100], 10, 1);
    assert_eq!(want, 16_375_458);
    assert_eq!(count(cifar), want);
    // The OmniGlot CNN: 3×3 convs 1→32→64→64 with biases, batchnorm, 64·7·7 flattened.
    let convs = (9 + 1) * 32 + (9 * 32 + 1) * 64 + (9 * 64 + 1) * 64 + 2 * (32 + 64 + 64);
    assert_eq!(ConvStackSpec::omniglot().param_count(), convs);
    assert_eq!(ConvStackSpec::omniglot().out_features(), 3136);
    let omniglot = HeteroSpec::omniglot(vec![TaskKind::Binary; 50]);
    assert_eq!(
        count(omniglot),
        convs + fc_part(3136, 300, [100, 100], 50, 1)
    );
    // The birds: 512 features → 2048 → ten branches of 512 → 256 → 1.
    let birds = HeteroSpec::birds(512, vec![TaskKind::Rank; 10]);
    assert_eq!(count(birds), fc_part(512, 2048, [512, 256], 10, 1));
}

/// A small net config over `convs` (none: features).
fn config(out: &Path, convs: Option<ConvStackSpec>, epochs: usize, batch: usize) -> HeteroConfig {
    HeteroConfig {
        mode: Mode::Mtl,
        only_task: None,
        epochs,
        batch,
        lr: 0.003,
        seed: 7,
        max_steps: None,
        convs,
        shared: 32,
        branch_hidden: [16, 8],
        dropout: 0.0,
        out: out.to_path_buf(),
        device: "test".into(),
        sharing: None,
        checkpoints: Default::default(),
    }
}

/// `train_loss` of each epoch in `dir/log.jsonl`.
fn train_losses(dir: &Path) -> Vec<f64> {
    fs::read_to_string(dir.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["train_loss"].as_f64().unwrap()
        })
        .collect()
}

fn assert_goes_down(losses: &[f64], what: &str) {
    assert!(losses.iter().all(|l| l.is_finite()), "{what}: {losses:?}");
    assert!(
        losses.last().unwrap() < &(0.9 * losses[0]),
        "{what}: the training loss does not go down: {losses:?}"
    );
}

/// Six CIFAR-10 files of `per_file` records: class i % 10, each channel a
/// class-dependent level plus noise, so the classes can be told apart.
fn write_cifar(dir: &Path, per_file: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let names = cifar10::TRAIN_FILES.iter().chain([&cifar10::TEST_FILE]);
    for (f, name) in names.enumerate() {
        let records: Vec<(u8, Vec<u8>)> = (0..per_file)
            .map(|i| {
                let label = ((f * per_file + i) % 10) as u8;
                let pixels = (0..3 * 1024)
                    .map(|k| {
                        let level = 20 + 20 * label as usize + 30 * (k / 1024);
                        (level + rng.random_range(0..40)) as u8
                    })
                    .collect();
                (label, pixels)
            })
            .collect();
        let refs: Vec<(u8, &[u8])> = records.iter().map(|(l, p)| (*l, &p[..])).collect();
        fs::write(dir.join(name), cifar10::encode(&refs)).unwrap();
    }
}

fn train_on<B: Backend>(be: &B, cfg: &HeteroConfig, data: &HeteroData) -> Vec<f64> {
    train_hetero(be, cfg, data).unwrap();
    train_losses(&cfg.out)
}

/// VGG-16 (widths / 16) on CIFAR-10's format: 100 training, 20 validation and
/// 20 test records, ten one-vs-rest tasks. The simulator runs the first steps and
/// must report the CPU's losses.
#[test]
fn cifar10_files_train_vgg16_on_cpu_and_sim() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar(dir.path(), 24);
    let layout = Layout {
        records_per_file: 24,
        val_count: 20,
    };
    let ds = cifar10::load_cifar10_layout(dir.path(), layout).unwrap();
    let names = cifar10::CLASS_NAMES.map(String::from);
    let data = images::one_vs_rest(&ds, &names, true);
    assert_eq!(
        (data.train.len(), data.val.len(), data.test.len()),
        (100, 20, 24)
    );
    assert_eq!(data.inputs.dim(), 3 * 32 * 32);
    let vgg = ConvStackSpec::vgg16([3, 32, 32], 16);
    let cfg = config(&dir.path().join("cpu"), Some(vgg.clone()), 5, 25);
    assert_goes_down(&train_on(&Cpu, &cfg, &data), "vgg16/16 on cpu");

    let mut short = config(&dir.path().join("cpu-short"), Some(vgg.clone()), 1, 10);
    short.max_steps = Some(2);
    let mut on_sim = short.clone();
    on_sim.out = dir.path().join("sim");
    let (cpu, sim) = (
        train_on(&Cpu, &short, &data),
        train_on(&Sim::new().unwrap(), &on_sim, &data),
    );
    let rel = (cpu[0] - sim[0]).abs() / cpu[0].abs();
    assert!(rel < 1e-4, "sim loss {sim:?} vs cpu {cpu:?}: rel {rel:e}");
}

fn sskernel(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_sskernel"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sskernel {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same two training steps on cpu and on sim (`args`: the problem and its
/// data flags): the simulator's loss must be the CPU's.
fn sim_matches_cpu(args: &[&str], dir: &Path) {
    let loss = |device: &str| {
        let run = dir.join(format!("short-{device}"));
        let short = [
            "--device",
            device,
            "--epochs",
            "1",
            "--max-steps",
            "2",
            "--batch",
            "6",
        ];
        let out = ["--out", run.to_str().unwrap()];
        sskernel(&[&["train"], args, &short[..], &out[..]].concat());
        train_losses(&run)[0]
    };
    let (cpu, sim) = (loss("cpu"), loss("sim"));
    let rel = (cpu - sim).abs() / cpu.abs();
    assert!(
        rel < 1e-4,
        "{args:?}: sim loss {sim} vs cpu {cpu}: rel {rel:e}"
    );
}

fn summary_params(run: &Path) -> usize {
    let s: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    s["params"].as_u64().unwrap() as usize
}

/// `sskernel train omniglot` on three alphabets of PNGs (each alphabet its own
/// stroke pattern): the paper's CNN and widths, through the CLI, on cpu and sim.
#[test]
fn omniglot_folders_train_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    for (a, name) in ["Alpha", "Beta", "Gamma"].iter().enumerate() {
        for c in 0..3 {
            for f in 0..8 {
                let path = root
                    .join("images_background")
                    .join(name)
                    .join(format!("character{:02}", c + 1))
                    .join(format!("{:04}_{:02}.png", c + 1, f + 1));
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                // Alphabet a: vertical strokes every (a + 2)·7 pixels, shifted by
                // the character and the drawing.
                let step = (a as u32 + 2) * 7;
                GrayImage::from_fn(105, 105, |x, _| {
                    Luma([if (x + 3 * c + f) % step < 4 { 0 } else { 255 }])
                })
                .save(&path)
                .unwrap();
            }
        }
    }
    let run = dir.path().join("run");
    let args = [
        "train", "omniglot", "--device", "cpu", "--epochs", "4", "--batch", "12",
    ];
    let paths = [
        "--data-dir",
        root.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ];
    sskernel(&[&args[..], &paths[..]].concat());
    assert_goes_down(&train_losses(&run), "omniglot CNN");
    let convs = ConvStackSpec::omniglot().param_count();
    assert_eq!(
        summary_params(&run),
        convs + fc_part(3136, 300, [100, 100], 3, 1)
    );
    // Dropout's mask is the same on both devices (a hash of key and index).
    sim_matches_cpu(
        &["omniglot", "--data-dir", root.to_str().unwrap()],
        dir.path(),
    );
}

/// `sskernel train birds` on 60 birds of CUB-200-2011's annotation files and a
/// features matrix whose first columns carry the attributes' scores: ten ranking
/// tasks on the paper's head, through the CLI, on cpu and sim.
#[test]
fn birds_annotations_train_through_the_cli() {
    const N: usize = 60;
    const DIM: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cub");
    fs::create_dir_all(root.join("attributes")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut images = String::new();
    let mut split = String::new();
    let mut labels = String::new();
    let mut features = vec![0f32; N * DIM];
    for id in 1..=N {
        images.push_str(&format!("{id} {id:03}.Bird/Bird_{id}.jpg\n"));
        split.push_str(&format!("{id} {}\n", u8::from(id % 4 != 0)));
        let row = &mut features[(id - 1) * DIM..id * DIM];
        for v in row.iter_mut() {
            *v = rng.random_range(-1.0..1.0);
        }
        for a in 1..=birds::ATTRIBUTES {
            // Attribute task t is present, surely, when feature t % DIM is positive.
            let t = birds::DEFAULT_ATTRIBUTES.iter().position(|&d| d == a);
            let present = t.is_some_and(|t| row[t % DIM] > 0.0);
            labels.push_str(&format!("{id} {a} {} 4 1.0\n", u8::from(present)));
        }
    }
    fs::write(root.join(birds::IMAGES), images).unwrap();
    fs::write(root.join(birds::SPLIT), split).unwrap();
    fs::write(root.join(birds::LABELS), labels).unwrap();
    let npy_path = dir.path().join("features.npy");
    let bytes: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
    fs::write(&npy_path, npy::encode("<f4", &[N, DIM], &bytes)).unwrap();
    let run = dir.path().join("run");
    let args = [
        "train", "birds", "--device", "cpu", "--epochs", "4", "--hidden", "32,16",
    ];
    let paths = [
        "--shared",
        "64",
        "--data-dir",
        root.to_str().unwrap(),
        "--features",
        npy_path.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ];
    sskernel(&[&args[..], &paths[..]].concat());
    assert_goes_down(&train_losses(&run), "birds head");
    assert_eq!(summary_params(&run), fc_part(DIM, 64, [32, 16], 10, 1));
    let data = [
        "birds",
        "--data-dir",
        root.to_str().unwrap(),
        "--features",
        npy_path.to_str().unwrap(),
    ];
    sim_matches_cpu(&data, dir.path());
}
