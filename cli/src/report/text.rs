//! The incident report as Markdown, in the guide's template (インシデントレポート):
//! overview, timeline, cause, response, lessons — in Japanese or English, the
//! same facts in the same order. Also the words both renderings share.

use std::fmt::Write as _;

use super::{duration, when, zone, Attempt, Field, Lang, Report};

/// The words of a report in one language.
pub struct Words {
    pub title: &'static str,
    pub overview: &'static str,
    pub detected: &'static str,
    pub recovered: &'static str,
    pub impact_time: &'static str,
    pub level: &'static str,
    pub scope: &'static str,
    pub status: &'static str,
    pub rto: &'static str,
    pub rpo: &'static str,
    pub times_in: &'static str,
    pub timeline: &'static str,
    pub t_detected: &'static str,
    pub t_response: &'static str,
    pub t_cause: &'static str,
    pub t_work: &'static str,
    pub t_restored: &'static str,
    pub t_full: &'static str,
    pub not_recorded: &'static str,
    pub attempts: &'static str,
    pub col_step: &'static str,
    pub col_attempt: &'static str,
    pub col_start: &'static str,
    pub col_end: &'static str,
    pub col_took: &'static str,
    pub col_result: &'static str,
    pub col_detail: &'static str,
    pub steps: &'static str,
    pub col_state: &'static str,
    pub col_attempts: &'static str,
    pub col_busy: &'static str,
    pub decisions: &'static str,
    pub no_decisions: &'static str,
    pub verification: &'static str,
    pub no_verification: &'static str,
    pub cause: &'static str,
    pub response: &'static str,
    pub lessons: &'static str,
    pub unfilled: &'static str,
    pub set_by: &'static str,
    pub params: &'static str,
    pub chart: &'static str,
    pub chart_target: &'static str,
    pub chart_projection: &'static str,
    pub chart_note: &'static str,
    pub checklist: &'static str,
    pub confirmed_by: &'static str,
    pub open_item: &'static str,
}

pub const JA: Words = Words {
    title: "インシデントレポート",
    overview: "概要",
    detected: "発生日時",
    recovered: "復旧完了時刻",
    impact_time: "影響時間",
    level: "障害レベル",
    scope: "影響範囲",
    status: "結果",
    rto: "RTO",
    rpo: "RPO",
    times_in: "時刻",
    timeline: "タイムライン",
    t_detected: "障害検知",
    t_response: "初動対応開始",
    t_cause: "原因特定",
    t_work: "復旧作業開始",
    t_restored: "サービス復旧",
    t_full: "完全復旧確認",
    not_recorded: "記録なし",
    attempts: "ステップの実行",
    col_step: "ステップ",
    col_attempt: "試行",
    col_start: "開始",
    col_end: "終了",
    col_took: "所要時間",
    col_result: "結果",
    col_detail: "詳細",
    steps: "ステップごとの結果",
    col_state: "状態",
    col_attempts: "試行回数",
    col_busy: "実行時間",
    decisions: "オペレーターの判断",
    no_decisions: "なし",
    verification: "検証結果",
    no_verification: "検証ステップの記録なし",
    cause: "原因分析",
    response: "対応内容",
    lessons: "学んだ教訓",
    unfilled: "未記入",
    set_by: "記入",
    params: "パラメータ",
    chart: "タイムラインチャート",
    chart_target: "RTO目標",
    chart_projection: "予測所要時間",
    checklist: "復旧後チェックリスト",
    confirmed_by: "確認",
    open_item: "未確認",
    chart_note: "各バーはステップの試行。下段は各時点の予測所要時間（経過時間＋残りのクリティカルパス、定義の見積もり）と RTO 目標。",
};

pub const EN: Words = Words {
    title: "Incident report",
    overview: "Overview",
    detected: "Detected",
    recovered: "Recovered",
    impact_time: "Duration of impact",
    level: "Failure level",
    scope: "Impact",
    status: "Outcome",
    rto: "RTO",
    rpo: "RPO",
    times_in: "Times",
    timeline: "Timeline",
    t_detected: "failure detected",
    t_response: "first response started",
    t_cause: "cause identified",
    t_work: "recovery work started",
    t_restored: "service restored",
    t_full: "full recovery confirmed",
    not_recorded: "not recorded",
    attempts: "Step attempts",
    col_step: "step",
    col_attempt: "attempt",
    col_start: "started",
    col_end: "ended",
    col_took: "took",
    col_result: "result",
    col_detail: "detail",
    steps: "Steps",
    col_state: "state",
    col_attempts: "attempts",
    col_busy: "time in attempts",
    decisions: "Operator decisions",
    no_decisions: "none",
    verification: "Verification",
    no_verification: "no verification step recorded",
    cause: "Cause",
    response: "Response",
    lessons: "Lessons learned",
    unfilled: "not filled in",
    set_by: "by",
    params: "Parameters",
    chart: "Timeline chart",
    chart_target: "RTO target",
    chart_projection: "projected duration",
    checklist: "Post-recovery checklist",
    confirmed_by: "confirmed by",
    open_item: "open",
    chart_note: "Each bar is a step attempt. Below: the projected duration at each moment (elapsed + remaining critical path, by the definition's estimates) against the RTO target.",
};

pub fn words(lang: Lang) -> &'static Words {
    match lang {
        Lang::Ja => &JA,
        Lang::En => &EN,
    }
}

/// The run's outcome in words.
pub fn status_word(status: &str, lang: Lang) -> &'static str {
    match (lang, status) {
        (Lang::Ja, "succeeded") => "成功",
        (Lang::Ja, "failed") => "失敗",
        (Lang::Ja, "cancelled") => "中止",
        (Lang::Ja, "paused") => "一時停止（オペレーター待ち）",
        (Lang::Ja, _) => "進行中",
        (Lang::En, "succeeded") => "succeeded",
        (Lang::En, "failed") => "failed",
        (Lang::En, "cancelled") => "cancelled",
        (Lang::En, "paused") => "paused (waits for an operator)",
        (Lang::En, _) => "in progress",
    }
}

/// An attempt's result in words.
pub fn outcome_word(a: &Attempt, lang: Lang) -> String {
    let base = match (lang, a.outcome) {
        (Lang::Ja, "succeeded") => "成功",
        (Lang::Ja, "failed") => "失敗",
        (Lang::Ja, "cancelled") => "中止",
        (Lang::Ja, "interrupted") => "中断",
        (Lang::Ja, "stopped") => "プロセス停止",
        (Lang::Ja, "lost") => "プロセスとともに喪失",
        (Lang::Ja, "took-effect") => "確認: 反映済み",
        (Lang::Ja, "not-taken-effect") => "確認: 未反映",
        (Lang::Ja, _) => "実行中",
        (Lang::En, "took-effect") => "probe: had taken effect",
        (Lang::En, "not-taken-effect") => "probe: had not taken effect",
        (Lang::En, "lost") => "lost with its process",
        (Lang::En, "stopped") => "process stopped",
        (Lang::En, other) => other,
    };
    let then = match (lang, a.then) {
        (Lang::Ja, Some("retry")) => "（再試行へ）",
        (Lang::Ja, Some("paused")) => "（再試行上限、オペレーター待ち）",
        (Lang::Ja, Some("tolerated")) => "（許容され続行）",
        (Lang::En, Some("retry")) => " (retried)",
        (Lang::En, Some("paused")) => " (out of retries: paused)",
        (Lang::En, Some("tolerated")) => " (tolerated: the run went on)",
        _ => "",
    };
    format!("{base}{then}")
}

/// A step state in words.
pub fn state_word(state: &str, lang: Lang) -> &str {
    match (lang, state) {
        (Lang::Ja, "succeeded") => "成功",
        (Lang::Ja, "failed-tolerated") => "失敗（許容）",
        (Lang::Ja, "failed") => "失敗",
        (Lang::Ja, "skipped") => "スキップ",
        (Lang::Ja, "cancelled") => "中止",
        (Lang::Ja, "pending") => "未実行",
        (Lang::Ja, "gated") => "確認待ち",
        (Lang::Ja, "running") => "実行中",
        (Lang::Ja, "backing-off") => "再試行待ち",
        (Lang::Ja, "needs-operator") => "オペレーター待ち",
        (_, other) => other,
    }
}

/// "met, 14m58s to spare" / "missed by 3m" / "in progress".
pub fn rto_sentence(r: &Report, lang: Lang) -> String {
    let target = duration(r.target_secs.saturating_mul(1000), lang);
    let actual = duration(r.actual_secs.saturating_mul(1000), lang);
    let margin = duration(r.rto_margin_secs.unsigned_abs().saturating_mul(1000), lang);
    match (lang, r.rto_met) {
        (Lang::Ja, Some(true)) => format!("目標 {target} / 実績 {actual} — 達成（残り {margin}）"),
        (Lang::Ja, Some(false)) if r.rto_margin_secs < 0 => format!("目標 {target} / 実績 {actual} — 未達（{margin} 超過）"),
        (Lang::Ja, Some(false)) => format!("目標 {target} / 実績 {actual} — 未達（復旧に成功していない）"),
        (Lang::Ja, None) => format!("目標 {target} / 経過 {actual} — 進行中"),
        (Lang::En, Some(true)) => format!("target {target}, actual {actual}: met, {margin} to spare"),
        (Lang::En, Some(false)) if r.rto_margin_secs < 0 => format!("target {target}, actual {actual}: missed by {margin}"),
        (Lang::En, Some(false)) => format!("target {target}, actual {actual}: missed (the run did not recover)"),
        (Lang::En, None) => format!("target {target}, elapsed {actual}: in progress"),
    }
}

pub fn rpo_sentence(r: &Report, lang: Lang) -> String {
    match (&r.rpo, lang) {
        (None, Lang::Ja) => "n/a（このワークフローはバックアップを復元しない）".into(),
        (None, Lang::En) => "n/a (this workflow restores no backup)".into(),
        (Some(p), Lang::Ja) if p.live => format!("稼働中メンバーのスナップショット {}（データ損失なし）", p.name),
        (Some(p), Lang::En) if p.live => format!("a live member's snapshot {} (no data lost)", p.name),
        (Some(p), Lang::Ja) => format!(
            "復元したバックアップ {} は {} 前のもの（目標 {}、{}）",
            p.name,
            duration(p.age_secs * 1000, lang),
            duration(p.rpo_secs * 1000, lang),
            if p.within_rpo { "達成" } else { "未達" }
        ),
        (Some(p), Lang::En) => format!(
            "the backup restored, {}, was {} old (target {}: {})",
            p.name,
            duration(p.age_secs * 1000, lang),
            duration(p.rpo_secs * 1000, lang),
            if p.within_rpo { "met" } else { "missed" }
        ),
    }
}

/// "tester skipped step-3: reason".
pub fn decision_sentence(d: &super::Decision, lang: Lang) -> String {
    let step = d.step.as_deref().unwrap_or("");
    let reason = d.reason.as_deref().unwrap_or("");
    match (lang, d.what) {
        (Lang::Ja, "preapproved") => format!("{} がすべての確認を事前承認（dr start --yes）", d.by),
        (Lang::Ja, "approved") => format!("{} が {step} を承認", d.by),
        (Lang::Ja, "skipped") => format!("{} が {step} をスキップ — 理由: {reason}", d.by),
        (Lang::Ja, "retry") => format!("{} が {step} の再試行を指示", d.by),
        (Lang::Ja, _) => format!("{} が中止を指示 — 理由: {reason}", d.by),
        (Lang::En, "preapproved") => format!("{} approved every gate in advance (dr start --yes)", d.by),
        (Lang::En, "approved") => format!("{} approved {step}", d.by),
        (Lang::En, "skipped") => format!("{} skipped {step}; reason: {reason}", d.by),
        (Lang::En, "retry") => format!("{} asked to retry {step}", d.by),
        (Lang::En, _) => format!("{} cancelled the run; reason: {reason}", d.by),
    }
}

fn field(f: Option<&Field>, key: &str, r: &Report, lang: Lang) -> String {
    let w = words(lang);
    match f {
        Some(f) => format!("{}\n\n_{} {} {}_", f.value, w.set_by, f.by, when(f.at)),
        None => format!("_{}_ — `dr report {} --set {key}=\"…\"`", w.unfilled, r.run, ),
    }
}

/// Escapes what would break a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn at(ms: Option<i64>, lang: Lang) -> String {
    ms.map_or_else(|| words(lang).not_recorded.to_owned(), when)
}

/// The report as Markdown.
pub fn markdown(r: &Report, lang: Lang) -> String {
    let w = words(lang);
    let mut o = String::new();
    let _ = writeln!(o, "# {}\n", w.title);
    let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(o, "run `{}` — `{}`\n", r.run, r.workflow);
    let _ = writeln!(o, "## {}", w.overview);
    let _ = writeln!(o, "- **{}**: {}", w.detected, when(r.detected_at));
    let _ = writeln!(o, "- **{}**: {}", w.recovered, at(r.finished_at.filter(|_| r.status == "succeeded"), lang));
    let _ = writeln!(o, "- **{}**: {}", w.impact_time, duration(r.actual_secs * 1000, lang));
    let _ = writeln!(o, "- **{}**: Level {}", w.level, r.level);
    let _ = writeln!(o, "- **{}**: {}", w.scope, r.impact.as_ref().map_or_else(|| format!("_{}_", w.unfilled), |f| f.value.clone()));
    let reason = r.reason.as_ref().map_or(String::new(), |x| format!(" — {x}"));
    let _ = writeln!(o, "- **{}**: {}{reason}", w.status, status_word(r.status, lang));
    let _ = writeln!(o, "- **{}**: {}", w.rto, rto_sentence(r, lang));
    let _ = writeln!(o, "- **{}**: {}", w.rpo, rpo_sentence(r, lang));
    let _ = writeln!(o, "- **{}**: {}", w.params, if params.is_empty() { "—".to_owned() } else { format!("`{}`", params.join(" ")) });
    let _ = writeln!(o, "- **{}**: UTC{}\n", w.times_in, zone(r.detected_at));

    let _ = writeln!(o, "## {}", w.timeline);
    let milestones = [
        (Some(r.detected_at), w.t_detected),
        (Some(r.started_at), w.t_response),
        (r.cause.as_ref().map(|f| f.at), w.t_cause),
        (r.work_started_at, w.t_work),
        (r.restored_at.filter(|_| r.status == "succeeded"), w.t_restored),
        (r.finished_at.filter(|_| r.status == "succeeded"), w.t_full),
    ];
    for (t, what) in milestones {
        let _ = writeln!(o, "- {} - {what}", at(t, lang));
    }
    let _ = writeln!(o, "\n### {}\n", w.attempts);
    let _ = writeln!(o, "| {} | {} | {} | {} | {} | {} | {} |", w.col_step, w.col_attempt, w.col_start, w.col_end, w.col_took, w.col_result, w.col_detail);
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    for a in &r.attempts {
        let took = a.ended_at.map_or(String::new(), |e| duration(u64::try_from(e - a.started_at).unwrap_or(0), lang));
        let detail = a.error.as_deref().or(a.summary.as_deref()).unwrap_or("");
        let attempt = if a.probe { format!("{} (probe)", a.attempt) } else { a.attempt.to_string() };
        let _ = writeln!(
            o,
            "| {} | {attempt} | {} | {} | {took} | {} | {} |",
            a.step,
            when(a.started_at),
            a.ended_at.map_or(String::new(), when),
            outcome_word(a, lang),
            cell(detail)
        );
    }
    let _ = writeln!(o, "\n### {}\n", w.steps);
    let _ = writeln!(o, "| {} | {} | {} | {} | {} |", w.col_step, w.col_state, w.col_attempts, w.col_busy, w.col_detail);
    let _ = writeln!(o, "|---|---|---|---|---|");
    for s in &r.steps {
        let _ = writeln!(o, "| {} | {} | {} | {} | {} |", s.id, state_word(s.state, lang), s.attempts, duration(s.busy_ms, lang), cell(&s.note));
    }
    let _ = writeln!(o, "\n## {}", w.decisions);
    if r.decisions.is_empty() {
        let _ = writeln!(o, "- {}", w.no_decisions);
    }
    for d in &r.decisions {
        let _ = writeln!(o, "- {} - {}", when(d.at), decision_sentence(d, lang));
    }
    let _ = writeln!(o, "\n## {}", w.verification);
    if r.verification.is_empty() {
        let _ = writeln!(o, "- {}", w.no_verification);
    }
    for (step, summary) in &r.verification {
        let _ = writeln!(o, "- {step}: {summary}");
    }
    let _ = writeln!(o, "\n## {}\n{}\n", w.cause, field(r.cause.as_ref(), "cause", r, lang));
    let _ = writeln!(o, "## {}", w.response);
    let counts = |state: &str| r.steps.iter().filter(|s| s.state == state).count();
    let _ = match lang {
        Lang::Ja => writeln!(
            o,
            "ワークフロー `{}` の {} ステップ: 成功 {}、スキップ {}、失敗（許容） {}、失敗 {}。判断 {} 件。\n",
            r.workflow,
            r.steps.len(),
            counts("succeeded"),
            counts("skipped"),
            counts("failed-tolerated"),
            counts("failed"),
            r.decisions.len()
        ),
        Lang::En => writeln!(
            o,
            "Workflow `{}`, {} steps: {} succeeded, {} skipped, {} failed (tolerated), {} failed; {} operator decisions.\n",
            r.workflow,
            r.steps.len(),
            counts("succeeded"),
            counts("skipped"),
            counts("failed-tolerated"),
            counts("failed"),
            r.decisions.len()
        ),
    };
    let _ = writeln!(o, "## {}\n{}", w.lessons, field(r.lessons.as_ref(), "lessons", r, lang));
    let _ = writeln!(o, "\n## {}", w.checklist);
    for line in &r.checklist {
        let _ = writeln!(o, "- {}", checklist_line(line, r, lang));
    }
    o
}

/// `[x] All services running — verify: …` / `[x] … — confirmed by alice 2026-…: note` / `[ ] … — open: dr report ID --confirm ITEM`.
pub fn checklist_line(line: &crate::report::ChecklistLine, r: &Report, lang: Lang) -> String {
    let w = words(lang);
    let text = match lang {
        Lang::Ja => line.ja,
        Lang::En => line.en,
    };
    let mut parts: Vec<String> = line.evidence.clone();
    if let Some(c) = &line.confirmed {
        parts.push(format!("{} {} {}: {}", w.confirmed_by, c.by, when(c.at), c.value));
    }
    if line.done {
        format!("[x] {text} — {}", parts.join("; "))
    } else {
        format!("[ ] {text} — {}: `dr report {} --confirm {}`", w.open_item, r.run, line.id)
    }
}
