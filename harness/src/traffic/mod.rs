//! An open-model, constant-rate HTTP load generator: request i is due at
//! t0 + i/rate whatever happened before, latency is measured from the due
//! time, and results aggregate into HDR histograms and time buckets.

pub mod cli;
