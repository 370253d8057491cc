//! The dashboard's charts: bar charts drawn server-side as SVG with plotters
//! (its SVG backend escapes every label; the labels are remote text: tags,
//! applications, accounts). Each SVG gets a `<title>` and `role="img"` with a
//! label, so a screen reader names it, and the page gives each an `alt`.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::data::Summary;

/// The charts the dashboard has: URL name, title.
pub const CHARTS: [(&str, &str); 8] = [
    ("per-hour", "Posts per hour (last 48 hours)"),
    ("per-day", "Posts per day (last 30 days)"),
    ("hours", "Posts by hour of day"),
    ("weekdays", "Posts by weekday"),
    ("languages", "Languages"),
    ("applications", "Client applications"),
    ("tags", "Top hashtags"),
    ("mentions", "Top mentions"),
];

const BAR: RGBColor = RGBColor(0x1f, 0x5f, 0xa8);
const INK: RGBColor = RGBColor(0x1a, 0x1a, 0x1a);
const GRID: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);
const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A chart's rows (label, count) and whether it draws sideways (long labels).
pub fn rows(s: &Summary, chart: &str) -> Option<(Vec<(String, u64)>, bool)> {
    Some(match chart {
        "per-hour" => (s.per_hour.iter().map(|(t, n)| (t.format("%d %Hh").to_string(), *n)).collect(), false),
        "per-day" => (s.per_day.iter().map(|(d, n)| (d.get(5..).unwrap_or(d).to_string(), *n)).collect(), false),
        "hours" => (s.hours.iter().enumerate().map(|(h, n)| (format!("{h:02}"), *n)).collect(), false),
        "weekdays" => (s.weekdays.iter().enumerate().map(|(d, n)| (WEEKDAYS[d % 7].to_string(), *n)).collect(), false),
        "languages" => (s.languages.clone(), true),
        "applications" => (s.applications.clone(), true),
        "tags" => (s.tags.iter().map(|(t, n)| (format!("#{t}"), *n)).collect(), true),
        "mentions" => (s.mentions.iter().map(|(m, n)| (format!("@{m}"), *n)).collect(), true),
        _ => return None,
    })
}

/// A one-line text of a chart's figures (alt text, SVG title).
pub fn describe(title: &str, rows: &[(String, u64)]) -> String {
    let total: u64 = rows.iter().map(|r| r.1).sum();
    if total == 0 {
        return format!("{title}: nothing yet");
    }
    let mut top: Vec<&(String, u64)> = rows.iter().filter(|r| r.1 > 0).collect();
    top.sort_by_key(|r| std::cmp::Reverse(r.1));
    let shown: Vec<String> = top.iter().take(5).map(|(k, n)| format!("{k} {n}")).collect();
    format!("{title}: {total} in all; most: {}", shown.join(", "))
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// The chart as an SVG document.
pub fn svg(title: &str, rows: &[(String, u64)], sideways: bool) -> Result<String, String> {
    let (w, h) = if sideways { (480u32, 60 + 26 * rows.len().max(3) as u32) } else { (640u32, 300u32) };
    let mut buf = String::new();
    draw(&mut buf, (w, h), title, rows, sideways).map_err(|e| format!("cannot draw the chart {title}: {e}"))?;
    // A title and role for assistive technology (plotters writes neither).
    let label = super::render::esc(&describe(title, rows));
    let head = format!("<svg role=\"img\" aria-label=\"{label}\" ");
    let buf = buf.replacen("<svg ", &head, 1);
    Ok(match buf.find('>') {
        Some(i) => format!("{}<title>{}</title>{}", &buf[..=i], super::render::esc(&describe(title, rows)), &buf[i + 1..]),
        None => buf,
    })
}

fn draw(buf: &mut String, size: (u32, u32), title: &str, rows: &[(String, u64)], sideways: bool) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(buf, size).into_drawing_area();
    root.fill(&WHITE)?;
    let n = rows.len() as u32;
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0);
    let top = max + (max / 10).max(1);
    let labels: Vec<String> = rows.iter().map(|r| shorten(&r.0, 24)).collect();
    let label_of = move |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let caption = (("sans-serif", 18).into_font()).color(&INK);
    let text = ("sans-serif", 13).into_font().color(&INK);
    if n == 0 || max == 0 {
        root.titled(title, caption)?;
        root.draw_text("Nothing yet", &text, (20, 60))?;
        root.present()?;
        return Ok(());
    }
    let mut b = ChartBuilder::on(&root);
    b.caption(title, caption).margin(10);
    if sideways {
        let mut chart = b.x_label_area_size(28).y_label_area_size(170).build_cartesian_2d(0u64..top, (0u32..n).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(GRID)
            .y_labels(n as usize)
            .y_label_formatter(&label_of)
            .label_style(text.clone())
            .axis_desc_style(text.clone())
            .x_desc("posts")
            .draw()?;
        chart.draw_series(
            Histogram::horizontal(&chart).style(BAR.filled()).margin(4).data(rows.iter().enumerate().map(|(i, r)| (i as u32, r.1))),
        )?;
    } else {
        let every = (n as usize).div_ceil(12).max(1);
        let sparse = move |v: &SegmentValue<u32>| match v {
            SegmentValue::CenterOf(i) if (*i as usize).is_multiple_of(every) => label_of(v),
            _ => String::new(),
        };
        let mut chart = b.x_label_area_size(32).y_label_area_size(48).build_cartesian_2d((0u32..n).into_segmented(), 0u64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(GRID)
            .x_labels(n as usize)
            .x_label_formatter(&sparse)
            .label_style(text.clone())
            .axis_desc_style(text.clone())
            .y_desc("posts")
            .draw()?;
        chart.draw_series(
            Histogram::vertical(&chart).style(BAR.filled()).margin(1).data(rows.iter().enumerate().map(|(i, r)| (i as u32, r.1))),
        )?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_an_svg_with_bars_a_title_and_escaped_labels() {
        let rows = vec![("<script>x</script>".to_string(), 3), ("en".to_string(), 1)];
        let s = svg("Languages", &rows, true).unwrap();
        assert!(s.starts_with("<svg role=\"img\" aria-label=\"Languages: 4 in all; most: &lt;script&gt;x&lt;/script&gt; 3, en 1\""), "{s}");
        assert!(s.contains("<title>Languages: 4 in all"), "{s}");
        assert!(s.matches("<rect").count() >= 3, "the background and two bars: {s}");
        assert!(!s.contains("<script>"), "{s}");
        let empty = svg("Top hashtags", &[], true).unwrap();
        assert!(empty.contains("Nothing yet"), "{empty}");
    }
}
