//! One module per subcommand: its clap arguments and the glue from them to
//! the libraries.

pub mod attack;
pub mod clean;
pub mod emulator;
pub mod internal;
pub mod lb;
pub mod long_run;
pub mod report;
pub mod run;
pub mod serve;
pub mod validate;
