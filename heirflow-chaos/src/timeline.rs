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

/// A DAG run as drawn: whether it succeeded, start and end (unix seconds).
pub struct RunSpan {
    pub succeeded: bool,
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
        FaultKind::Step => RGBColor(40, 150, 90),
    }
}

/// Greedy lanes for overlapping intervals (a worker runs several tasks at once, DAG runs
/// overlap): each interval gets the lowest lane free at its start. Returns (lane of each
/// interval, number of lanes).
pub fn lanes(intervals: &[(f64, f64)]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..intervals.len()).collect();
    order.sort_by(|&a, &b| intervals[a].0.total_cmp(&intervals[b].0));
    let mut free_at: Vec<f64> = Vec::new();
    let mut out = vec![0; intervals.len()];
    for i in order {
        let (s, e) = intervals[i];
        let lane = match free_at.iter().position(|&f| f <= s) {
            Some(l) => l,
            None => {
                free_at.push(f64::NEG_INFINITY);
                free_at.len() - 1
            }
        };
        free_at[lane] = e.max(s);
        out[i] = lane;
    }
    (out, free_at.len().max(1))
}

const LANE_H: i32 = 7;

pub fn draw(t: &Timeline, path: &Path) -> Result<(), String> {
    let text = font_available();
    let left = 140i32;
    let row_h = 26i32;
    let top = 50i32;
    let width = 1600i32;
    let rows = t.hosts.len() as i32 + 1;
    // Lanes: row 0 holds the DAG runs, row i + 1 the executions of host i.
    let run_iv: Vec<(f64, f64)> = t.runs.iter().map(|r| (r.start, r.end)).collect();
    let (run_lane, run_lanes) = lanes(&run_iv);
    let exec_iv: Vec<(f64, f64)> = t
        .executions
        .iter()
        .map(|x| (x.start, x.end.unwrap_or(x.start + 1.0)))
        .collect();
    let exec_row: Vec<Option<usize>> = t
        .executions
        .iter()
        .map(|x| t.hosts.iter().position(|h| *h == x.host))
        .collect();
    let mut exec_lane = vec![0; t.executions.len()];
    let mut row_lanes = vec![run_lanes];
    for i in 0..t.hosts.len() {
        let idx: Vec<usize> = (0..t.executions.len())
            .filter(|&k| exec_row[k] == Some(i))
            .collect();
        let iv: Vec<(f64, f64)> = idx.iter().map(|&k| exec_iv[k]).collect();
        let (l, n) = lanes(&iv);
        for (j, &k) in idx.iter().enumerate() {
            exec_lane[k] = l[j];
        }
        row_lanes.push(n);
    }
    let heights: Vec<i32> = row_lanes
        .iter()
        .map(|&n| (n as i32 * LANE_H + 8).max(row_h))
        .collect();
    let mut offsets = vec![top];
    for h in &heights {
        offsets.push(offsets[offsets.len() - 1] + h);
    }
    let height = offsets[rows as usize] + 50;
    let end = t
        .executions
        .iter()
        .filter_map(|x| x.end.or(Some(x.start)))
        .chain(t.runs.iter().map(|r| r.end))
        .chain(t.faults.iter().map(|f| t.t0 + f.end_s()))
        .fold(t.t0 + 1.0, f64::max);
    let span = end - t.t0;
    let x = |ts: f64| left + (((ts - t.t0) / span) * f64::from(width - left - 20)) as i32;
    let row_y = |i: i32| offsets[i as usize];
    let row_h_of = |i: i32| heights[i as usize];
    // The top of lane `l` in row `i`.
    let lane_y = |i: i32, l: usize| row_y(i) + 4 + l as i32 * LANE_H;

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
            [(left, row_y(i)), (width - 20, row_y(i) + row_h_of(i))],
            shade.filled(),
        ))
        .map_err(e)?;
        let name = if i == 0 {
            "DAG runs"
        } else {
            &t.hosts[(i - 1) as usize]
        };
        label(name, (10, row_y(i) + row_h_of(i) / 2), 13.0, left_mid)?;
    }
    for (r, &l) in t.runs.iter().zip(&run_lane) {
        let y = lane_y(0, l);
        root.draw(&Rectangle::new(
            [
                (x(r.start), y),
                (x(r.end).max(x(r.start) + 2), y + LANE_H - 1),
            ],
            if r.succeeded {
                RGBColor(60, 140, 200)
            } else {
                RGBColor(200, 30, 30)
            }
            .filled(),
        ))
        .map_err(e)?;
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
            [(a, row_y(i as i32 + 1)), (b, row_y(i as i32 + 2))],
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
    for (k, ex) in t.executions.iter().enumerate() {
        let Some(i) = exec_row[k] else { continue };
        let y = lane_y(i as i32 + 1, exec_lane[k]);
        let color = if ex.end.is_some() {
            RGBColor(60, 170, 90)
        } else {
            RGBColor(240, 140, 30)
        };
        let (a, b) = exec_iv[k];
        root.draw(&Rectangle::new(
            [(x(a), y), ((x(b) - 1).max(x(a) + 2), y + LANE_H - 1)],
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
    fn overlapping_intervals_get_separate_lanes() {
        let (l, n) = lanes(&[(0.0, 10.0), (2.0, 5.0), (5.0, 8.0), (11.0, 12.0)]);
        assert_eq!(n, 2);
        assert_eq!(l, vec![0, 1, 1, 0]);
        assert_eq!(lanes(&[]), (vec![], 1));
    }

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
            succeeded: true,
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
