//! Reports: vegeta-compatible text/JSON, Markdown, self-contained HTML,
//! JUnit XML, comparisons across variants and against a baseline.

pub mod cli;
