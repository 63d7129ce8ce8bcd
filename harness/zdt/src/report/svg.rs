//! Hand-written SVG: scales, ticks and a string builder. Charts here are a
//! few hundred elements; a plotting crate would add far more code than it
//! saves and would not give us the class names the tests and the CSS use.

use std::fmt::Write;

use super::format::escape;

/// Okabe & Ito's palette: distinguishable with every common colour-vision
/// deficiency, and in greyscale by lightness.
pub(crate) const BLUE: &str = "#0072B2";
pub(crate) const ORANGE: &str = "#E69F00";
pub(crate) const SKY: &str = "#56B4E9";
pub(crate) const GREEN: &str = "#009E73";
pub(crate) const YELLOW: &str = "#F0E442";
pub(crate) const VERMILLION: &str = "#D55E00";
pub(crate) const PURPLE: &str = "#CC79A7";
pub(crate) const BLACK: &str = "#000000";
pub(crate) const GREY: &str = "#999999";

/// Categorical series (nodes, pods, variants), most distinct first.
pub(crate) const CATEGORICAL: [&str; 8] =
    [BLUE, ORANGE, GREEN, PURPLE, SKY, VERMILLION, YELLOW, BLACK];

/// Dash patterns paired with categorical colours so lines differ by more
/// than hue.
pub(crate) const DASHES: [&str; 4] = ["", "6 3", "2 2", "8 3 2 3"];

/// The SVG namespace: the only URL a report may contain.
pub(crate) const XMLNS: &str = "http://www.w3.org/2000/svg";

#[derive(Debug, Clone, Copy)]
pub(crate) struct Linear {
    pub d0: f64,
    pub d1: f64,
    pub r0: f64,
    pub r1: f64,
}

impl Linear {
    pub(crate) fn new(domain: (f64, f64), range: (f64, f64)) -> Self {
        Self {
            d0: domain.0,
            d1: domain.1,
            r0: range.0,
            r1: range.1,
        }
    }

    pub(crate) fn at(&self, v: f64) -> f64 {
        let span = self.d1 - self.d0;
        if span.abs() < f64::EPSILON {
            return self.r0;
        }
        self.r0 + (v - self.d0) / span * (self.r1 - self.r0)
    }
}

/// A log10 scale (latency spans 1 ms to 10 s in one drain).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Log {
    lin: Linear,
}

impl Log {
    pub(crate) fn new(domain: (f64, f64), range: (f64, f64)) -> Self {
        Self {
            lin: Linear::new((domain.0.log10(), domain.1.log10()), range),
        }
    }

    pub(crate) fn at(&self, v: f64) -> f64 {
        self.lin.at(v.max(10f64.powf(self.lin.d0)).log10())
    }

    /// Powers of ten inside the domain.
    pub(crate) fn ticks(&self) -> Vec<f64> {
        let (lo, hi) = (self.lin.d0.floor() as i32, self.lin.d1.ceil() as i32);
        (lo..=hi).map(|e| 10f64.powi(e)).collect()
    }
}

/// Round tick values covering `[lo, hi]`, about `target` of them.
pub(crate) fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    let mut out = Vec::new();
    let mut v = first;
    while v <= hi + step * 1e-9 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    out
}

/// The smallest round number ≥ v (axis maxima).
pub(crate) fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * mag)
}

/// Compact axis numbers: 5000 → 5k.
pub(crate) fn num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        let k = v / 1000.0;
        if (k - k.round()).abs() < 1e-9 {
            format!("{k:.0}k")
        } else {
            format!("{k:.1}k")
        }
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Latency axis labels.
pub(crate) fn ms_label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{} s", num(v / 1000.0))
    } else if v >= 1.0 {
        format!("{} ms", num(v))
    } else {
        format!("{} µs", num(v * 1000.0))
    }
}

/// An SVG document being written. Every text goes through [`escape`].
pub(crate) struct Svg {
    buf: String,
}

impl Svg {
    pub(crate) fn new(width: f64, height: f64, class: &str, label: &str) -> Self {
        let mut buf = String::new();
        let _ = write!(
            buf,
            r#"<svg xmlns="{XMLNS}" class="{}" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" role="img" aria-label="{}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif" font-size="11">"#,
            escape(class),
            escape(label)
        );
        let _ = write!(buf, "<title>{}</title>", escape(label));
        Self { buf }
    }

    /// Raw markup; callers escape their text.
    pub(crate) fn raw(&mut self, s: &str) {
        self.buf.push_str(s);
    }

    pub(crate) fn open(&mut self, attrs: &str) {
        let _ = write!(self.buf, "<g {attrs}>");
    }

    pub(crate) fn close(&mut self) {
        self.buf.push_str("</g>");
    }

    pub(crate) fn title(&mut self, text: &str) {
        let _ = write!(self.buf, "<title>{}</title>", escape(text));
    }

    pub(crate) fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, style: &str) {
        let _ = write!(
            self.buf,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {style}/>"#
        );
    }

    pub(crate) fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, style: &str) {
        if w <= 0.0 || h <= 0.0 {
            return;
        }
        let _ = write!(
            self.buf,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.2}" height="{h:.2}" {style}/>"#
        );
    }

    /// A rect with a tooltip.
    pub(crate) fn rect_titled(&mut self, x: f64, y: f64, w: f64, h: f64, style: &str, title: &str) {
        if w <= 0.0 || h <= 0.0 {
            return;
        }
        let _ = write!(
            self.buf,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.2}" height="{h:.2}" {style}><title>{}</title></rect>"#,
            escape(title)
        );
    }

    pub(crate) fn text(&mut self, x: f64, y: f64, text: &str, style: &str) {
        let _ = write!(
            self.buf,
            r#"<text x="{x:.1}" y="{y:.1}" {style}>{}</text>"#,
            escape(text)
        );
    }

    /// A polyline through `pts`; `None` breaks the line (no data).
    pub(crate) fn polyline(&mut self, pts: &[Option<(f64, f64)>], style: &str) {
        for run in pts.split(Option::is_none) {
            let coords: Vec<String> = run
                .iter()
                .flatten()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            match coords.len() {
                0 => {}
                1 => {
                    let (x, y) = run[0].unwrap_or_default();
                    let _ = write!(
                        self.buf,
                        r#"<circle cx="{x:.1}" cy="{y:.1}" r="2" {style}/>"#
                    );
                }
                _ => {
                    let _ = write!(
                        self.buf,
                        r#"<polyline fill="none" points="{}" {style}/>"#,
                        coords.join(" ")
                    );
                }
            }
        }
    }

    pub(crate) fn finish(mut self) -> String {
        self.buf.push_str("</svg>");
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            ticks(0.0, 60.0, 6),
            vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
        );
        assert_eq!(ticks(0.0, 7.0, 6), vec![0.0, 2.0, 4.0, 6.0]);
        assert_eq!(nice_max(5100.0), 6000.0);
        assert_eq!(num(5000.0), "5k");
        assert_eq!(ms_label(10_000.0), "10 s");
    }

    #[test]
    fn scales_map_domain_to_range() {
        let x = Linear::new((0.0, 10.0), (100.0, 200.0));
        assert_eq!(x.at(5.0), 150.0);
        let y = Log::new((1.0, 1000.0), (300.0, 0.0));
        assert!((y.at(10.0) - 200.0).abs() < 1e-9);
        assert_eq!(y.ticks(), vec![1.0, 10.0, 100.0, 1000.0]);
    }

    #[test]
    fn text_is_escaped() {
        let mut s = Svg::new(10.0, 10.0, "c", "a<b");
        s.text(0.0, 0.0, "</svg><script>", "");
        let out = s.finish();
        assert!(!out.contains("<script>"));
        assert!(out.contains("&lt;/svg&gt;&lt;script&gt;"));
    }
}
