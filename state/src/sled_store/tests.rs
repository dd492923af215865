use super::*;
use crate::model::{Event, RunStatus, StepRecord};
use std::collections::BTreeMap;

fn run(id: RunId, next_seq: u64, status: RunStatus) -> RunRecord {
    RunRecord {
        id,
        workflow: "synthetic".into(),
        definition_hash: "h".into(),
        definition_steps: vec![],
        params: BTreeMap::new(),
        level: 1,
        target_secs: 900,
        status,
        reason: None,
        incident_at: 1000,
        started_at: 1000,
        finished_at: None,
        updated_at: 1000,
        next_seq,
        epoch: 0,
        ending: None,
        gates_preapproved: None,
        config_digest: None,
        config_path: None,
        steps: vec![StepRecord::new("step-1")],
    }
}

fn event(seq: u64) -> EventRecord {
    EventRecord { seq, at: 1000 + seq as i64, event: Event::RunSucceeded }
}

#[test]
fn appends_are_atomic_contiguous_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = RunId::new_v7(1, 7);
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.append(&run(id, 2, RunStatus::Running), &[event(0), event(1)]).unwrap();
        // A gap is refused and changes nothing.
        let err = store.append(&run(id, 4, RunStatus::Running), &[event(3)]).unwrap_err();
        assert!(matches!(err, Error::SequenceConflict { expected: 3, found: 2, .. }), "{err}");
        store.append(&run(id, 3, RunStatus::Succeeded), &[event(2)]).unwrap();
        assert!(store.sync_stats().syncs >= 2);
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.load(id).unwrap().unwrap().next_seq, 3);
    let seqs: Vec<u64> = store.events(id).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![0, 1, 2]);
    assert!(store.open_runs().unwrap().is_empty(), "a terminal run leaves the open index");
    assert_eq!(store.run_ids().unwrap(), vec![id]);
}

#[test]
fn a_second_opener_gets_busy_with_the_owner_pid() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SledStore::open(dir.path()).unwrap();
    let err = SledStore::open(dir.path()).unwrap_err();
    match &err {
        Error::Busy { pid, path } => {
            assert_eq!(*pid, Some(std::process::id()));
            assert_eq!(path, dir.path());
        }
        other => panic!("expected busy, got {other}"),
    }
    assert!(err.to_string().contains(&format!("pid {}", std::process::id())));
}

#[test]
fn an_unknown_store_format_is_refused_with_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.db.open_tree("meta").unwrap().insert("format", &[7u8]).unwrap();
        store.checkpoint_now().unwrap();
    }
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedFormat { found: 7, supported: 2, .. }), "{err}");
    assert!(err.to_string().contains("version 7"));
}

#[test]
fn a_store_written_by_format_1_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.db.open_tree("meta").unwrap().insert("format", &[1u8]).unwrap();
        store.checkpoint_now().unwrap();
    }
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedFormat { found: 1, supported: 2, .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("format version 1") && message.contains("reads version 2"), "{message}");
    assert!(message.contains("--state-dir"), "the message says how to go on: {message}");
    // Refusing changed nothing: it is refused again, still as version 1.
    let again = SledStore::open(dir.path()).unwrap_err();
    assert!(matches!(again, Error::UnsupportedFormat { found: 1, .. }), "{again}");
}

#[test]
fn a_corrupted_run_is_named_and_the_others_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let good = RunId::new_v7(1, 1);
    let bad = RunId::new_v7(2, 2);
    let store = SledStore::open(dir.path()).unwrap();
    store.append(&run(good, 1, RunStatus::Running), &[event(0)]).unwrap();
    store.append(&run(bad, 1, RunStatus::Running), &[event(0)]).unwrap();
    store.corrupt_run_for_test(bad, &[1, 0xff, 0xff]).unwrap();

    let err = store.load(bad).unwrap_err();
    assert!(err.to_string().contains(&bad.to_string()), "{err}");
    assert!(store.load(good).unwrap().is_some());
    let summaries = store.summaries().unwrap();
    assert_eq!(summaries.len(), 2);
    assert!(summaries[0].is_ok());
    assert!(summaries[1].is_err());
}

#[test]
fn an_unwritable_directory_is_reported() {
    let err = SledStore::open("/proc/dr-cannot-live-here").unwrap_err();
    assert!(matches!(err, Error::CreateDir { .. }), "{err}");
    assert!(err.to_string().contains("/proc/dr-cannot-live-here"));
}

#[test]
fn durations_keep_a_bounded_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    for ms in 0..100 {
        store.record_duration("synthetic", "step-1", ms).unwrap();
    }
    let window = store.durations("synthetic", "step-1").unwrap();
    assert_eq!(window.len(), STATS_WINDOW);
    assert_eq!(*window.last().unwrap(), 99);
    assert!(store.durations("synthetic", "step-2").unwrap().is_empty());
}

#[test]
fn ids_resolve_by_prefix_and_latest() {
    let a = RunId::new_v7(1_700_000_000_000, 0x1111);
    let b = RunId::new_v7(1_700_000_000_000, 0x2222_0000_0000_0000_0000_0000);
    let ids = vec![a, b];
    assert_eq!(crate::resolve_in(&ids, "@latest").unwrap(), b);
    assert_eq!(crate::resolve_in(&ids, &a.to_string()).unwrap(), a);
    let common = &a.to_string()[..8];
    assert!(matches!(crate::resolve_in(&ids, common), Err(Error::Ambiguous { count: 2, .. })));
    assert!(matches!(crate::resolve_in(&ids, "zzz"), Err(Error::NotFound { .. })));
    assert!(matches!(crate::resolve_in(&[], "@latest"), Err(Error::NotFound { .. })));
}

#[test]
fn the_write_ahead_log_restores_appends_sled_never_persisted() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let id = RunId::new_v7(5, 5);
    let wal_bytes = {
        let store = SledStore::open(first.path()).unwrap();
        store.append(&run(id, 2, RunStatus::Running), &[event(0), event(1)]).unwrap();
        store.append(&run(id, 3, RunStatus::Succeeded), &[event(2)]).unwrap();
        // What a crash would leave: the log as it stands before any checkpoint.
        std::fs::read(first.path().join("wal")).unwrap()
    };
    assert!(!wal_bytes.is_empty());
    // A store whose sled has none of it, and that log.
    drop(SledStore::open(second.path()).unwrap());
    std::fs::write(second.path().join("wal"), &wal_bytes).unwrap();
    let store = SledStore::open(second.path()).unwrap();
    let loaded = store.load(id).unwrap().unwrap();
    assert_eq!(loaded.next_seq, 3);
    assert_eq!(loaded.status, RunStatus::Succeeded);
    assert_eq!(store.events(id).unwrap().len(), 3);
    assert!(store.open_runs().unwrap().is_empty());
    assert_eq!(std::fs::metadata(second.path().join("wal")).unwrap().len(), 0, "replayed and checkpointed");
}
