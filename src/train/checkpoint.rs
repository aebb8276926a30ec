//! `checkpoint.safetensors`: every parameter and BN running statistic under a
//! stable name (`trunk.conv1.weight`, `branches.fc1.weight` `[B, 100, 640]`, …),
//! the task→branch map and each branch's origin task (I64), and the epoch/step in
//! the metadata. A run's last checkpoint also holds what `--resume` needs (see
//! [`serialize_net`]); `best.safetensors` holds the model only.

use crate::backend::Backend;
use crate::model::{Branched, Net, Param};
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// The run directory's checkpoints: the last epoch's, and the best-validation
/// epoch's (the model whose test figures the run reports).
pub const LAST: &str = "checkpoint.safetensors";
pub const BEST: &str = "best.safetensors";

const TASK_BRANCH: &str = "heads.task_branch";
const BRANCH_ORIGIN: &str = "branches.origin";
/// The metadata key of `about` (one key: a HashMap with several would serialise in
/// a random order and make the same model's file differ from run to run).
const ABOUT: &str = "sskernel";
/// Training state: the order of the training split the run draws batches from,
/// Selective Sharing's capture so far, and parameter P's optimiser state `P.stateI`.
const ORDER: &str = "train.order";
const CAPTURE: &str = "branches.capture";

fn state_name(param: &str, i: usize) -> String {
    format!("{param}.state{i}")
}

/// The safetensors bytes of the digit `net` after `epoch` / `steps` (the model
/// only); the run writes them with `write_atomically` (temp file + fsync + rename).
pub fn serialize<B: Backend>(be: &B, net: &Net<B>, epoch: usize, steps: usize) -> Result<Vec<u8>> {
    let about = serde_json::json!({ "epoch": epoch, "steps": steps, "spec": &net.spec });
    serialize_net(be, net, about, None)
}

/// The safetensors bytes of any net: its parameters, non-trainable buffers and
/// branch maps, `about` (epoch, steps, spec, and a training run's position) as the
/// metadata. With `training_order` (the training split's current order) the file
/// is resumable: it also holds every parameter's optimiser state and Selective
/// Sharing's capture so far.
/// Refuses a model with a non-finite parameter: the last good checkpoint stays.
pub fn serialize_net<B: Backend>(
    be: &B,
    net: &impl Branched<B>,
    about: serde_json::Value,
    training_order: Option<&[usize]>,
) -> Result<Vec<u8>> {
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut f32s = |name: &str, shape: Vec<usize>, host: &[f32]| {
        let bytes = bytemuck::cast_slice(host).to_vec();
        tensors.push((name.to_string(), Dtype::F32, shape, bytes));
    };
    let params: Vec<&Param<B>> = net.params();
    for p in &params {
        let host = be.download(&p.value);
        if let Some(i) = host[..p.len()].iter().position(|v| !v.is_finite()) {
            bail!(
                "after epoch {} (step {}) {}[{i}] = {}: the run diverged (lower --lr); \
                 no checkpoint written",
                about["epoch"],
                about["steps"],
                p.name,
                host[i]
            );
        }
        f32s(&p.name, p.shape.clone(), &host[..p.len()]);
    }
    for (name, buf) in net.buffers() {
        let host = be.download(buf);
        f32s(name, vec![host.len()], &host);
    }
    let branches = net.branches();
    let mut indices = vec![
        (TASK_BRANCH, branches.task_branch.clone()),
        (BRANCH_ORIGIN, branches.branch_origin.clone()),
    ];
    if let Some(order) = training_order {
        for p in &params {
            for (i, state) in p.state.iter().enumerate() {
                f32s(
                    &state_name(&p.name, i),
                    p.shape.clone(),
                    &be.download(state)[..p.len()],
                );
            }
        }
        if let Some(capture) = branches.capture() {
            let len = branches.fc1.w.len();
            f32s(CAPTURE, vec![len], &be.download(capture)[..len]);
        }
        indices.push((ORDER, order.to_vec()));
    }
    for (name, map) in indices {
        let map: Vec<i64> = map.iter().map(|&b| b as i64).collect();
        let bytes = bytemuck::cast_slice(&map).to_vec();
        tensors.push((name.to_string(), Dtype::I64, vec![map.len()], bytes));
    }
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            Ok((
                name.as_str(),
                TensorView::new(*dtype, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let metadata = HashMap::from([(ABOUT.to_string(), about.to_string())]);
    Ok(safetensors::serialize(views, Some(metadata))?)
}

/// What [`load`] read besides the tensors it put into the net.
#[derive(Debug)]
pub struct Loaded {
    /// The metadata: epoch, steps, spec, and a training run's position.
    pub about: serde_json::Value,
    /// A resumable checkpoint's order of the training split.
    pub order: Option<Vec<usize>>,
}

/// Loads the tensors saved by [`serialize_net`] into `net`, built with the same
/// spec; a checkpoint of a run whose branches merged first prunes `net` to its
/// branches. A resumable checkpoint also sets every parameter's optimiser state
/// and the capture (none in the file: not capturing).
///
/// Everything is checked before `net` changes, so a damaged file leaves `net` as it
/// was: the maps (task → branch within the branches; origins distinct and within
/// the net's branches), every tensor's dtype and shape, and every value finite
/// (`serialize_net` never writes a non-finite one, so such a file is damaged).
pub fn load<B: Backend>(be: &B, net: &mut impl Branched<B>, path: &Path) -> Result<Loaded> {
    let (tasks, full) = (net.branches().task_branch.len(), net.branches().count());
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    check_data_offsets(&bytes, path)?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a valid safetensors file", path.display()))?;
    let tensor = |name: &str, dtype: Dtype, shape: Option<&[usize]>| {
        let t = st
            .tensor(name)
            .with_context(|| format!("{}: tensor {name} is missing", path.display()))?;
        let shape_ok = shape.map_or(t.shape().len() == 1, |s| t.shape() == s);
        if t.dtype() != dtype || !shape_ok {
            bail!(
                "{}: tensor {name} is {:?} {:?}, expected {dtype:?} {}",
                path.display(),
                t.dtype(),
                t.shape(),
                shape.map_or("[n]".to_string(), |s| format!("{s:?}"))
            );
        }
        Ok(t)
    };
    let indices = |name: &str| -> Result<Vec<usize>> {
        let t = tensor(name, Dtype::I64, None)?;
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .enumerate()
            .map(|(i, v)| {
                usize::try_from(v).map_err(|_| {
                    anyhow::anyhow!("{}: {name}[{i}] = {v}, expected an index", path.display())
                })
            })
            .collect()
    };
    let f32s = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let t = tensor(name, Dtype::F32, Some(shape))?;
        let values: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            bail!(
                "{}: {name}[{i}] = {}; a checkpoint holds finite values only: the file is damaged",
                path.display(),
                values[i]
            );
        }
        Ok(values)
    };

    let task_branch = indices(TASK_BRANCH)?;
    let origin = indices(BRANCH_ORIGIN)?;
    let branches = origin.len();
    if task_branch.len() != tasks
        || branches == 0
        || branches > full
        || task_branch.iter().any(|&b| b >= branches)
    {
        bail!(
            "{}: task→branch map {task_branch:?} over {branches} branches does not fit \
             a net of {tasks} tasks and {full} branches",
            path.display(),
        );
    }
    // Each branch was created for a distinct branch of the unmerged net.
    let mut seen = vec![false; full];
    if origin
        .iter()
        .any(|&o| o >= seen.len() || std::mem::replace(&mut seen[o], true))
    {
        bail!(
            "{}: branch origins {origin:?} are not distinct branches of a net of {full} branches",
            path.display(),
        );
    }
    // A merged run's branch tensors hold `branches` rows of the net's.
    let branch_names: Vec<String> = net
        .branches()
        .params()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let shapes: Vec<Vec<usize>> = net
        .params()
        .iter()
        .map(|p| {
            let mut shape = p.shape.clone();
            if branch_names.contains(&p.name) {
                shape[0] = branches;
            }
            shape
        })
        .collect();
    let names: Vec<String> = net.params().iter().map(|p| p.name.clone()).collect();
    let params = names
        .iter()
        .zip(&shapes)
        .map(|(name, shape)| f32s(name, shape))
        .collect::<Result<Vec<_>>>()?;
    let buffers = net
        .buffers()
        .iter()
        .map(|(name, buf)| f32s(name, &[be.buf_len(buf)]))
        .collect::<Result<Vec<_>>>()?;
    // A resumable checkpoint's optimiser state: `P.state0`, `P.state1`, … as many
    // as the optimiser keeps (every parameter the same number).
    let states = names
        .iter()
        .zip(&shapes)
        .map(|(name, shape)| {
            (0..)
                .map_while(|i| {
                    let name = state_name(name, i);
                    st.tensor(&name).is_ok().then(|| f32s(&name, shape))
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    if states.iter().any(|s| s.len() != states[0].len()) {
        bail!(
            "{}: some parameters have optimiser state and others not: the file is damaged",
            path.display()
        );
    }
    let capture_len = branches * (net.branches().fc1.w.len() / full);
    let capture = match st.tensor(CAPTURE) {
        Ok(_) => Some(f32s(CAPTURE, &[capture_len])?),
        Err(_) => None,
    };
    let order = match st.tensor(ORDER) {
        Ok(_) => Some(indices(ORDER)?),
        Err(_) => None,
    };
    let about = about_of(&bytes, path)?;

    if branches < full {
        net.prune(be, &(0..branches).collect::<Vec<_>>(), task_branch);
    } else {
        net.branches_mut().task_branch = task_branch;
    }
    net.branches_mut().branch_origin = origin;
    let resumable = order.is_some();
    for ((p, host), state) in net.params_mut().into_iter().zip(&params).zip(states) {
        p.value = be.upload(host);
        if resumable {
            p.state = state.iter().map(|s| be.upload(s)).collect();
        }
    }
    for ((_, buf), host) in net.buffers_mut().into_iter().zip(&buffers) {
        *buf = be.upload(host);
    }
    if resumable {
        net.branches_mut()
            .set_capture(capture.map(|c| be.upload(&c)));
    }
    Ok(Loaded { about, order })
}

/// The checkpoint's `about` metadata (JSON); null in a file without it.
fn about_of(bytes: &[u8], path: &Path) -> Result<serde_json::Value> {
    let (_, metadata) = SafeTensors::read_metadata(bytes)
        .with_context(|| format!("{}: not a valid safetensors file", path.display()))?;
    match metadata.metadata().as_ref().and_then(|m| m.get(ABOUT)) {
        Some(text) => serde_json::from_str(text)
            .with_context(|| format!("{}: metadata `{ABOUT}` is not valid JSON", path.display())),
        None => Ok(serde_json::Value::Null),
    }
}

/// Refuses a header whose tensors end past the file. safetensors 0.8 adds the last
/// tensor's end offset to the header length unchecked, so a crafted header whose
/// offsets sum to near 2^64 panics with an overflow in a debug build (release
/// wraps and reports the length mismatch). Anything else wrong with the header is
/// left to `SafeTensors::deserialize` to report.
fn check_data_offsets(bytes: &[u8], path: &Path) -> Result<()> {
    let Some(n) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    else {
        return Ok(());
    };
    let Some((header, data)) = usize::try_from(n)
        .ok()
        .and_then(|n| 8usize.checked_add(n))
        .filter(|&end| end <= bytes.len())
        .map(|end| (&bytes[8..end], bytes.len() - end))
    else {
        return Ok(());
    };
    let Ok(serde_json::Value::Object(tensors)) = serde_json::from_slice(header) else {
        return Ok(());
    };
    for (name, info) in &tensors {
        let end = info["data_offsets"][1].as_u64();
        if let Some(end) = end.filter(|&e| e > data as u64) {
            bail!(
                "{}: not a valid safetensors file: tensor {name} ends at byte {end} of the \
                 data, which holds {data} bytes (truncated or damaged)",
                path.display()
            );
        }
    }
    Ok(())
}
