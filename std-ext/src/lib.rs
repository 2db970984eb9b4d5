//! recourse (work in progress).
pub use recourse_core as core;
