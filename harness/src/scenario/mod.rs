//! The scenario file format (`apiVersion: zdt/v1alpha1`, `kind: Scenario`):
//! strict decoding into versioned public types, validation into an internal
//! form with defaults, and `variants:` overlays. See docs/scenario-format.md.

pub mod cli;
