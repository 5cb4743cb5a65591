//! The PNG timeline of a chaos run: one row per host with its fault bands and the task
//! executions it ran (green: finished, orange: cut short), a top row with the DAG runs, and
//! recovery marks (the first task that finished after each fault's start). Drawn with plotters'
//! bitmap backend; text needs a TrueType font (DejaVu Sans from the distribution), without one
//! the picture is drawn without labels.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::ledger::Execution;
use crate::schedule::{Fault, FaultKind};

/// A DAG run as drawn: label, start and end (unix seconds).
pub struct RunSpan {
    pub label: String,
    pub start: f64,
    pub end: f64,
}

pub struct Timeline<'a> {
    pub hosts: &'a [String],
    pub faults: &'a [Fault],
    pub executions: &'a [Execution],
    pub runs: &'a [RunSpan],
    /// Unix time of the run's start (faults' `at_s` count from it).
    pub t0: f64,
    pub title: String,
}

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a TrueType font for text, once; false when none is installed.
fn font_available() -> bool {
    static FONT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FONT.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn fault_color(k: FaultKind) -> RGBColor {
    match k {
        FaultKind::Kill9 => RGBColor(200, 40, 40),
        FaultKind::Crash => RGBColor(220, 60, 60),
        FaultKind::Freeze => RGBColor(90, 120, 220),
        FaultKind::Partition => RGBColor(170, 80, 200),
        FaultKind::Netem => RGBColor(230, 160, 40),
    }
}

pub fn draw(t: &Timeline, path: &Path) -> Result<(), String> {
    let text = font_available();
    let left = 140i32;
    let row_h = 26i32;
    let top = 50i32;
    let width = 1600i32;
    let rows = t.hosts.len() as i32 + 1;
    let height = top + rows * row_h + 50;
    let end = t
        .executions
        .iter()
        .filter_map(|x| x.end.or(Some(x.start)))
        .chain(t.runs.iter().map(|r| r.end))
        .chain(t.faults.iter().map(|f| t.t0 + f.end_s()))
        .fold(t.t0 + 1.0, f64::max);
    let span = end - t.t0;
    let x = |ts: f64| left + (((ts - t.t0) / span) * f64::from(width - left - 20)) as i32;
    let row_y = |i: i32| top + i * row_h;

    let root = BitMapBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| format!("timeline {}: {e}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let label = |s: &str, at: (i32, i32), size: f64, pos: Pos| -> Result<(), String> {
        if !text {
            return Ok(());
        }
        let style = TextStyle::from(("sans-serif", size).into_font()).pos(pos);
        root.draw(&Text::new(s.to_string(), at, style)).map_err(e)
    };
    let left_mid = Pos::new(HPos::Left, VPos::Center);
    label(&t.title, (10, 20), 18.0, left_mid)?;

    // Row backgrounds and names: DAG runs first, then the hosts.
    for i in 0..rows {
        let shade = if i % 2 == 0 {
            RGBColor(246, 246, 246)
        } else {
            WHITE
        };
        root.draw(&Rectangle::new(
            [(left, row_y(i)), (width - 20, row_y(i) + row_h)],
            shade.filled(),
        ))
        .map_err(e)?;
        let name = if i == 0 {
            "DAG runs"
        } else {
            &t.hosts[(i - 1) as usize]
        };
        label(name, (10, row_y(i) + row_h / 2), 13.0, left_mid)?;
    }
    for r in t.runs {
        root.draw(&Rectangle::new(
            [
                (x(r.start), row_y(0) + 5),
                (x(r.end).max(x(r.start) + 2), row_y(0) + row_h - 5),
            ],
            RGBColor(60, 140, 200).filled(),
        ))
        .map_err(e)?;
        label(
            &r.label,
            (x(r.start) + 3, row_y(0) + row_h / 2),
            10.0,
            left_mid,
        )?;
    }
    for f in t.faults {
        let Some(i) = t.hosts.iter().position(|h| *h == f.host) else {
            continue;
        };
        let (a, b) = (
            x(t.t0 + f.at_s),
            x(t.t0 + f.end_s()).max(x(t.t0 + f.at_s) + 3),
        );
        let c = fault_color(f.kind);
        root.draw(&Rectangle::new(
            [(a, row_y(i as i32 + 1)), (b, row_y(i as i32 + 1) + row_h)],
            c.mix(0.35).filled(),
        ))
        .map_err(e)?;
        // A thin line over every row: the moment the fault began.
        root.draw(&PathElement::new(
            vec![(a, top), (a, row_y(rows))],
            c.mix(0.6).stroke_width(1),
        ))
        .map_err(e)?;
        label(f.kind.name(), (a + 2, top - 8), 11.0, left_mid)?;
        // Recovery mark: the first execution to finish after the fault began.
        let started = t.t0 + f.at_s;
        if let Some(rec) = t
            .executions
            .iter()
            .filter_map(|x| x.end)
            .filter(|&end| end > started)
            .min_by(f64::total_cmp)
        {
            root.draw(&Circle::new((x(rec), top - 3), 3, c.filled()))
                .map_err(e)?;
        }
    }
    for ex in t.executions {
        let Some(i) = t.hosts.iter().position(|h| *h == ex.host) else {
            continue;
        };
        let y = row_y(i as i32 + 1);
        let (color, stop) = match ex.end {
            Some(end) => (RGBColor(60, 170, 90), end),
            None => (RGBColor(240, 140, 30), ex.start + 1.0),
        };
        root.draw(&Rectangle::new(
            [
                (x(ex.start), y + 6),
                (x(stop).max(x(ex.start) + 2), y + row_h - 6),
            ],
            color.filled(),
        ))
        .map_err(e)?;
    }
    // Time axis.
    let step = [10.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|s| span / s <= 20.0)
        .unwrap_or(1200.0);
    let axis_y = row_y(rows) + 4;
    let mut s = 0.0;
    while s <= span {
        let px = x(t.t0 + s);
        root.draw(&PathElement::new(
            vec![(px, axis_y), (px, axis_y + 5)],
            BLACK,
        ))
        .map_err(e)?;
        label(
            &format!("{s:.0} s"),
            (px, axis_y + 16),
            11.0,
            Pos::new(HPos::Center, VPos::Center),
        )?;
        s += step;
    }
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_png_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.png");
        let hosts = vec!["hf-worker1".to_string(), "hf-worker2".to_string()];
        let faults = vec![Fault {
            at_s: 10.0,
            duration_s: 20.0,
            host: "hf-worker2".into(),
            kind: FaultKind::Partition,
            unit: None,
        }];
        let ex = |h: &str, s: f64, e: Option<f64>| Execution {
            key: ("d".into(), "r".into(), "t".into()),
            try_number: 1,
            host: h.into(),
            start: 1000.0 + s,
            end: e.map(|x| 1000.0 + x),
            uid: format!("{h}{s}"),
        };
        let executions = vec![
            ex("hf-worker1", 1.0, Some(7.0)),
            ex("hf-worker2", 8.0, None),
            ex("hf-worker1", 12.0, Some(18.0)),
        ];
        let runs = vec![RunSpan {
            label: "r".into(),
            start: 1000.0,
            end: 1040.0,
        }];
        draw(
            &Timeline {
                hosts: &hosts,
                faults: &faults,
                executions: &executions,
                runs: &runs,
                t0: 1000.0,
                title: "test".into(),
            },
            &path,
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 2000);
    }
}
