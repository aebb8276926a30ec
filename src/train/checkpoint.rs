//! `checkpoint.safetensors`: every parameter and BN running statistic under a
//! stable name (`trunk.conv1.weight`, `branches.fc1.weight` `[B, 100, 640]`, …),
//! the task→branch map, and the epoch/step in the metadata. Written atomically.

use super::write_atomically;
use crate::backend::Backend;
use crate::model::Net;
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// Saves `net` to `path` (temp file + rename).
pub fn save<B: Backend>(
    be: &B,
    net: &Net<B>,
    path: &Path,
    epoch: usize,
    steps: usize,
) -> Result<()> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for p in net.params() {
        let host = be.download(&p.value);
        tensors.push((
            p.name.clone(),
            p.shape.clone(),
            bytemuck::cast_slice(&host[..p.len()]).to_vec(),
        ));
    }
    for (name, buf) in net.buffers() {
        let host = be.download(buf);
        tensors.push((
            name.to_string(),
            vec![host.len()],
            bytemuck::cast_slice(&host).to_vec(),
        ));
    }
    let map: Vec<i64> = net.task_branch.iter().map(|&b| b as i64).collect();
    tensors.push((
        "heads.task_branch".into(),
        vec![map.len()],
        bytemuck::cast_slice(&map).to_vec(),
    ));

    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let dtype = if name == "heads.task_branch" {
                Dtype::I64
            } else {
                Dtype::F32
            };
            Ok((name.as_str(), TensorView::new(dtype, shape.clone(), bytes)?))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    // One metadata key: a HashMap with several would serialise in a random order
    // and make the same model's file differ from run to run.
    let about = serde_json::json!({ "epoch": epoch, "steps": steps, "spec": &net.spec });
    let metadata = HashMap::from([("sskernel".to_string(), about.to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata))?;
    write_atomically(path, &bytes)
}

/// Loads the tensors saved by [`save`] into `net`, which must have the same spec.
pub fn load<B: Backend>(be: &B, net: &mut Net<B>, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a valid safetensors file", path.display()))?;
    let f32s = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let t = st
            .tensor(name)
            .with_context(|| format!("{}: tensor {name} is missing", path.display()))?;
        if t.dtype() != Dtype::F32 || t.shape() != shape {
            bail!(
                "{}: tensor {name} is {:?} {:?}, expected F32 {:?}",
                path.display(),
                t.dtype(),
                t.shape(),
                shape
            );
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };
    for p in net.params_mut() {
        let host = f32s(&p.name, &p.shape)?;
        p.value = be.upload(&host);
    }
    for (name, buf) in net.buffers_mut() {
        let len = be.buf_len(buf);
        *buf = be.upload(&f32s(name, &[len])?);
    }
    Ok(())
}
