//! HDBSCAN with the core distances and the Borůvka MST on the kernel simulator
//! (`cluster --device sim`, kernels/mreach.cu) against the CPU: identical labels,
//! probabilities, MST rows (so the same weight sum) and core distances, bit for bit.
//! Blobs with noise in d = 2, 8 and 24 (the CPU takes its dense path at d = 24 and
//! for n < 4096: equal there because the blobs have no tied distances); points on
//! an integer grid with duplicates against the CPU's tree path (equal even with ties:
//! the same total order of edges); the CLI with float32 and float64 files; and the
//! device's refusals before any work.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sskernel::backend::sim::Sim;
use sskernel::backend::{DeviceChoice, Memory, Mreach, MreachOps, Nearest};
use sskernel::data::npy;
use sskernel::sharing::cluster_cmd::{run_cluster, ClusterOptions};
use sskernel::sharing::hdbscan::device::hdbscan_device;
use sskernel::sharing::hdbscan::{hdbscan_with, Algorithm, Clustering, HdbscanParams};

/// Gaussian-ish blobs (sums of uniforms) and 10% uniform noise: no tied distances.
fn blobs(n: usize, d: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<f64> = (0..5 * d).map(|_| rng.random_range(-10.0..10.0)).collect();
    let mut pts = Vec::with_capacity(n * d);
    for i in 0..n {
        if i % 10 == 9 {
            pts.extend((0..d).map(|_| rng.random_range(-14.0..14.0)));
        } else {
            let c = &centres[(i % 5) * d..(i % 5 + 1) * d];
            pts.extend(
                c.iter()
                    .map(|x| x + (0..4).map(|_| rng.random_range(-1.0..1.0)).sum::<f64>()),
            );
        }
    }
    pts
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn mst_sum(c: &Clustering) -> f64 {
    c.mst.iter().map(|e| e.2).sum()
}

/// Everything the clustering outputs, compared exactly.
fn assert_same(what: &str, dev: &Clustering, cpu: &Clustering) {
    let core = |c: &Clustering| bits(&c.core_distances);
    same(&format!("{what}: core distances"), &core(dev), &core(cpu));
    same(&format!("{what}: MST rows"), &dev.mst, &cpu.mst);
    let sums = (mst_sum(dev).to_bits(), mst_sum(cpu).to_bits());
    assert_eq!(sums.0, sums.1, "{what}: MST weight sum");
    same(&format!("{what}: labels"), &dev.labels, &cpu.labels);
    let prob = |c: &Clustering| bits(&c.probabilities);
    same(&format!("{what}: probabilities"), &prob(dev), &prob(cpu));
    let glosh = |c: &Clustering| bits(&c.outlier_scores);
    same(&format!("{what}: GLOSH"), &glosh(dev), &glosh(cpu));
    same(&format!("{what}: selected"), &dev.selected, &cpu.selected);
}

/// a == b, or a panic naming the first difference and how many there are.
fn same<T: PartialEq + std::fmt::Debug>(what: &str, dev: &[T], cpu: &[T]) {
    assert_eq!(dev.len(), cpu.len(), "{what}: lengths");
    let diff: Vec<usize> = (0..dev.len()).filter(|&i| dev[i] != cpu[i]).collect();
    if let Some(&i) = diff.first() {
        panic!(
            "{what}: {} of {} differ; first at {i}: device {:?}, cpu {:?}",
            diff.len(),
            dev.len(),
            dev[i],
            cpu[i]
        );
    }
}

#[test]
fn sim_equals_cpu_on_blobs_with_noise() {
    let sim = Sim::new().unwrap();
    for (n, d, mcs, ms) in [
        (3000, 2, 15, None),
        (2500, 8, 10, Some(5)),
        (2000, 24, 8, Some(3)),
    ] {
        let pts = blobs(n, d, 77 + d as u64);
        let params = HdbscanParams {
            min_samples: ms,
            ..HdbscanParams::new(mcs)
        };
        let (cpu, _) = hdbscan_with(&pts, n, d, &params, Algorithm::Auto, &mut |_| {}).unwrap();
        let (dev, times) = hdbscan_device(&sim, &pts, n, d, &params, &mut |_| {}).unwrap();
        assert!(
            cpu.n_clusters() >= 2,
            "n {n} d {d}: a test without clusters tests little"
        );
        assert_same(&format!("n {n} d {d}"), &dev, &cpu);
        eprintln!(
            "n {n} d {d}: {} clusters, {} noise, MST sum {:.6}; sim: {:.2} s core, {:.2} s MST ({} rounds)",
            dev.n_clusters(),
            dev.noise_count(),
            mst_sum(&dev),
            times.core_distances,
            times.mst,
            times.boruvka_rounds
        );
    }
}

#[test]
fn sim_equals_cpu_tree_path_with_ties_and_duplicates() {
    let sim = Sim::new().unwrap();
    let (n, d) = (1500, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let pts: Vec<f64> = (0..n * d).map(|_| rng.random_range(0..30) as f64).collect();
    for k in [1, 4, 9] {
        let params = HdbscanParams {
            min_samples: Some(k),
            ..HdbscanParams::new(6)
        };
        let (cpu, _) = hdbscan_with(&pts, n, d, &params, Algorithm::Tree, &mut |_| {}).unwrap();
        let (dev, _) = hdbscan_device(&sim, &pts, n, d, &params, &mut |_| {}).unwrap();
        assert_same(&format!("grid, k {k}"), &dev, &cpu);
    }
}

#[test]
fn cli_device_sim_equals_cpu_for_f32_and_f64_files() {
    let dir = tempfile::tempdir().unwrap();
    let (n, d) = (1200, 3);
    let pts = blobs(n, d, 3);
    let f64_path = dir.path().join("points64.npy");
    npy::write_f64_matrix(&f64_path, &pts, n, d).unwrap();
    let f32_bytes: Vec<u8> = pts.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
    let f32_path = dir.path().join("points32.npy");
    std::fs::write(&f32_path, npy::encode("<f4", &[n, d], &f32_bytes)).unwrap();
    let params = HdbscanParams::new(10);
    for path in [&f64_path, &f32_path] {
        let mut labels = Vec::new();
        for device in [DeviceChoice::Cpu, DeviceChoice::Sim] {
            let out = dir.path().join(format!("out-{device:?}"));
            let options = ClusterOptions {
                device: Some(device),
                ..Default::default()
            };
            let s = run_cluster(path, &params, options, &out).unwrap();
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                    .unwrap();
            let secs = &json["seconds"];
            let phases = [
                "read",
                "device_setup",
                "core_distances",
                "mst",
                "tree",
                "selection",
                "other",
            ];
            for phase in phases {
                assert!(secs[phase].as_f64().unwrap() >= -1e-9, "{phase}: {secs}");
            }
            // The phases and `other` account for the whole wall time.
            let sum: f64 = phases.iter().map(|p| secs[*p].as_f64().unwrap()).sum();
            let total = secs["total"].as_f64().unwrap();
            assert!((sum - total).abs() <= 1e-9 * total.max(1.0), "{secs}");
            assert_eq!(json["device"], s.device.as_str());
            assert_eq!(s.device.starts_with("sim"), device == DeviceChoice::Sim);
            labels.push((
                std::fs::read(out.join("labels.npy")).unwrap(),
                std::fs::read(out.join("probabilities.npy")).unwrap(),
            ));
        }
        assert!(
            labels[0] == labels[1],
            "{}: sim and cpu files differ",
            path.display()
        );
    }
}

/// A device that reports `free` bytes and fails if any op runs.
struct Tiny(u64);

impl Memory for Tiny {
    type Buf = Vec<f32>;
    fn name(&self) -> String {
        "tiny".into()
    }
    fn zeros(&self, _: usize) -> Vec<f32> {
        panic!("work started")
    }
    fn upload(&self, _: &[f32]) -> Vec<f32> {
        panic!("work started")
    }
    fn download(&self, _: &Vec<f32>) -> Vec<f32> {
        panic!("work started")
    }
    fn write(&self, _: &mut Vec<f32>, _: &[f32]) {
        panic!("work started")
    }
    fn buf_len(&self, b: &Vec<f32>) -> usize {
        b.len()
    }
    fn free_memory(&self) -> Option<u64> {
        Some(self.0)
    }
}

impl MreachOps for Tiny {
    fn mreach_knn(
        &self,
        _: &Mreach,
        _: &Vec<f32>,
        _: &mut Vec<f32>,
        _: &mut Vec<f32>,
        _: &mut Vec<f32>,
    ) {
        panic!("work started")
    }
    fn mreach_round(
        &self,
        _: &Mreach,
        _: &Vec<f32>,
        _: &Vec<f32>,
        _: Nearest<'_, Vec<f32>>,
        _: &Vec<f32>,
        _: &mut Vec<f32>,
    ) {
        panic!("work started")
    }
}

#[test]
fn device_refusals_come_before_any_work() {
    let (n, d) = (1000, 4);
    let pts = blobs(n, d, 1);
    let params = HdbscanParams::new(5);
    // 1000 × (8·4 + 12·7 + 44) + 32 tiles × (16·4 + 12) bytes = 162,432.
    let e = hdbscan_device(&Tiny(162_431), &pts, n, d, &params, &mut |_| {}).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("162432 bytes") && msg.contains("tiny") && msg.contains("162431"),
        "{msg}"
    );
    let big_k = HdbscanParams {
        min_samples: Some(31),
        ..params
    };
    let e = hdbscan_device(&Tiny(u64::MAX), &pts, n, d, &big_k, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("min_samples = 31"), "{e}");
    let mut nan = pts.clone();
    nan[5] = f64::NAN;
    let e = hdbscan_device(&Tiny(u64::MAX), &nan, n, d, &params, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
}
