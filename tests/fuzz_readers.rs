//! Every reader on 10,000 seeded mutations of small valid files (issue 17):
//! truncations, flipped and inserted bytes, overwritten length and dimension fields,
//! huge numbers in text headers. For each mutated input the reader must return
//! (no panic; the watchdog aborts on a hang), allocate no more than the file can
//! justify (a counting allocator, per thread), and either accept it or give an
//! error that names the mutated file. The harness is tests/common/fuzz.rs; a failure
//! prints its seed and iteration and how to rerun just that one.

#[path = "common/fuzz.rs"]
mod fuzz;

use std::io::Write;
use std::path::{Path, PathBuf};

use fuzz::{accepted, bounded, file_in, put, scratch_dir, Case, CountingAlloc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use sskernel::backend::cpu::Cpu;
use sskernel::data::{birds, cifar10, features, idx, mnist, npy, omniglot, TaskType};
use sskernel::model::{Mode, Net, NetSpec};
use sskernel::sharing::cluster_cmd::{cluster_file, ClusterOptions, Metric};
use sskernel::sharing::hdbscan::{HdbscanParams, Selection};
use sskernel::train::checkpoint;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Fixed buffers a reader may hold whatever the file: a `BufReader`, the CSV
/// reader's buffers, the `.gz` cache's 1 MiB copy buffer, hash tables.
const SLACK: usize = 2 << 20;

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A set of files that a reader loads together: each iteration replaces one of
/// them with a mutation of its valid bytes, runs `read`, and restores it.
struct FileSet {
    files: Vec<Member>,
}

struct Member {
    path: PathBuf,
    /// What the reader sees after decompression.
    content: Vec<u8>,
    /// What is on disk: `content`, gzipped for a `.gz` name.
    stored: Vec<u8>,
}

impl FileSet {
    /// Writes `files` (name, content) under `dir`; a `.gz` name is written gzipped.
    fn new(dir: &Path, files: Vec<(&str, Vec<u8>)>) -> FileSet {
        let files: Vec<Member> = files
            .into_iter()
            .map(|(name, content)| {
                let path = file_in(dir, name);
                let stored = match name.ends_with(".gz") {
                    true => gz(&content),
                    false => content.clone(),
                };
                put(&path, &stored);
                Member {
                    path,
                    content,
                    stored,
                }
            })
            .collect();
        FileSet { files }
    }

    fn path(&self, k: usize) -> &Path {
        &self.files[k].path
    }

    /// The most bytes the files can hold once read, with `mutated` holding `bytes`:
    /// their lengths, a gzipped one's times 1032 (deflate's limit).
    fn justified(&self, mutated: &Path, bytes: &[u8]) -> usize {
        let len = |m: &Member| match m.path == mutated {
            true => bytes.len(),
            false => m.stored.len(),
        };
        let gain = |m: &Member| if m.stored != m.content { 1032 } else { 1 };
        self.files.iter().map(|m| len(m) * gain(m)).sum()
    }

    /// Mutates one file (chosen by `weights`, one per file), runs `read` on the set
    /// and restores the file. `read` gets the mutated file's path and bytes. A
    /// gzipped file is mutated either as compressed bytes or as content behind a
    /// valid gzip stream.
    fn fuzz<R>(&self, c: &mut Case, weights: &[u32], read: impl FnOnce(&Path, &[u8]) -> R) -> R {
        let total: u32 = weights.iter().sum();
        let mut pick = c.rng.random_range(0..total);
        let k = weights
            .iter()
            .position(|&w| {
                let hit = pick < w;
                pick = pick.saturating_sub(w);
                hit
            })
            .unwrap();
        let m = &self.files[k];
        let bytes = if m.stored != m.content && c.rng.random_bool(0.5) {
            c.log.push(format!("{} gzipped after:", m.path.display()));
            gz(&c.mutate(&m.content))
        } else {
            c.log.push(format!("{}:", m.path.display()));
            c.mutate(&m.stored)
        };
        put(&m.path, &bytes);
        let r = read(&m.path, &bytes);
        put(&m.path, &m.stored);
        r
    }
}

// ---------------------------------------------------------------------------
// IDX: the standard MNIST layout, two files raw and two gzipped

fn mnist_images(n: usize) -> Vec<u8> {
    let pixels: Vec<u8> = (0..n * 784).map(|i| (i * 7 % 256) as u8).collect();
    idx::encode(&[n as u32, 28, 28], &pixels)
}

fn mnist_labels(n: usize) -> Vec<u8> {
    idx::encode(
        &[n as u32],
        &(0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>(),
    )
}

#[test]
fn fuzz_idx_mnist_dir() {
    let dir = scratch_dir();
    let set = FileSet::new(
        dir.path(),
        vec![
            ("train-images-idx3-ubyte", mnist_images(3)),
            ("train-labels-idx1-ubyte.gz", mnist_labels(3)),
            ("t10k-images-idx3-ubyte.gz", mnist_images(2)),
            ("t10k-labels-idx1-ubyte", mnist_labels(2)),
        ],
    );
    mnist::load_standard(dir.path(), "mnist", 1, None).expect("a valid seed");
    fuzz::run("fuzz_idx_mnist_dir", |c| {
        set.fuzz(c, &[3, 2, 2, 2], |path, bytes| {
            let justified = set.justified(path, bytes);
            let r = bounded("load_standard", justified, 4, SLACK, || {
                mnist::load_standard(dir.path(), "mnist", 1, None)
            });
            accepted(r.map_err(|e| e.to_string()), path)
        })
    });
}

// ---------------------------------------------------------------------------
// .npy: every read entry point on every mutation

fn npy_seeds() -> Vec<Vec<u8>> {
    let f8: Vec<u8> = (0..12)
        .flat_map(|i| (i as f64 * 0.5).to_le_bytes())
        .collect();
    let f4: Vec<u8> = (0..12)
        .flat_map(|i| (i as f32 - 3.0).to_le_bytes())
        .collect();
    let f2: Vec<u8> = (0..12)
        .flat_map(|i| half::f16::from_f32(i as f32).to_le_bytes())
        .collect();
    let i8: Vec<u8> = (0..5i64).flat_map(|i| (i - 1).to_le_bytes()).collect();
    // Version 2.0: the same dict, two spaces of padding fewer, behind a 4-byte
    // header length.
    let v1 = npy::encode("<f8", &[3, 4], &f8);
    let dict_len = u16::from_le_bytes([v1[8], v1[9]]) as usize;
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    v2.extend_from_slice(&(dict_len as u32 - 2).to_le_bytes());
    v2.extend_from_slice(&v1[10..10 + dict_len - 3]);
    v2.push(b'\n');
    v2.extend_from_slice(&f8);
    vec![
        npy::encode("<f8", &[3, 4], &f8),
        npy::encode("<f4", &[4, 3], &f4),
        npy::encode("<f2", &[6, 2], &f2),
        npy::encode("<f8", &[12], &f8),
        npy::encode("<i8", &[5], &i8),
        v2,
    ]
}

#[test]
fn fuzz_npy() {
    let dir = scratch_dir();
    let path = dir.path().join("points.npy");
    let seeds = npy_seeds();
    for s in &seeds {
        put(&path, s);
        let i64s = npy::read_i64_vector(&path).map(|_| ());
        i64s.or_else(|_| npy::map_matrix(&path).map(|_| ()))
            .or_else(|_| npy::read_f64_vector(&path).map(|_| ()))
            .expect("a valid seed");
    }
    fuzz::run("fuzz_npy", |c| {
        let seed = c.pick(&seeds).clone();
        let bytes = c.mutate(&seed);
        put(&path, &bytes);
        let len = bytes.len();
        // Values become f64 (8 bytes from at least 4) or, mapped, f32 rows.
        let named = |r: Result<(), npy::NpyError>| accepted(r.map_err(|e| e.to_string()), &path);
        let mut any = named(bounded("read_matrix", len, 2, SLACK, || {
            npy::read_matrix(&path).map(drop)
        }));
        any |= named(bounded("read_f64_vector", len, 2, SLACK, || {
            npy::read_f64_vector(&path).map(drop)
        }));
        any |= named(bounded("read_f64_array", len, 2, SLACK, || {
            npy::read_f64_array(&path).map(drop)
        }));
        any |= named(bounded("read_i64_vector", len, 1, SLACK, || {
            npy::read_i64_vector(&path).map(drop)
        }));
        let mapped = bounded("map_matrix", len, 1, SLACK, || {
            let m = npy::map_matrix(&path)?;
            let mut row = vec![0f32; m.cols()];
            for r in 0..m.rows() {
                m.row_into(r, &mut row);
            }
            Ok(())
        });
        any | named(mapped)
    });
}

// ---------------------------------------------------------------------------
// checkpoint.safetensors of a tiny net

fn tiny_spec() -> NetSpec {
    NetSpec {
        image_height: 10,
        image_width: 10,
        kernel: 3,
        conv1_channels: 2,
        conv2_channels: 2,
        shared: 4,
        branch_hidden: [3, 2],
        ..NetSpec::mnist(Mode::Mtl, 3)
    }
}

fn tiny_net() -> Net<Cpu> {
    use rand::SeedableRng;
    Net::new(&Cpu, tiny_spec(), &mut ChaCha8Rng::seed_from_u64(0))
}

#[test]
fn fuzz_checkpoint() {
    let dir = scratch_dir();
    let path = dir.path().join("checkpoint.safetensors");
    let mut merged = tiny_net();
    use sskernel::model::Branched;
    merged.prune(&Cpu, &[0, 2], vec![0, 1, 1]);
    let seeds = [
        checkpoint::serialize(&Cpu, &tiny_net(), 3, 30).unwrap(),
        checkpoint::serialize(&Cpu, &merged, 4, 40).unwrap(),
    ];
    fuzz::run("fuzz_checkpoint", |c| {
        let seed = c.pick(&seeds).clone();
        let bytes = c.mutate(&seed);
        put(&path, &bytes);
        let mut net = tiny_net();
        let r = bounded("checkpoint::load", bytes.len(), 4, SLACK, || {
            checkpoint::load(&Cpu, &mut net, &path)
        });
        let ok = accepted(r.map_err(|e| format!("{e:#}")), &path);
        if ok {
            // A loaded net is one `serialize` could have written: finite values,
            // origins distinct branches of the unmerged net.
            checkpoint::serialize(&Cpu, &net, 0, 0).expect("a loaded net saves");
            let origin = &net.branches.branch_origin;
            let mut sorted = origin.clone();
            sorted.sort();
            sorted.dedup();
            assert!(
                sorted.len() == origin.len() && sorted.iter().all(|&o| o < 3),
                "loaded branch origins {origin:?}"
            );
        } else {
            // Nothing partial: a refused file leaves the net as it was.
            let as_built = checkpoint::serialize(&Cpu, &tiny_net(), 0, 0).unwrap();
            let after = checkpoint::serialize(&Cpu, &net, 0, 0).unwrap();
            assert!(as_built == after, "a refused checkpoint changed the net");
        }
        ok
    });
}

// ---------------------------------------------------------------------------
// `train features`: X.npy and the targets CSV

const TASKS: [(&str, TaskType); 4] = [
    ("label", TaskType::Class),
    ("flag", TaskType::Binary),
    ("size", TaskType::Regression),
    ("order", TaskType::Rank),
];

fn targets_csv(split_column: bool) -> Vec<u8> {
    let mut s = String::from("id,label,flag,size,order");
    s += if split_column { ",split\n" } else { "\n" };
    let parts = [
        "train", "train", "val", "train", "test", "train", "train", "val",
    ];
    for (r, part) in parts.iter().enumerate() {
        let flag = ["0", "1", "true", "0.0"][r % 4];
        let label = ["cat", "dog", "", "bird"][r % 4];
        s += &format!("{r},{label},{flag},{}.25,{}", r * 3, 7 - r);
        s += &if split_column {
            format!(",{part}\n")
        } else {
            "\n".to_string()
        };
    }
    s.into_bytes()
}

#[test]
fn fuzz_features() {
    let dir = scratch_dir();
    let x: Vec<u8> = (0..24).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let set = FileSet::new(
        dir.path(),
        vec![
            ("X.npy", npy::encode("<f4", &[8, 3], &x)),
            ("split.csv", targets_csv(true)),
            ("plain.csv", targets_csv(false)),
        ],
    );
    let tasks: Vec<(String, TaskType)> = TASKS.iter().map(|(n, t)| (n.to_string(), *t)).collect();
    let (xp, with_split, plain) = (set.path(0), set.path(1), set.path(2));
    for y in [with_split, plain] {
        features::load_features(xp, y, &tasks, features::SplitSpec::Auto, 0).expect("valid seeds");
    }
    fuzz::run("fuzz_features", |c| {
        let y = c.pick(&[with_split, plain]).to_path_buf();
        // --split with a CSV that has a split column is refused whatever the bytes.
        let split = match y == *plain && c.rng.random_bool(0.5) {
            false => features::SplitSpec::Auto,
            true => features::SplitSpec::parse("0.5:0.25:0.25").unwrap(),
        };
        c.log.push(format!("targets {}, {split:?}", y.display()));
        let weights = if y == *with_split {
            [1, 3, 0]
        } else {
            [1, 0, 3]
        };
        set.fuzz(c, &weights, |path, bytes| {
            let justified = set.justified(path, bytes);
            let r = bounded("load_features", justified, 32, SLACK, || {
                features::load_features(xp, &y, &tasks, split, 0)
            });
            accepted(r.map_err(|e| e.to_string()), path)
        })
    });
}

// ---------------------------------------------------------------------------
// CIFAR-10 binary batches, two records a file

#[test]
fn fuzz_cifar10() {
    let dir = scratch_dir();
    let layout = cifar10::Layout {
        records_per_file: 2,
        val_count: 2,
    };
    let file = |f: usize| {
        let pixels: Vec<Vec<u8>> = (0..2)
            .map(|r| {
                (0..3072)
                    .map(|p| ((p + 31 * r + 7 * f) % 256) as u8)
                    .collect()
            })
            .collect();
        cifar10::encode(&[
            ((f % 10) as u8, &pixels[0]),
            (((f + 3) % 10) as u8, &pixels[1]),
        ])
    };
    let names = cifar10::TRAIN_FILES.iter().chain([&cifar10::TEST_FILE]);
    let set = FileSet::new(
        dir.path(),
        names.enumerate().map(|(f, n)| (*n, file(f))).collect(),
    );
    cifar10::load_cifar10_layout(dir.path(), layout).expect("a valid seed");
    fuzz::run("fuzz_cifar10", |c| {
        set.fuzz(c, &[1; 6], |path, bytes| {
            let justified = set.justified(path, bytes);
            let r = bounded("load_cifar10", justified, 2, SLACK, || {
                cifar10::load_cifar10_layout(dir.path(), layout)
            });
            accepted(r.map_err(|e| e.to_string()), path)
        })
    });
}

// ---------------------------------------------------------------------------
// OmniGlot's PNGs

fn png(image: impl Into<image::DynamicImage>) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .into()
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn png_seeds() -> Vec<Vec<u8>> {
    let stroke = |x: u32, y: u32| if (x + 2 * y) % 17 < 2 { 0 } else { 255 };
    vec![
        png(image::GrayImage::from_fn(105, 105, |x, y| {
            image::Luma([stroke(x, y)])
        })),
        png(image::RgbImage::from_fn(20, 15, |x, y| {
            image::Rgb([x as u8 * 9, y as u8 * 13, stroke(x, y)])
        })),
        png(image::ImageBuffer::from_fn(9, 7, |x, y| {
            image::Luma([(x * 7000 + y * 300) as u16])
        })),
        png(image::RgbaImage::from_fn(4, 4, |x, y| {
            image::Rgba([x as u8, y as u8, 9, 200])
        })),
    ]
}

/// Recomputes every chunk's CRC, so that mutations reach the chunk parsers instead
/// of all failing the checksum.
fn fix_png_crcs(b: &mut [u8]) {
    let mut at = 8;
    while at + 12 <= b.len() {
        let len = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|&e| e + 4 <= b.len()) else {
            return;
        };
        let mut crc = flate2::Crc::new();
        crc.update(&b[at + 4..end]);
        b[end..end + 4].copy_from_slice(&crc.sum().to_be_bytes());
        at = end + 4;
    }
}

/// IHDR's width and height (bytes 16..24) set to `w`, `h`, its CRC fixed.
fn forge_png_size(b: &mut [u8], w: u32, h: u32) {
    b[16..20].copy_from_slice(&w.to_be_bytes());
    b[20..24].copy_from_slice(&h.to_be_bytes());
    fix_png_crcs(b);
}

#[test]
fn fuzz_omniglot_png() {
    let dir = scratch_dir();
    let path = dir.path().join("0101_01.png");
    let seeds = png_seeds();
    fuzz::run("fuzz_omniglot_png", |c| {
        let seed = c.pick(&seeds).clone();
        let mut bytes = if c.rng.random_bool(0.2) {
            // A header claiming a huge image over the seed's small pixel data.
            let dims = [1, 105, 4096, 30_000, 65_535, 1 << 20, 1 << 30, u32::MAX];
            let (w, h) = (*c.pick(&dims), *c.pick(&dims));
            c.log.push(format!("IHDR {w}x{h}"));
            let mut b = seed;
            forge_png_size(&mut b, w, h);
            b
        } else {
            c.mutate(&seed)
        };
        if c.rng.random_bool(0.5) {
            c.log.push("CRCs fixed".into());
            fix_png_crcs(&mut bytes);
        }
        put(&path, &bytes);
        // The decoded image and its grey copy: deflate expands at most 1032:1, and a
        // pixel of 1 bit decodes to a byte.
        let r = bounded("omniglot::decode", bytes.len(), 2 * 8 * 1032, SLACK, || {
            omniglot::decode(&path)
        });
        if let Ok(grey) = &r {
            assert_eq!(grey.len(), omniglot::ROWS * omniglot::COLS);
        }
        accepted(r.map_err(|e| e.to_string()), &path)
    });
}

// ---------------------------------------------------------------------------
// CUB-200-2011 attribute files and their features

fn birds_files() -> Vec<(&'static str, Vec<u8>)> {
    let n = 6;
    let images: String = (1..=n)
        .map(|i| format!("{} 001.Bird/Bird_{i:04}.jpg\n", 10 + i))
        .collect();
    let split: String = (1..=n)
        .map(|i| format!("{} {}\n", 10 + i, u32::from(i % 3 != 0)))
        .collect();
    let labels: String = (1..=n)
        .flat_map(|i| {
            (1..=3)
                .map(move |a| format!("{} {a} {} {} 2.5\n", 10 + i, (i + a) % 2, 1 + (i + a) % 4))
        })
        .collect();
    let x: Vec<u8> = (0..n * 4).flat_map(|v| (v as f32).to_le_bytes()).collect();
    vec![
        (birds::IMAGES, images.into_bytes()),
        (birds::SPLIT, split.into_bytes()),
        (birds::LABELS, labels.into_bytes()),
        ("features.npy", npy::encode("<f4", &[n as usize, 4], &x)),
    ]
}

#[test]
fn fuzz_birds() {
    let dir = scratch_dir();
    let set = FileSet::new(dir.path(), birds_files());
    let features = set.path(3).to_path_buf();
    let options = birds::Options {
        attributes: vec![1, 2],
        seed: 0,
    };
    birds::load_birds(dir.path(), &features, &options).expect("a valid seed");
    fuzz::run("fuzz_birds", |c| {
        set.fuzz(c, &[2, 1, 2, 1], |path, bytes| {
            let justified = set.justified(path, bytes);
            let r = bounded("load_birds", justified, 32, SLACK, || {
                birds::load_birds(dir.path(), &features, &options)
            });
            accepted(r.map_err(|e| e.to_string()), path)
        })
    });
}

// ---------------------------------------------------------------------------
// `sskernel cluster`'s input: points or a precomputed distance matrix

#[test]
fn fuzz_cluster_input() {
    let dir = scratch_dir();
    let path = dir.path().join("points.npy");
    let points: Vec<f64> = (0..12)
        .flat_map(|i| {
            let c = if i < 6 { 0.0 } else { 5.0 };
            [c + i as f64 * 0.1, c - i as f64 * 0.05]
        })
        .collect();
    let f8 = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>();
    let f4 = |v: &[f64]| {
        v.iter()
            .flat_map(|x| (*x as f32).to_le_bytes())
            .collect::<Vec<_>>()
    };
    let n = 8;
    let dist: Vec<f64> = (0..n * n)
        .map(|k| ((k / n) as f64 - (k % n) as f64).abs() + if k / n == k % n { 0.0 } else { 0.5 })
        .collect();
    let seeds = [
        (
            npy::encode("<f8", &[12, 2], &f8(&points)),
            Metric::Euclidean,
        ),
        (
            npy::encode("<f4", &[12, 2], &f4(&points)),
            Metric::Euclidean,
        ),
        (npy::encode("<f8", &[n, n], &f8(&dist)), Metric::Precomputed),
    ];
    let params = |min_cluster_size, min_samples| HdbscanParams {
        min_cluster_size,
        min_samples,
        selection: Selection::Eom,
        allow_single_cluster: false,
    };
    let settings = [params(2, None), params(3, Some(1)), params(5, Some(2))];
    let options = |metric: Metric| ClusterOptions {
        metric,
        ..Default::default()
    };
    for (seed, metric) in &seeds {
        put(&path, seed);
        cluster_file(&path, &settings[0], options(*metric)).expect("a valid seed");
    }
    fuzz::run("fuzz_cluster_input", |c| {
        let (seed, metric) = c.pick(&seeds);
        let params = *c.pick(&settings);
        let bytes = c.mutate(seed);
        c.log.push(format!("{metric:?}, {params:?}"));
        put(&path, &bytes);
        let r = bounded("cluster_file", bytes.len(), 64, SLACK, || {
            cluster_file(&path, &params, options(*metric))
        });
        accepted(r.map_err(|e| format!("{e:#}")), &path)
    });
}
