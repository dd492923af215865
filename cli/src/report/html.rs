//! The incident report as one self-contained HTML page (inline CSS and SVG,
//! nothing fetched): the overview, a timeline chart — each step attempt a bar
//! on a time axis from detection, the RTO target as a line, and below it the
//! projected duration at each moment of the history against the target —
//! then the attempts, decisions, verification and the operator's fields.

use std::fmt::Write as _;

use super::text::{decision_sentence, outcome_word, rpo_sentence, rto_sentence, state_word, status_word, words};
use super::{duration, when, zone, Lang, Report};

/// `&`, `<`, `>`, `"` escaped for text and attributes.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 20.0;
const ROW: f64 = 22.0;
const PROJ_H: f64 = 150.0;

fn colour(outcome: &str, then: Option<&str>) -> &'static str {
    match (outcome, then) {
        ("succeeded" | "took-effect", _) => "#2e7d32",
        ("failed", Some("tolerated")) => "#ef6c00",
        ("failed", _) => "#c62828",
        ("running", _) => "#1565c0",
        ("cancelled", _) => "#757575",
        _ => "#6a1b9a",
    }
}

/// The timeline chart as inline SVG.
pub fn chart(r: &Report, lang: Lang) -> String {
    let w = words(lang);
    let t0 = r.detected_at;
    let last_event = r.projection.last().map_or(r.started_at, |p| p.at);
    let end = r.finished_at.unwrap_or(r.as_of).max(last_event);
    let target_at = t0.saturating_add(i64::try_from(r.target_secs.saturating_mul(1000)).unwrap_or(i64::MAX));
    let t1 = end.max(target_at).max(t0 + 1);
    let span = (t1 - t0) as f64;
    let x = |t: i64| LEFT + ((t - t0) as f64 / span) * (WIDTH - LEFT - RIGHT);
    let rows = r.steps.len().max(1) as f64;
    let gantt_top = 30.0;
    let gantt_h = rows * ROW;
    let proj_top = gantt_top + gantt_h + 50.0;
    let height = proj_top + PROJ_H + 40.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{}">"#,
        esc(w.chart)
    );
    let _ = write!(s, r##"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##);
    // Rows and step names.
    for (i, step) in r.steps.iter().enumerate() {
        let y = gantt_top + i as f64 * ROW;
        if i % 2 == 0 {
            let _ = write!(s, r##"<rect x="{LEFT}" y="{y}" width="{}" height="{ROW}" fill="#f3f5f7"/>"##, WIDTH - LEFT - RIGHT);
        }
        let _ = write!(s, r##"<text x="{}" y="{}" font-size="12" text-anchor="end" fill="#222">{}</text>"##, LEFT - 8.0, y + 15.0, esc(&step.id));
    }
    // Detection → first response: the time before dr was started.
    let _ = write!(
        s,
        r##"<rect x="{}" y="{}" width="{:.1}" height="4" fill="#b0bec5"><title>{} → {}</title></rect>"##,
        x(t0),
        gantt_top - 8.0,
        (x(r.started_at) - x(t0)).max(1.0),
        esc(w.t_detected),
        esc(w.t_response)
    );
    for a in &r.attempts {
        let Some(row) = r.steps.iter().position(|st| st.id == a.step) else { continue };
        let y = gantt_top + row as f64 * ROW + 4.0;
        let from = x(a.started_at);
        let to = x(a.ended_at.unwrap_or(end));
        let title = format!("{} #{}: {} {}–{}", a.step, a.attempt, outcome_word(a, lang), when(a.started_at), a.ended_at.map_or(String::new(), when));
        let _ = write!(
            s,
            r#"<rect x="{from:.1}" y="{y}" width="{:.1}" height="{}" fill="{}" opacity="{}"><title>{}</title></rect>"#,
            (to - from).max(3.0),
            ROW - 8.0,
            colour(a.outcome, a.then),
            if a.probe { "0.5" } else { "0.9" },
            esc(&title)
        );
    }
    // The RTO target across both parts.
    let tx = x(target_at);
    let _ = write!(
        s,
        r##"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{}" stroke="#d32f2f" stroke-width="2" stroke-dasharray="6 4"/><text x="{:.1}" y="{}" font-size="12" fill="#d32f2f" text-anchor="end">{} {}</text>"##,
        gantt_top - 12.0,
        gantt_top + gantt_h,
        tx - 4.0,
        gantt_top - 14.0,
        esc(w.chart_target),
        duration(r.target_secs * 1000, lang)
    );
    // Time axis.
    let axis_y = gantt_top + gantt_h + 4.0;
    let _ = write!(s, r##"<line x1="{LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#444"/>"##, WIDTH - RIGHT);
    for k in 0..=4 {
        let t = t0 + (t1 - t0) * k / 4;
        let label = when(t);
        let label = label.get(11..).unwrap_or(&label);
        let _ = write!(
            s,
            r##"<line x1="{0:.1}" y1="{axis_y}" x2="{0:.1}" y2="{1}" stroke="#444"/><text x="{0:.1}" y="{2}" font-size="11" text-anchor="middle" fill="#444">{3}</text>"##,
            x(t),
            axis_y + 5.0,
            axis_y + 18.0,
            esc(label)
        );
    }
    // The projection: at each event, the run's expected total duration.
    let max_secs = r.projection.iter().map(|p| p.projected_secs).fold(r.target_secs as f64, f64::max).max(1.0) * 1.1;
    let y = |secs: f64| proj_top + PROJ_H - (secs / max_secs) * PROJ_H;
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{proj_top}" width="{}" height="{PROJ_H}" fill="#fafafa" stroke="#ccc"/><text x="{}" y="{}" font-size="12" text-anchor="end" fill="#1565c0">{}</text>"##,
        WIDTH - LEFT - RIGHT,
        LEFT - 8.0,
        proj_top + 14.0,
        esc(w.chart_projection)
    );
    let ty = y(r.target_secs as f64);
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{}" y2="{ty:.1}" stroke="#d32f2f" stroke-width="2" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end" fill="#d32f2f">{}</text>"##,
        WIDTH - RIGHT,
        LEFT - 8.0,
        ty + 4.0,
        esc(&duration(r.target_secs * 1000, lang))
    );
    let points: Vec<String> = r.projection.iter().map(|p| format!("{:.1},{:.1}", x(p.at), y(p.projected_secs))).collect();
    if !points.is_empty() {
        let _ = write!(s, r##"<polyline points="{}" fill="none" stroke="#1565c0" stroke-width="2"/>"##, points.join(" "));
        for p in &r.projection {
            let _ = write!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#1565c0"><title>{}: {}</title></circle>"##,
                x(p.at),
                y(p.projected_secs),
                esc(&when(p.at)),
                esc(&duration((p.projected_secs * 1000.0) as u64, lang))
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// The whole page.
pub fn render(r: &Report, lang: Lang) -> String {
    let w = words(lang);
    let mut o = String::new();
    let html_lang = match lang {
        Lang::Ja => "ja",
        Lang::En => "en",
    };
    let _ = write!(
        o,
        r#"<!DOCTYPE html>
<html lang="{html_lang}"><head><meta charset="utf-8"><title>{} — {}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; background: #fff; }}
h1 {{ border-bottom: 3px solid #d32f2f; padding-bottom: 4px; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; font-size: 13px; text-align: left; vertical-align: top; }}
th {{ background: #eceff1; }}
.met {{ color: #2e7d32; font-weight: bold; }} .missed {{ color: #c62828; font-weight: bold; }}
.note {{ color: #555; font-size: 12px; }}
</style></head><body>
"#,
        esc(w.title),
        esc(&r.run)
    );
    let _ = writeln!(o, "<h1>{}</h1><p>run <code>{}</code> — <code>{}</code></p>", esc(w.title), esc(&r.run), esc(&r.workflow));
    let rto_class = match r.rto_met {
        Some(true) => "met",
        Some(false) => "missed",
        None => "",
    };
    let _ = writeln!(o, "<h2>{}</h2><table>", esc(w.overview));
    let rows = [
        (w.detected, esc(&when(r.detected_at))),
        (w.recovered, esc(&r.finished_at.filter(|_| r.status == "succeeded").map_or_else(|| w.not_recorded.to_owned(), when))),
        (w.impact_time, esc(&duration(r.actual_secs * 1000, lang))),
        (w.level, format!("Level {}", r.level)),
        (w.scope, esc(r.impact.as_ref().map_or(w.unfilled, |f| f.value.as_str()))),
        (w.status, esc(&format!("{}{}", status_word(r.status, lang), r.reason.as_ref().map_or(String::new(), |x| format!(" — {x}"))))),
        (w.rto, format!(r#"<span class="{rto_class}">{}</span>"#, esc(&rto_sentence(r, lang)))),
        (w.rpo, esc(&rpo_sentence(r, lang))),
        (w.times_in, esc(&format!("UTC{}", zone(r.detected_at)))),
    ];
    for (k, v) in rows {
        let _ = writeln!(o, "<tr><th>{}</th><td>{v}</td></tr>", esc(k));
    }
    o.push_str("</table>\n");
    let _ = writeln!(o, "<h2>{}</h2>{}<p class=\"note\">{}</p>", esc(w.chart), chart(r, lang), esc(w.chart_note));
    let _ = writeln!(
        o,
        "<h2>{}</h2><table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        esc(w.attempts),
        esc(w.col_step),
        esc(w.col_attempt),
        esc(w.col_start),
        esc(w.col_end),
        esc(w.col_took),
        esc(w.col_result),
        esc(w.col_detail)
    );
    for a in &r.attempts {
        let took = a.ended_at.map_or(String::new(), |e| duration(u64::try_from(e - a.started_at).unwrap_or(0), lang));
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.step),
            a.attempt,
            if a.probe { " (probe)" } else { "" },
            esc(&when(a.started_at)),
            esc(&a.ended_at.map_or(String::new(), when)),
            esc(&took),
            esc(&outcome_word(a, lang)),
            esc(a.error.as_deref().or(a.summary.as_deref()).unwrap_or(""))
        );
    }
    o.push_str("</table>\n");
    let _ = writeln!(
        o,
        "<h2>{}</h2><table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        esc(w.steps),
        esc(w.col_step),
        esc(w.col_state),
        esc(w.col_attempts),
        esc(w.col_busy),
        esc(w.col_detail)
    );
    for st in &r.steps {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&st.id),
            esc(state_word(st.state, lang)),
            st.attempts,
            esc(&duration(st.busy_ms, lang)),
            esc(&st.note)
        );
    }
    o.push_str("</table>\n");
    let _ = writeln!(o, "<h2>{}</h2><ul>", esc(w.decisions));
    if r.decisions.is_empty() {
        let _ = writeln!(o, "<li>{}</li>", esc(w.no_decisions));
    }
    for d in &r.decisions {
        let _ = writeln!(o, "<li>{} — {}</li>", esc(&when(d.at)), esc(&decision_sentence(d, lang)));
    }
    let _ = writeln!(o, "</ul><h2>{}</h2><ul>", esc(w.verification));
    if r.verification.is_empty() {
        let _ = writeln!(o, "<li>{}</li>", esc(w.no_verification));
    }
    for (step, summary) in &r.verification {
        let _ = writeln!(o, "<li><code>{}</code>: {}</li>", esc(step), esc(summary));
    }
    o.push_str("</ul>\n");
    for (title, f) in [(w.cause, &r.cause), (w.lessons, &r.lessons)] {
        let body = f.as_ref().map_or_else(
            || format!("<em>{}</em>", esc(w.unfilled)),
            |f| format!("{}<br><span class=\"note\">{} {} {}</span>", esc(&f.value), esc(w.set_by), esc(&f.by), esc(&when(f.at))),
        );
        let _ = writeln!(o, "<h2>{}</h2><p>{body}</p>", esc(title));
    }
    let _ = writeln!(o, "<h2>{}</h2><ul>", esc(w.checklist));
    for line in &r.checklist {
        let _ = writeln!(o, "<li>{}</li>", esc(&super::text::checklist_line(line, r, lang)));
    }
    o.push_str("</ul>\n</body></html>\n");
    o
}
