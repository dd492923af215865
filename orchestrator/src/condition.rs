//! Conditions and gate prompts: the data a step carries to decide, from its
//! dependencies' recorded outcomes and outputs, whether it runs, and what its
//! gate tells the operator. Both are pure (the core evaluates them with no
//! I/O) and part of the definition hash.
//!
//! Owns: [`Condition`] (succeeded / failed / JSON-pointer equality, and their
//! combinations) and [`render_prompt`] (`{step:/pointer}` placeholders).
//! Refuses: anything that is not in the run's snapshot.

use dr_state::{RunRecord, StepId, StepState};
use serde::Serialize;

use crate::action::StepHandle;

/// When a step runs. Evaluated once every dependency has settled; every step
/// it names must be a dependency (checked by `WorkflowDef::validate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The step succeeded.
    Succeeded(StepId),
    /// The step failed and its failure was tolerated.
    Failed(StepId),
    /// The step succeeded and the value at `pointer` (RFC 6901) in its output
    /// equals `value`.
    OutputIs { step: StepId, pointer: String, value: serde_json::Value },
    Not(Box<Condition>),
    All(Vec<Condition>),
    Any(Vec<Condition>),
}

impl Condition {
    pub fn succeeded<T>(step: &StepHandle<T>) -> Self {
        Condition::Succeeded(step.id.clone())
    }

    pub fn failed<T>(step: &StepHandle<T>) -> Self {
        Condition::Failed(step.id.clone())
    }

    pub fn output_is<T>(step: &StepHandle<T>, pointer: &str, value: serde_json::Value) -> Self {
        Condition::OutputIs { step: step.id.clone(), pointer: pointer.to_owned(), value }
    }

    #[allow(clippy::should_implement_trait)] // a constructor of the data, not `!`
    pub fn not(self) -> Self {
        Condition::Not(Box::new(self))
    }

    /// Every step the condition reads.
    pub fn steps(&self) -> Vec<&StepId> {
        match self {
            Condition::Succeeded(s) | Condition::Failed(s) | Condition::OutputIs { step: s, .. } => vec![s],
            Condition::Not(c) => c.steps(),
            Condition::All(cs) | Condition::Any(cs) => cs.iter().flat_map(Condition::steps).collect(),
        }
    }

    /// Whether it holds for the run, with what was observed (for the skip reason).
    pub fn evaluate(&self, run: &RunRecord) -> (bool, String) {
        match self {
            Condition::Succeeded(s) => {
                let state = state_of(run, s);
                (matches!(state, Some(StepState::Succeeded { .. })), format!("{s} {}", state_name(state)))
            }
            Condition::Failed(s) => {
                let state = state_of(run, s);
                (matches!(state, Some(StepState::Failed { tolerated: true, .. })), format!("{s} {}", state_name(state)))
            }
            Condition::OutputIs { step, pointer, value } => match state_of(run, step) {
                Some(StepState::Succeeded { output, .. }) => {
                    let found = serde_json::from_str::<serde_json::Value>(&output.value)
                        .ok()
                        .and_then(|v| v.pointer(pointer).cloned());
                    match found {
                        Some(found) => (found == *value, format!("{step} {pointer} is {found}, wanted {value}")),
                        None => (false, format!("{step} has no {pointer} in its output, wanted {value}")),
                    }
                }
                state => (false, format!("{step} {}, so it has no {pointer}", state_name(state))),
            },
            Condition::Not(c) => {
                let (holds, seen) = c.evaluate(run);
                (!holds, format!("not ({seen})"))
            }
            Condition::All(cs) => {
                let results: Vec<(bool, String)> = cs.iter().map(|c| c.evaluate(run)).collect();
                let holds = results.iter().all(|(h, _)| *h);
                // Say what failed, not what held.
                let seen = results.iter().filter(|(h, _)| holds || !*h).map(|(_, s)| s.as_str()).collect::<Vec<_>>();
                (holds, seen.join(" and "))
            }
            Condition::Any(cs) => {
                let results: Vec<(bool, String)> = cs.iter().map(|c| c.evaluate(run)).collect();
                let holds = results.iter().any(|(h, _)| *h);
                let seen = results.iter().filter(|(h, _)| !holds || *h).map(|(_, s)| s.as_str()).collect::<Vec<_>>();
                (holds, seen.join(" or "))
            }
        }
    }

    /// The condition as people read it (`dr workflows show`).
    pub fn describe(&self) -> String {
        match self {
            Condition::Succeeded(s) => format!("{s} succeeded"),
            Condition::Failed(s) => format!("{s} failed (tolerated)"),
            Condition::OutputIs { step, pointer, value } => format!("{step}{pointer} == {value}"),
            Condition::Not(c) => format!("not ({})", c.describe()),
            Condition::All(cs) => cs.iter().map(|c| format!("({})", c.describe())).collect::<Vec<_>>().join(" and "),
            Condition::Any(cs) => cs.iter().map(|c| format!("({})", c.describe())).collect::<Vec<_>>().join(" or "),
        }
    }
}

fn state_of<'a>(run: &'a RunRecord, step: &StepId) -> Option<&'a StepState> {
    run.steps.iter().find(|s| &s.id == step).map(|s| &s.state)
}

fn state_name(state: Option<&StepState>) -> &'static str {
    match state {
        Some(StepState::Succeeded { .. }) => "succeeded",
        Some(StepState::Failed { tolerated: true, .. }) => "failed (tolerated)",
        Some(StepState::Skipped { .. }) => "was skipped",
        Some(s) => s.as_str(),
        None => "is not a step of the run",
    }
}

/// The steps a gate prompt template reads (`{step:/pointer}` placeholders).
pub fn prompt_steps(template: &str) -> Vec<StepId> {
    placeholders(template).into_iter().map(|(_, step, _)| StepId::from(step)).collect()
}

/// Fills a gate prompt template from the run's recorded outputs: each
/// `{step:/pointer}` becomes the value there (a string without quotes),
/// `{{` and `}}` are literal braces. A value that is missing says so.
pub fn render_prompt(template: &str, run: &RunRecord) -> String {
    let mut out = String::with_capacity(template.len());
    let mut last = 0;
    for (range, step, pointer) in placeholders(template) {
        out.push_str(&unescape(&template[last..range.start]));
        let value = run
            .step(step)
            .and_then(|s| s.state.output())
            .and_then(|o| serde_json::from_str::<serde_json::Value>(&o.value).ok())
            .and_then(|v| v.pointer(pointer).cloned());
        match value {
            Some(serde_json::Value::String(s)) => out.push_str(&s),
            Some(v) => out.push_str(&v.to_string()),
            None => out.push_str(&format!("<no {step}{pointer}>")),
        }
        last = range.end;
    }
    out.push_str(&unescape(&template[last..]));
    out
}

fn unescape(text: &str) -> String {
    text.replace("{{", "{").replace("}}", "}")
}

/// `(byte range, step, pointer)` of every `{step:/pointer}` in the template.
fn placeholders(template: &str) -> Vec<(std::ops::Range<usize>, &str, &str)> {
    let bytes = template.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => i += 2,
            b'}' if bytes.get(i + 1) == Some(&b'}') => i += 2,
            b'{' => match template[i + 1..].find('}') {
                Some(len) => {
                    let inner = &template[i + 1..i + 1 + len];
                    if let Some((step, pointer)) = inner.split_once(':') {
                        if pointer.is_empty() || pointer.starts_with('/') {
                            found.push((i..i + len + 2, step, pointer));
                        }
                    }
                    i += len + 2;
                }
                None => break,
            },
            _ => i += 1,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_state::{RunHeader, RunId, StepOutput};

    fn run_with(outputs: &[(&str, StepState)]) -> RunRecord {
        let header = RunHeader {
            id: RunId::new_v7(0, 0),
            workflow: "w".into(),
            definition_hash: String::new(),
            definition_steps: vec![],
            config_digest: None,
            config_path: None,
            params: Default::default(),
            level: 1,
            target_secs: 60,
            incident_at: 0,
            steps: outputs.iter().map(|(id, _)| StepId::from(*id)).collect(),
        };
        let mut run = RunRecord::new(&header, 0);
        for (step, (_, state)) in run.steps.iter_mut().zip(outputs) {
            step.state = state.clone();
        }
        run
    }

    fn succeeded(value: serde_json::Value) -> StepState {
        StepState::Succeeded { at: 1, output: StepOutput { summary: "ok".into(), value: value.to_string() } }
    }

    #[test]
    fn conditions_read_outcomes_and_output_values() {
        let run = run_with(&[
            ("wait", succeeded(serde_json::json!({"ready": false, "node": "w1"}))),
            ("check", StepState::Failed { at: 1, error: "down".into(), tolerated: true }),
            ("other", StepState::Skipped { at: 1, reason: "r".into(), cause: dr_state::SkipCause::Condition }),
        ]);
        let ready = Condition::OutputIs { step: "wait".into(), pointer: "/ready".into(), value: serde_json::json!(true) };
        let (holds, seen) = ready.evaluate(&run);
        assert!(!holds);
        assert_eq!(seen, "wait /ready is false, wanted true");
        assert!(ready.clone().not().evaluate(&run).0);
        assert!(Condition::Failed("check".into()).evaluate(&run).0);
        assert!(!Condition::Succeeded("check".into()).evaluate(&run).0);
        let (holds, seen) = Condition::Succeeded("other".into()).evaluate(&run);
        assert!(!holds && seen.contains("skipped"), "{seen}");
        let missing = Condition::OutputIs { step: "wait".into(), pointer: "/nope".into(), value: serde_json::json!(1) };
        assert!(!missing.evaluate(&run).0);
        let any = Condition::Any(vec![ready.clone(), Condition::Failed("check".into())]);
        assert!(any.evaluate(&run).0);
        let all = Condition::All(vec![ready, Condition::Failed("check".into())]);
        let (holds, seen) = all.evaluate(&run);
        assert!(!holds);
        assert_eq!(seen, "wait /ready is false, wanted true", "only what failed is named");
    }

    #[test]
    fn prompts_fill_placeholders_from_outputs() {
        let run = run_with(&[("choose", succeeded(serde_json::json!({"path": "/b/x.tar.gz", "age_hours": 3})))]);
        let prompt = render_prompt("Restore {choose:/path} ({choose:/age_hours} h old) {{literal}} {choose:/gone}?", &run);
        assert_eq!(prompt, "Restore /b/x.tar.gz (3 h old) {literal} <no choose/gone>?");
        assert_eq!(prompt_steps("a {x:/y} {{z}} {w:}"), vec![StepId::from("x"), StepId::from("w")]);
        assert_eq!(render_prompt("no placeholders", &run), "no placeholders");
    }
}
