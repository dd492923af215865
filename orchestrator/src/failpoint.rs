//! Crash points for the crash-safety tests. With the `failpoints` feature,
//! `DR_CRASH_AT=STEP:PHASE` kills the process with SIGKILL (no cleanup, no
//! flush) when step STEP reaches PHASE; `DR_HANG_AT=STEP:PHASE` blocks the
//! thread that reaches it forever instead (a hung engine, for the watchdog
//! tests). Without the feature this is a no-op.

/// Where in a step's life a crash can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before the transition that starts the step is written.
    BeforeStart,
    /// After "started" is durable, before the action runs.
    AfterStart,
    /// After the action returned, before its result is written.
    AfterAction,
    /// After "finished" is durable.
    AfterFinish,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::BeforeStart => "before-start",
            Phase::AfterStart => "after-start",
            Phase::AfterAction => "after-action",
            Phase::AfterFinish => "after-finish",
        }
    }
}

/// Crashes the process if `DR_CRASH_AT` names this step and phase; hangs
/// the calling thread if `DR_HANG_AT` does.
#[cfg(feature = "failpoints")]
pub fn hit(step: &str, phase: Phase) {
    use std::sync::OnceLock;
    fn target(var: &str) -> Option<(String, String)> {
        let spec = std::env::var(var).ok()?;
        let (s, p) = spec.rsplit_once(':')?;
        Some((s.to_owned(), p.to_owned()))
    }
    static CRASH: OnceLock<Option<(String, String)>> = OnceLock::new();
    static HANG: OnceLock<Option<(String, String)>> = OnceLock::new();
    let is = |t: &Option<(String, String)>| t.as_ref().is_some_and(|(s, p)| s == step && p == phase.as_str());
    if is(CRASH.get_or_init(|| target("DR_CRASH_AT"))) {
        kill_self();
    }
    if is(HANG.get_or_init(|| target("DR_HANG_AT"))) {
        loop {
            #[allow(clippy::disallowed_methods)] // the point: a thread that never comes back
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

#[cfg(feature = "failpoints")]
#[allow(unsafe_code)]
fn kill_self() {
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_step: &str, _phase: Phase) {}
