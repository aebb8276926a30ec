//! Issue 13: a training step recorded once as a launch program and replayed equals
//! the eagerly launched steps bit for bit in the simulator — every parameter, the
//! optimiser's state and step state, the gradient capture and every loss — for SGD
//! and Adam, across the capture's restart in place (the program kept) and a pruning
//! (which reallocates the branch buffers, so the program is recorded again), with a
//! program kept per batch size (an epoch's short last batch does not make the full
//! batch record again). Also: the program holds every launch of a step.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sskernel::backend::sim::Sim;
use sskernel::backend::{ops::*, OptimStep};
use sskernel::data::{self, DatasetName};
use sskernel::model::{Activations, Branched, Mode, Net, NetSpec, StepProgram};
use sskernel::train::{DeviceSplit, Inputs};

const BATCH: usize = 4;
const BEFORE_PRUNE: usize = 20;
const AFTER_PRUNE: usize = 10;

/// Everything a run leaves: the losses of every step, then every parameter with its
/// optimiser state, the capture, and the launches of one recorded step.
struct Run {
    losses: Vec<Vec<f32>>,
    tensors: Vec<(String, Vec<f32>)>,
    launches: Option<usize>,
}

fn run(sim: &Sim, step: OptimStep, replay: bool) -> Run {
    let data = data::load(DatasetName::Mnist, None).unwrap();
    let train = Inputs::new(&data.train);
    let mut net = Net::new(
        sim,
        NetSpec::mnist(Mode::Selective, 10),
        &mut ChaCha8Rng::seed_from_u64(5),
    );
    let mut act = Activations::new(sim, &net.spec, BATCH);
    net.branches.start_capture(sim);
    let mut program = StepProgram::default();
    let (mut images, mut targets) = (Vec::new(), Vec::new());
    let mut losses = Vec::new();
    let mut launches = None;
    let mut read_captures = Vec::new();
    for k in 0..BEFORE_PRUNE + AFTER_PRUNE {
        if k == BEFORE_PRUNE / 2 {
            // The sharing step's read and restart, the program kept: the capture
            // restarts in place, where the recorded accumulation points.
            let capture = net.branches.capture().expect("the capture is on");
            read_captures.push(("capture read mid-run".to_string(), sim.download(capture)));
            net.branches.clear_capture(sim);
        }
        if k == BEFORE_PRUNE {
            // Tasks 0–9 onto five branches: every `[branches, …]` buffer shrinks.
            net.prune(sim, &[0, 3, 5, 6, 9], (0..10).map(|t| t / 2).collect());
            program.forget();
        }
        // A smaller batch at the end of the first part and in the middle of the
        // second: each recorded once for its size and pruned state; the full batch
        // after the middle one replays the program it recorded before.
        let n = if k + 1 == BEFORE_PRUNE || k == BEFORE_PRUNE + 5 {
            BATCH - 1
        } else {
            BATCH
        };
        let idx: Vec<usize> = (0..n).map(|i| (k * 11 + i * 17) % train.len()).collect();
        train.gather(&idx, 10, &mut images, &mut targets);
        sim.write(&mut act.x, &images);
        sim.write(&mut act.targets, &targets);
        if replay {
            let before = sim.launch_count();
            // SAFETY: one net and one activation set; forgotten after the prune.
            unsafe { program.train_step(sim, &mut net, &mut act, n, &step) };
            if k == 1 {
                // A replay runs the program's launches and nothing else.
                let ran = (sim.launch_count() - before) as usize;
                launches = program.launches();
                assert_eq!(launches, Some(ran), "launches of a replayed step");
            }
        } else {
            net.train_step(sim, &mut act, n, &step);
        }
        losses.push(sim.download(&act.loss));
    }
    if replay {
        // Full and short batch before the prune, full and short after it.
        assert_eq!(program.recordings(), 4, "steps recorded");
    }
    let mut tensors = read_captures;
    for p in net.params() {
        tensors.push((p.name.clone(), sim.download(&p.value)));
        for (i, s) in p.state.iter().enumerate() {
            tensors.push((format!("{} state {i}", p.name), sim.download(s)));
        }
    }
    for (name, b) in net.buffers() {
        tensors.push((name.to_string(), sim.download(b)));
    }
    let capture = net.branches.capture().expect("the capture is on");
    tensors.push(("capture".into(), sim.download(capture)));
    let steps = net.step_state(sim).steps(sim);
    tensors.push(("step counter".into(), vec![steps as f32]));
    Run {
        losses,
        tensors,
        launches,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn replay_equals_eager(step: OptimStep) {
    let sim = Sim::with_seed(0);
    let eager = run(&sim, step, false);
    let replayed = run(&sim, step, true);
    let launches = replayed.launches.expect("the sim records programs");
    println!("{step:?}: {launches} launches per recorded selective MTL step (with the capture)");
    assert_eq!(eager.losses.len(), BEFORE_PRUNE + AFTER_PRUNE);
    for (k, (e, r)) in eager.losses.iter().zip(&replayed.losses).enumerate() {
        assert!(e.iter().all(|l| l.is_finite()), "step {k}: loss {e:?}");
        assert_eq!(
            bits(e),
            bits(r),
            "step {k}: loss, eager {e:?} vs replayed {r:?}"
        );
    }
    assert_eq!(eager.tensors.len(), replayed.tensors.len());
    for ((name, e), (_, r)) in eager.tensors.iter().zip(&replayed.tensors) {
        let differ = e.iter().zip(r).filter(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(e.len(), r.len(), "{name}");
        assert_eq!(differ.count(), 0, "{name}: replayed differs from eager");
    }
    let steps = eager.tensors.last().unwrap();
    assert_eq!(
        steps.1,
        [(BEFORE_PRUNE + AFTER_PRUNE) as f32],
        "the step counter"
    );
}

#[test]
fn replayed_sgd_steps_equal_eager_ones_across_a_pruning() {
    replay_equals_eager(OptimStep::Sgd {
        lr: 0.05,
        momentum: 0.5,
    });
}

#[test]
fn replayed_adam_steps_equal_eager_ones_across_a_pruning() {
    replay_equals_eager(OptimStep::Adam {
        lr: 0.002,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    });
}

/// The launches of one MTL training step (issue 13's count, BENCHMARKS.md): the
/// recorded program holds exactly the launches an eager step runs.
#[test]
fn an_mtl_step_program_holds_every_launch_of_the_step() {
    let sim = Sim::with_seed(0);
    let data = data::load(DatasetName::Mnist, None).unwrap();
    let train = Inputs::new(&data.train);
    for mode in [Mode::Mtl, Mode::Stl] {
        let mut net = Net::new(
            &sim,
            NetSpec::mnist(mode, 10),
            &mut ChaCha8Rng::seed_from_u64(1),
        );
        let mut act = Activations::new(&sim, &net.spec, 2);
        let (mut images, mut targets) = (Vec::new(), Vec::new());
        train.gather(&[3, 8], 10, &mut images, &mut targets);
        sim.write(&mut act.x, &images);
        sim.write(&mut act.targets, &targets);
        let step = OptimStep::Sgd {
            lr: 0.02,
            momentum: 0.5,
        };
        let before = sim.launch_count();
        net.train_step(&sim, &mut act, 2, &step);
        let eager = (sim.launch_count() - before) as usize;
        let mut program = StepProgram::default();
        // SAFETY: one net and one activation set.
        unsafe { program.train_step(&sim, &mut net, &mut act, 2, &step) };
        println!("{mode:?}: {eager} kernel launches per training step");
        assert_eq!(program.launches(), Some(eager), "{mode:?}");
    }
}

/// How the batches of [`epoch`] reach the device.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Feed {
    /// `Inputs::gather` on the host, then `Memory::write`, the loss read after
    /// every step (the path before issue 13).
    Host,
    /// `DeviceSplit`, op by op.
    Device,
    /// `DeviceSplit` inside the recorded step program.
    Replayed,
}

/// One short epoch of an MTL net (an order of 27 samples, so the last batch is a
/// partial one) fed as `feed` says: the losses of every step (on the device feeds,
/// from the split's loss log, read once at the end), then every parameter.
fn epoch(sim: &Sim, feed: Feed) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let data = data::load(DatasetName::Mnist, None).unwrap();
    let train = Inputs::new(&data.train);
    let mut net = Net::new(
        sim,
        NetSpec::mnist(Mode::Mtl, 10),
        &mut ChaCha8Rng::seed_from_u64(9),
    );
    let mut act = Activations::new(sim, &net.spec, BATCH);
    let step = OptimStep::Sgd {
        lr: 0.05,
        momentum: 0.5,
    };
    let order: Vec<usize> = (0..27).map(|i| (i * 7919 + 13) % train.len()).collect();
    let mut split = DeviceSplit::new(sim, &train, 10, sim.buf_len(&act.loss), BATCH);
    // Starts one batch in, as a resumed epoch does.
    split.start_epoch(sim, &order, 1);
    let mut program = StepProgram::default();
    let (mut images, mut targets) = (Vec::new(), Vec::new());
    let mut losses = Vec::new();
    let writes_before = sim.write_count();
    let chunks = order.chunks(BATCH).skip(1);
    let steps = chunks.len();
    for (k, chunk) in chunks.enumerate() {
        let n = chunk.len();
        let (reads, writes) = (sim.read_count(), sim.write_count());
        let key = (n, net.branches.task_branch.clone());
        let mut one_step = || {
            split.gather(sim, n, &mut act.x, &mut act.targets);
            net.train_step(sim, &mut act, n, &step);
            split.advance(sim, n, &act.loss);
        };
        match feed {
            Feed::Host => {
                train.gather(chunk, 10, &mut images, &mut targets);
                sim.write(&mut act.x, &images);
                sim.write(&mut act.targets, &targets);
                net.train_step(sim, &mut act, n, &step);
                losses.push(sim.download(&act.loss));
            }
            Feed::Device => one_step(),
            // SAFETY: one net, activation set and split.
            Feed::Replayed => unsafe { program.run(sim, key, &mut one_step) },
        }
        // The first step writes the learning rate into the step state (once: a
        // read and a write); after it, a step copies nothing either way.
        if feed != Feed::Host && k > 0 {
            assert_eq!(
                (sim.read_count(), sim.write_count()),
                (reads, writes),
                "{feed:?}: (device → host, host → device) copies in a step"
            );
        }
    }
    if feed != Feed::Host {
        assert!(sim.write_count() - writes_before <= 1, "{feed:?}: writes");
        // The epoch's losses: batches 1.. of the log, in one read.
        let reads = sim.read_count();
        let (first, log) = split.read_log(sim, 1 + steps);
        assert_eq!(first, 1);
        assert_eq!(sim.read_count() - reads, 1, "{feed:?}: reading the log");
        losses = log.chunks(10).map(<[f32]>::to_vec).collect();
    }
    if feed == Feed::Replayed {
        assert!(program.launches().is_some(), "the last step was recorded");
    }
    let params = net
        .params()
        .iter()
        .map(|p| sim.download(&p.value))
        .collect();
    (losses, params)
}

/// Issue 13: a step that gathers its batch on the device, recorded and replayed,
/// equals the same steps op by op and the host-fed steps bit for bit, over an
/// epoch with a partial last batch; no step copies anything host → device, and
/// the epoch's losses come back from the device's log in one read.
#[test]
fn an_epoch_with_the_data_on_the_device_replays_bit_for_bit() {
    let sim = Sim::with_seed(0);
    let host = epoch(&sim, Feed::Host);
    assert_eq!(host.0.len(), 6);
    for feed in [Feed::Device, Feed::Replayed] {
        let other = epoch(&sim, feed);
        assert_eq!(host.0.len(), other.0.len(), "{feed:?}: steps");
        for (k, (h, o)) in host.0.iter().zip(&other.0).enumerate() {
            assert!(h.iter().all(|l| l.is_finite()), "step {k}: loss {h:?}");
            assert_eq!(bits(h), bits(o), "{feed:?}: step {k} loss");
        }
        for (i, (h, o)) in host.1.iter().zip(&other.1).enumerate() {
            assert_eq!(bits(h), bits(o), "{feed:?}: parameter {i}");
        }
    }
}
