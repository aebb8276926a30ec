//! `checkpoint.safetensors`: every parameter and BN running statistic under a
//! stable name (`trunk.conv1.weight`, `branches.fc1.weight` `[B, 100, 640]`, …),
//! the task→branch map and each branch's origin task (I64), and the epoch/step in
//! the metadata.

use crate::backend::Backend;
use crate::model::{Branched, Branches, Net, Param};
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

/// The safetensors bytes of `net` after `epoch` / `steps`; the run writes them
/// with `write_atomically` (temp file + fsync + rename).
pub fn serialize<B: Backend>(be: &B, net: &Net<B>, epoch: usize, steps: usize) -> Result<Vec<u8>> {
    let about = serde_json::json!({ "epoch": epoch, "steps": steps, "spec": &net.spec });
    let model = Model {
        params: &net.params(),
        buffers: &net.buffers(),
        branches: net.branches(),
    };
    serialize_model(be, model, about)
}

/// What a checkpoint holds of any net: its parameters, its non-trainable buffers
/// and its branches' task map and origins.
pub struct Model<'a, B: Backend> {
    pub params: &'a [&'a Param<B>],
    pub buffers: &'a [(&'a str, &'a B::Buf)],
    pub branches: &'a Branches<B>,
}

/// The safetensors bytes of `model`, `about` (epoch, steps, spec) as the metadata.
/// Refuses a model with a non-finite parameter: the last good checkpoint stays.
pub fn serialize_model<B: Backend>(
    be: &B,
    model: Model<'_, B>,
    about: serde_json::Value,
) -> Result<Vec<u8>> {
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut f32s = |name: &str, shape: Vec<usize>, host: &[f32]| {
        let bytes = bytemuck::cast_slice(host).to_vec();
        tensors.push((name.to_string(), Dtype::F32, shape, bytes));
    };
    for p in model.params {
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
    for (name, buf) in model.buffers {
        let host = be.download(buf);
        f32s(name, vec![host.len()], &host);
    }
    for (name, map) in [
        (TASK_BRANCH, &model.branches.task_branch),
        (BRANCH_ORIGIN, &model.branches.branch_origin),
    ] {
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
    // One metadata key: a HashMap with several would serialise in a random order
    // and make the same model's file differ from run to run.
    let metadata = HashMap::from([("sskernel".to_string(), about.to_string())]);
    Ok(safetensors::serialize(views, Some(metadata))?)
}

/// Loads the tensors saved by [`serialize`] into `net`, built with the same spec; a
/// checkpoint of a run whose branches merged first prunes `net` to its branches.
///
/// Everything is checked before `net` changes, so a damaged file leaves `net` as it
/// was: the maps (task → branch within the branches; origins distinct and within
/// the net's branches), every tensor's dtype and shape, and every value finite
/// (`serialize` never writes a non-finite one, so such a file is damaged).
pub fn load<B: Backend>(be: &B, net: &mut Net<B>, path: &Path) -> Result<()> {
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
    if task_branch.len() != net.spec.tasks
        || branches == 0
        || branches > net.spec.branches
        || task_branch.iter().any(|&b| b >= branches)
    {
        bail!(
            "{}: task→branch map {task_branch:?} over {branches} branches does not fit \
             a net of {} tasks and {} branches",
            path.display(),
            net.spec.tasks,
            net.spec.branches
        );
    }
    // Each branch was created for a distinct branch of the unmerged net.
    let mut seen = vec![false; net.spec.branches];
    if origin
        .iter()
        .any(|&o| o >= seen.len() || std::mem::replace(&mut seen[o], true))
    {
        bail!(
            "{}: branch origins {origin:?} are not distinct branches of a net of {} branches",
            path.display(),
            net.spec.branches
        );
    }
    // A merged run's branch tensors hold `branches` rows of the net's.
    let branch_names: Vec<String> = net
        .branches
        .params()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let params = net
        .params()
        .iter()
        .map(|p| {
            let mut shape = p.shape.clone();
            if branch_names.contains(&p.name) {
                shape[0] = branches;
            }
            f32s(&p.name, &shape)
        })
        .collect::<Result<Vec<_>>>()?;
    let buffers = net
        .buffers()
        .iter()
        .map(|(name, buf)| f32s(name, &[be.buf_len(buf)]))
        .collect::<Result<Vec<_>>>()?;

    if branches < net.spec.branches {
        net.prune(be, &(0..branches).collect::<Vec<_>>(), task_branch);
    } else {
        net.branches.task_branch = task_branch;
    }
    net.branches.branch_origin = origin;
    for (p, host) in net.params_mut().into_iter().zip(&params) {
        p.value = be.upload(host);
    }
    for ((_, buf), host) in net.buffers_mut().into_iter().zip(&buffers) {
        *buf = be.upload(host);
    }
    Ok(())
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
