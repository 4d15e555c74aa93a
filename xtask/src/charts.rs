//! SVG bar charts of the benchmark results (plotters), one per scenario, drawn from
//! `docs/benchmarks/<scenario>.json`: the headline figure of each target, with the min..max
//! range of the repetitions where the scenario records it.
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// (label key, value key, axis title) of each scenario's results.
fn shape(scenario: &str) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match scenario {
        "l7" | "h2" | "tls" | "cache" => ("target", "rps", "requests per second (median)"),
        "memory" => (
            "server",
            "loaded_mib",
            "RSS with 10 000 idle connections, MiB",
        ),
        "attack" => (
            "mode",
            "legit_rps",
            "legitimate requests per second under the flood",
        ),
        "spread" => ("policy", "imbalance", "busiest worker / mean (1.0 = even)"),
        "xdp" => (
            "mode",
            "softirq_ns_per_packet",
            "receive CPU per flood packet, ns (softirq)",
        ),
        _ => return None,
    })
}

/// A bar: label, value, and the min..max of the repetitions when recorded.
type Row = (String, f64, Option<(f64, f64)>);

static FONT: std::sync::Once = std::sync::Once::new();

fn register_font() -> anyhow::Result<()> {
    let mut result = Ok(());
    FONT.call_once(|| {
        let path = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
        result = std::fs::read(path)
            .with_context(|| format!("reading the chart font {path} (package fonts-dejavu-core)"))
            .and_then(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                    .map_err(|_| anyhow::anyhow!("{path} is not a usable font"))
            });
    });
    result
}

/// Draws `<dir>/<scenario>.svg` from `<dir>/<scenario>.json`; returns whether it drew one.
#[expect(
    clippy::too_many_lines,
    reason = "one chart in drawing order: data, axes, bars, ranges, labels"
)]
pub fn chart(dir: &Path, scenario: &str) -> anyhow::Result<bool> {
    let Some((label_key, value_key, axis)) = shape(scenario) else {
        return Ok(false);
    };
    let json_path = dir.join(format!("{scenario}.json"));
    let Ok(text) = std::fs::read_to_string(&json_path) else {
        return Ok(false);
    };
    let doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", json_path.display()))?;
    let rows: Vec<Row> = doc["result"]["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| {
                    let label = r[label_key].as_str()?.to_owned();
                    let value = r[value_key].as_f64()?;
                    let range = r["rps_min"].as_f64().zip(r["rps_max"].as_f64());
                    Some((label, value, range.filter(|_| value_key == "rps")))
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        return Ok(false);
    }
    register_font()?;
    let out = dir.join(format!("{scenario}.svg"));
    let height = 90 + 44 * u32::try_from(rows.len()).unwrap_or(8);
    let root = SVGBackend::new(&out, (760, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let max = rows
        .iter()
        .map(|(_, v, r)| r.map_or(*v, |(_, hi)| hi.max(*v)))
        .fold(0.0_f64, f64::max)
        * 1.12;
    let n = rows.len();
    let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{scenario}: {}",
                doc["date"].as_str().unwrap_or("").trim_end_matches(" UTC")
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(210)
        .build_cartesian_2d(0.0..max.max(1e-9), (0..n - 1).into_segmented())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(axis)
        .x_label_formatter(&|v| {
            if max >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let color = |label: &str| {
        if label.contains("proxy") && !label.contains("HAProxy") {
            RGBColor(0x2a, 0x6f, 0xdb)
        } else {
            RGBColor(0x9a, 0x9a, 0x9a)
        }
    };
    chart
        .draw_series(rows.iter().enumerate().map(|(i, (label, v, _))| {
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (*v, SegmentValue::Exact(i + 1)),
                ],
                color(label).filled(),
            );
            bar.set_margin(6, 6, 0, 0);
            bar
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(rows.iter().enumerate().filter_map(|(i, (_, _, range))| {
            let (lo, hi) = (*range)?;
            Some(PathElement::new(
                vec![
                    (lo, SegmentValue::CenterOf(i)),
                    (hi, SegmentValue::CenterOf(i)),
                ],
                BLACK.stroke_width(2),
            ))
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, (_, v, _))| {
            let text = if *v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            };
            Text::new(
                text,
                (*v + max * 0.01, SegmentValue::CenterOf(i)),
                ("sans-serif", 12),
            )
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(true)
}
