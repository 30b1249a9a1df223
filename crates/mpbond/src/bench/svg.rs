//! A small SVG line-chart writer for `mpbond bench --svg`: panels stacked one above the other
//! (one per contender), sharing their axes so they compare at a glance, each with a polyline
//! per series, ticks, grid, a legend and vertical marks for events. Self-contained text (no
//! fonts, scripts or external files), readable by browsers and `rsvg-convert`.

use std::fmt::Write as _;

/// One line of a panel.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (a sum of the others).
    pub dashed: bool,
}

/// One plot.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title above the plot.
    pub title: String,
    /// Its series.
    pub series: Vec<Series>,
    /// Vertical marks: `(x, label)`.
    pub marks: Vec<(f64, String)>,
}

/// A chart of panels sharing their axes.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// Line under the title.
    pub subtitle: String,
    /// Label of the x axis.
    pub x_label: String,
    /// Label of the y axis.
    pub y_label: String,
    /// The panels, top to bottom.
    pub panels: Vec<Panel>,
}

/// Colours of the series, in order; the dashed series is drawn in [`DASHED_COLOUR`].
const COLOURS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
];
const DASHED_COLOUR: &str = "#444444";
const MARK_COLOUR: &str = "#d62728";

const WIDTH: f64 = 960.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 160.0;
const PLOT_WIDTH: f64 = WIDTH - LEFT - RIGHT;
const TOP: f64 = 70.0;
const PANEL_HEIGHT: f64 = 160.0;
/// Space above each panel (its title) and below it (the x ticks).
const PANEL_GAP: f64 = 62.0;
const BOTTOM: f64 = 30.0;

/// Escapes text for SVG content and attribute values.
#[must_use]
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Tick positions from 0 to at least `max`: 4 to 10 steps of 1, 2 or 5 times a power of ten.
#[must_use]
pub fn ticks(max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let mut out = vec![0.0];
    while *out.last().unwrap_or(&0.0) < max - step * 1e-9 {
        let next = out.len() as f64 * step;
        out.push(next);
    }
    out
}

/// A tick label without needless decimals.
fn label(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

impl Chart {
    fn extent(&self) -> (f64, f64) {
        let points = self
            .panels
            .iter()
            .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter()));
        let (mut x, mut y) = (0f64, 0f64);
        for &(px, py) in points {
            if px.is_finite() {
                x = x.max(px);
            }
            if py.is_finite() {
                y = y.max(py);
            }
        }
        for p in &self.panels {
            for (mx, _) in &p.marks {
                x = x.max(*mx);
            }
        }
        (x, y)
    }

    /// The chart as an SVG document.
    #[must_use]
    pub fn render(&self) -> String {
        let (xmax, ymax) = self.extent();
        let axes = Axes {
            x: ticks(xmax),
            y: ticks(ymax),
        };
        let height = TOP + self.panels.len() as f64 * (PANEL_HEIGHT + PANEL_GAP) + BOTTOM;
        let mut o = String::new();
        let _ = writeln!(
            o,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            o,
            r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
        );
        let _ = writeln!(
            o,
            r#"<text x="{LEFT}" y="26" font-size="18" font-weight="bold">{}</text>"#,
            escape(&self.title)
        );
        let _ = writeln!(
            o,
            r##"<text x="{LEFT}" y="46" fill="#555555">{}</text>"##,
            escape(&self.subtitle)
        );
        for (n, panel) in self.panels.iter().enumerate() {
            let top = TOP + n as f64 * (PANEL_HEIGHT + PANEL_GAP) + 24.0;
            let _ = writeln!(o, r#"<g class="panel" data-panel="{n}">"#);
            self.frame(&mut o, panel, top, &axes);
            series(&mut o, panel, top, &axes);
            let _ = writeln!(o, "</g>");
        }
        o.push_str("</svg>\n");
        o
    }

    /// A panel's title, grid, ticks, axis labels and marks.
    fn frame(&self, o: &mut String, panel: &Panel, top: f64, axes: &Axes) {
        let bottom = top + PANEL_HEIGHT;
        let _ = writeln!(
            o,
            r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">{}</text>"#,
            top - 8.0,
            escape(&panel.title)
        );
        for &y in &axes.y {
            let py = axes.sy(y, top);
            let _ = writeln!(
                o,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e5e5e5"/>"##,
                LEFT + PLOT_WIDTH
            );
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                py + 4.0,
                label(y)
            );
        }
        for &x in &axes.x {
            let px = axes.sx(x);
            let _ = writeln!(
                o,
                r##"<line x1="{px:.1}" y1="{bottom:.1}" x2="{px:.1}" y2="{:.1}" stroke="#333333"/>"##,
                bottom + 4.0
            );
            let _ = writeln!(
                o,
                r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                bottom + 17.0,
                label(x)
            );
        }
        let _ = writeln!(
            o,
            r##"<rect x="{LEFT}" y="{top:.1}" width="{PLOT_WIDTH:.1}" height="{PANEL_HEIGHT}" fill="none" stroke="#333333"/>"##
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + PLOT_WIDTH / 2.0,
            bottom + 33.0,
            escape(&self.x_label)
        );
        let mid = top + PANEL_HEIGHT / 2.0;
        let _ = writeln!(
            o,
            r#"<text x="18" y="{mid:.1}" text-anchor="middle" transform="rotate(-90 18 {mid:.1})">{}</text>"#,
            escape(&self.y_label)
        );
        for (x, text) in &panel.marks {
            let px = axes.sx(*x);
            let _ = writeln!(
                o,
                r#"<line class="mark" x1="{px:.1}" y1="{top:.1}" x2="{px:.1}" y2="{bottom:.1}" stroke="{MARK_COLOUR}" stroke-dasharray="4 3"/>"#
            );
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" fill="{MARK_COLOUR}" font-size="11">{}</text>"#,
                px + 3.0,
                top + 12.0,
                escape(text)
            );
        }
    }
}

/// The tick positions of both axes, which also fix the scales.
struct Axes {
    x: Vec<f64>,
    y: Vec<f64>,
}

impl Axes {
    fn sx(&self, x: f64) -> f64 {
        LEFT + x / self.x.last().copied().unwrap_or(1.0) * PLOT_WIDTH
    }

    fn sy(&self, y: f64, top: f64) -> f64 {
        top + PANEL_HEIGHT - y / self.y.last().copied().unwrap_or(1.0) * PANEL_HEIGHT
    }
}

/// A panel's polylines and their legend.
fn series(o: &mut String, panel: &Panel, top: f64, axes: &Axes) {
    let mut colours = COLOURS.iter().cycle();
    for (k, s) in panel.series.iter().enumerate() {
        let colour = if s.dashed {
            DASHED_COLOUR
        } else {
            colours.next().copied().unwrap_or(DASHED_COLOUR)
        };
        let points: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", axes.sx(x), axes.sy(y.max(0.0), top)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            o,
            r#"<polyline class="series" data-series="{}" fill="none" stroke="{colour}" stroke-width="1.8"{dash} points="{}"/>"#,
            escape(&s.name),
            points.join(" ")
        );
        let ly = top + 14.0 + k as f64 * 18.0;
        let lx = LEFT + PLOT_WIDTH + 14.0;
        let _ = writeln!(
            o,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2.5"{dash}/>"#,
            ly - 4.0,
            lx + 22.0,
            ly - 4.0
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{ly:.1}">{}</text>"#,
            lx + 28.0,
            escape(&s.name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that every tag is closed in order and attribute quotes balance: enough of XML's
    /// well-formedness for what the writer produces. Returns the element names in order.
    fn well_formed(svg: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("unclosed tag") + start;
            let tag = &rest[start + 1..end];
            assert_eq!(tag.matches('"').count() % 2, 0, "quotes in <{tag}>");
            assert!(!tag.contains('<'), "`<` inside <{tag}>");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "closing </{name}>");
            } else {
                let name = tag.split_whitespace().next().unwrap().trim_end_matches('/');
                names.push(name.to_owned());
                if !tag.ends_with('/') {
                    stack.push(name.to_owned());
                }
            }
            let text = &rest[end + 1..];
            let next = text.find('<').unwrap_or(text.len());
            assert!(
                !text[..next].contains('>'),
                "bare `>` in text {:?}",
                &text[..next]
            );
            rest = text;
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
        names
    }

    fn chart() -> Chart {
        let panel = |name: &str| Panel {
            title: format!("{name} <fast> & \"good\""),
            series: ["dsl", "lte"]
                .iter()
                .map(|l| Series {
                    name: (*l).to_owned(),
                    points: (0..20).map(|i| (f64::from(i) * 0.2, 9.5)).collect(),
                    dashed: false,
                })
                .chain(std::iter::once(Series {
                    name: "all lines".into(),
                    points: vec![(0.2, 19.0), (0.4, f64::NAN), (0.6, 19.0)],
                    dashed: true,
                }))
                .collect(),
            marks: vec![(3.0, "dsl blackholed".into())],
        };
        Chart {
            title: "mpbond bench: balanced".into(),
            subtitle: "two lines".into(),
            x_label: "seconds".into(),
            y_label: "Mbit/s".into(),
            panels: vec![panel("tcp"), panel("mpbond"), panel("mptcp-kernel")],
        }
    }

    #[test]
    fn the_chart_is_well_formed_with_a_polyline_per_series_per_panel() {
        let svg = chart().render();
        let names = well_formed(&svg);
        assert_eq!(names[0], "svg");
        assert_eq!(names.iter().filter(|n| *n == "polyline").count(), 9);
        assert_eq!(svg.matches(r#"class="panel""#).count(), 3);
        assert_eq!(svg.matches(r#"data-series="lte""#).count(), 3);
        assert_eq!(svg.matches(r#"class="mark""#).count(), 3);
        assert!(svg.contains("&lt;fast&gt; &amp; &quot;good&quot;"));
        // A point that is not a number is left out rather than written as NaN.
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn points_land_inside_their_panel() {
        let svg = chart().render();
        for line in svg.lines().filter(|l| l.starts_with("<polyline")) {
            let points = line.split("points=\"").nth(1).unwrap();
            for p in points.trim_end_matches("\"/>").split_whitespace() {
                let (x, y) = p.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((LEFT..=WIDTH - RIGHT).contains(&x), "{x}");
                assert!(y > TOP && y < TOP + 3.0 * (PANEL_HEIGHT + PANEL_GAP), "{y}");
            }
        }
    }

    #[test]
    fn ticks_are_round_steps_covering_the_maximum() {
        let same = |got: Vec<f64>, want: &[f64]| {
            got.len() == want.len() && got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9)
        };
        assert!(same(ticks(19.1), &[0.0, 5.0, 10.0, 15.0, 20.0]));
        assert!(same(ticks(12.0), &[0.0, 5.0, 10.0, 15.0]));
        assert!(same(ticks(0.8), &[0.0, 0.2, 0.4, 0.6, 0.8]));
        // Nothing to show still gets an axis.
        assert!(same(ticks(0.0), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]));
        assert!(same(ticks(f64::NAN), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]));
        assert_eq!(label(0.2 * 3.0), "0.6");
        assert_eq!(label(20.0), "20");
    }
}
