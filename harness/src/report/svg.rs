//! Hand-written SVG charts.
