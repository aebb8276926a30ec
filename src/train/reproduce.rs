//! `sskernel reproduce DATASET`: STL, MTL and Selective Sharing with every
//! criterion on the same seeds, and one table like the paper's Table 1
//! (`table.md` + `table.json`, mean ± std over seeds; written by `report::table`).

use super::{train, RunSummary, TrainConfig};
use crate::atomic_file::{write as write_atomically, write_json};
use crate::backend::Backend;
use crate::data::Dataset;
use crate::model::Mode;
use crate::report::table::{self, Row};
pub use crate::run::label;
use crate::sharing::criteria::Criterion;
use anyhow::Result;
use std::path::Path;

/// The table's rows, in order. The criterion matters only for `Selective`.
pub const CONFIGURATIONS: [(Mode, Criterion); 6] = [
    (Mode::Stl, Criterion::Similarity),
    (Mode::Mtl, Criterion::Similarity),
    (Mode::Selective, Criterion::Similarity),
    (Mode::Selective, Criterion::Dissimilarity),
    (Mode::Selective, Criterion::Variance),
    (Mode::Selective, Criterion::Random),
];

/// The configurations named in `names` (labels as [`label`] gives them), in the
/// table's order; all of them when `names` is empty.
pub fn configurations(names: &[String]) -> Result<Vec<(Mode, Criterion)>> {
    let all: Vec<String> = CONFIGURATIONS.iter().map(|&(m, c)| label(m, c)).collect();
    if let Some(unknown) = names.iter().find(|n| !all.contains(n)) {
        anyhow::bail!(
            "--configs: unknown configuration `{unknown}`; expected some of {}",
            all.join(", ")
        );
    }
    Ok(CONFIGURATIONS
        .into_iter()
        .zip(&all)
        .filter(|(_, l)| names.is_empty() || names.contains(l))
        .map(|(c, _)| c)
        .collect())
}

/// Trains every configuration in `configs` (their `out` directories lie under
/// `out`) and writes `out/table.md`, `out/table.json` and `out/table.png`.
pub fn run<B: Backend>(
    be: &B,
    configs: &[TrainConfig],
    data: &Dataset,
    out: &Path,
) -> Result<Vec<Row>> {
    let mut results: Vec<(String, u64, RunSummary)> = Vec::new();
    for cfg in configs {
        let name = cfg.label();
        println!(
            "== reproduce: {name}, seed {} → {}",
            cfg.seed,
            cfg.out.display()
        );
        results.push((name, cfg.seed, train(be, cfg, data)?));
    }
    let rows = table::rows(&results);
    write_json(&out.join("table.json"), &rows)?;
    crate::report::plot::write_table(&out.join(table::TABLE_PNG), &rows)?;
    let md = table::markdown(&rows, data, configs);
    write_atomically(&out.join("table.md"), md.as_bytes())?;
    println!("{md}");
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_keep_the_table_order_and_reject_unknown_names() {
        assert_eq!(configurations(&[]).unwrap(), CONFIGURATIONS.to_vec());
        let names = ["selective-random".to_string(), "mtl".to_string()];
        assert_eq!(
            configurations(&names).unwrap(),
            vec![
                (Mode::Mtl, Criterion::Similarity),
                (Mode::Selective, Criterion::Random)
            ]
        );
        let err = configurations(&["selective-ward".to_string()]).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("selective-ward") && err.contains("selective-variance"),
            "{err}"
        );
    }
}
