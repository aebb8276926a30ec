//! sskernel: multi-task image models with Selective Sharing.
//! See docs/ARCHITECTURE.md for the map of modules.

pub mod atomic_file;
pub mod backend;
pub mod crash;
pub mod data;
pub mod explain;
pub mod model;
pub mod report;
pub mod run;
pub mod sharing;
pub mod train;
