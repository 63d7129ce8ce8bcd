// Every scenario file is a `cargo test` case (tests/it/scenarios.rs collects
// them with rstest's #[files]); re-run the build script when the directory
// changes so a new file becomes a new test without a manual clean.
fn main() {
    println!("cargo:rerun-if-changed=../../scenarios");
}
