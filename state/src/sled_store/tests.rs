use super::*;
use crate::model::{Event, RunStatus, StepRecord};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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
    assert_eq!(std::fs::metadata(second.path().join("wal")).unwrap().len(), wal_bytes.len() as u64, "replayed, kept until a checkpoint");
    drop(store);
    assert_eq!(std::fs::metadata(second.path().join("wal")).unwrap().len(), crate::wal::HEADER_LEN, "checkpointed at close");
    let store = SledStore::open(second.path()).unwrap();
    assert_eq!(store.events(id).unwrap().len(), 3, "from sled alone");
}

/// A store with `runs` runs of `per_run` appends each (one record an append)
/// in its log and none in sled: what a crash before any checkpoint leaves.
fn crashed_store(dir: &Path, runs: u64, per_run: u64) -> Vec<RunId> {
    let ids: Vec<RunId> = (0..runs).map(|i| RunId::new_v7(10 + i as i64, u128::from(i))).collect();
    let elsewhere = tempfile::tempdir().unwrap();
    let store = SledStore::open(elsewhere.path()).unwrap();
    for seq in 0..per_run {
        for id in &ids {
            store.append(&run(*id, seq + 1, RunStatus::Running), &[event(seq)]).unwrap();
        }
    }
    let wal = std::fs::read(elsewhere.path().join("wal")).unwrap();
    drop(store);
    drop(SledStore::open(dir).unwrap());
    std::fs::write(dir.join("wal"), wal).unwrap();
    ids
}

fn record_offsets(dir: &Path) -> Vec<u64> {
    crate::wal::scan(&dir.join("wal")).unwrap().records.iter().map(|r| r.offset).collect()
}

#[test]
fn damage_followed_by_valid_records_refuses_to_open_and_changes_nothing() {
    for (what, damage) in [("a flipped byte", 0usize), ("eight zero bytes inserted", 1)] {
        let dir = tempfile::tempdir().unwrap();
        let ids = crashed_store(dir.path(), 2, 5);
        let offsets = record_offsets(dir.path());
        assert_eq!(offsets.len(), 10);
        let wal_path = dir.path().join("wal");
        let mut bytes = std::fs::read(&wal_path).unwrap();
        // Record 3 of 10 (index 2: run 0's second append).
        let at = offsets[2] as usize;
        if damage == 0 {
            bytes[at + 30] ^= 0x01;
        } else {
            bytes.splice(at + 10..at + 10, [0u8; 8]);
        }
        std::fs::write(&wal_path, &bytes).unwrap();
        let err = SledStore::open(dir.path()).unwrap_err();
        match &err {
            Error::WalDamaged { offset, records_after, runs, path } => {
                assert_eq!(*offset, offsets[2], "{what}");
                assert_eq!(*records_after, 7, "{what}");
                assert_eq!(path, &wal_path);
                assert_eq!(runs, &ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(), "{what}");
            }
            other => panic!("{what}: expected damage, got {other}"),
        }
        assert!(err.to_string().contains(&format!("byte {}", offsets[2])), "{err}");
        assert_eq!(std::fs::read(&wal_path).unwrap(), bytes, "{what}: the log is unchanged byte for byte");
        // Again: still refused, still unchanged (the failed open did not empty it at drop).
        assert!(matches!(SledStore::open(dir.path()), Err(Error::WalDamaged { .. })));
        assert_eq!(std::fs::read(&wal_path).unwrap(), bytes);
        // check reports the same without changing anything.
        let report = crate::check(dir.path()).unwrap();
        let damage_report = report.damage.unwrap();
        assert_eq!(damage_report.offset, offsets[2]);
        assert_eq!(report.records, 2);
        assert_eq!(std::fs::read(&wal_path).unwrap(), bytes);
        // repair cuts it and names exactly what each run lost: run 0 events 1..=4
        // (its record 3 and later), run 1 events 2..=4 (its second record is intact, before the damage).
        let repaired = crate::repair(dir.path()).unwrap();
        assert_eq!(repaired.cut_at, Some(offsets[2]));
        // The damaged record's own content (run 0, event 1) is unreadable; what is known lost:
        assert_eq!(repaired.lost, vec![
            crate::RunLoss { run: ids[0].to_string(), events: vec![2, 3, 4] },
            crate::RunLoss { run: ids[1].to_string(), events: vec![1, 2, 3, 4] },
        ], "{what}");
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.load(ids[0]).unwrap().unwrap().next_seq, 1);
        assert_eq!(store.load(ids[1]).unwrap().unwrap().next_seq, 1);
        assert_eq!(store.events(ids[0]).unwrap().len(), 1);
    }
}

#[test]
fn a_failed_sync_poisons_the_store_and_is_never_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let id = RunId::new_v7(3, 3);
    let store = SledStore::open(dir.path()).unwrap();
    store.append(&run(id, 1, RunStatus::Running), &[event(0)]).unwrap();
    crate::fault::arm(crate::fault::Site::LogSync, 1);
    let err = store.append(&run(id, 2, RunStatus::Running), &[event(1)]).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("dr resume"), "{err}");
    // Readers see only what was acknowledged.
    assert_eq!(store.load(id).unwrap().unwrap().next_seq, 1);
    assert_eq!(store.events(id).unwrap().len(), 1);
    // Every later append fails, though the disk would now sync.
    let later = store.append(&run(id, 2, RunStatus::Running), &[event(1)]).unwrap_err();
    assert!(matches!(later, Error::Poisoned { .. }), "{later}");
    let wal_before = std::fs::read(dir.path().join("wal")).unwrap();
    drop(store);
    assert_eq!(std::fs::read(dir.path().join("wal")).unwrap(), wal_before, "no checkpoint, no truncation after the failure");
    // The next process replays the log: the acknowledged append is there.
    let store = SledStore::open(dir.path()).unwrap();
    assert!(store.load(id).unwrap().unwrap().next_seq >= 1);
}

#[test]
fn a_failed_write_is_rolled_back_and_poisons_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let id = RunId::new_v7(4, 4);
    let store = SledStore::open(dir.path()).unwrap();
    store.append(&run(id, 1, RunStatus::Running), &[event(0)]).unwrap();
    let wal_before = std::fs::read(dir.path().join("wal")).unwrap();
    crate::fault::arm(crate::fault::Site::LogWrite, 1);
    assert!(matches!(store.append(&run(id, 2, RunStatus::Running), &[event(1)]), Err(Error::Poisoned { .. })));
    assert_eq!(std::fs::read(dir.path().join("wal")).unwrap(), wal_before, "the half-written record is gone");
    assert!(matches!(store.append(&run(id, 2, RunStatus::Running), &[event(1)]), Err(Error::Poisoned { .. })));
    drop(store);
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.load(id).unwrap().unwrap().next_seq, 1);
    assert!(crate::check(dir.path()).is_err(), "held by the open store: busy");
}

#[test]
fn a_failed_checkpoint_sync_never_empties_the_log() {
    // Fail each sync a checkpoint performs in turn (sled's files, its
    // directories, the state directory, the log's truncation), until the
    // checkpoint has no sync left to fail. Only the failure of the last one
    // (the truncation's own sync, after every sled file is durable) may leave
    // the log emptied.
    let mut emptied = Vec::new();
    for nth in 1.. {
        let dir = tempfile::tempdir().unwrap();
        let id = RunId::new_v7(6, 6);
        let store = SledStore::open(dir.path()).unwrap();
        store.append(&run(id, 1, RunStatus::Running), &[event(0)]).unwrap();
        let wal_before = std::fs::read(dir.path().join("wal")).unwrap();
        assert!(wal_before.len() > crate::wal::HEADER_LEN as usize);
        crate::fault::arm(crate::fault::Site::CheckpointSync, nth);
        let Err(err) = store.checkpoint_now() else {
            crate::fault::disarm();
            assert!(nth > 5, "a checkpoint syncs sled's files, its directories, the state directory and the log: {nth}");
            assert_eq!(std::fs::metadata(dir.path().join("wal")).unwrap().len(), crate::wal::HEADER_LEN);
            assert!(emptied.is_empty() || emptied == vec![nth - 1], "the log was emptied after failed syncs {emptied:?} of {}", nth - 1);
            break;
        };
        assert!(matches!(err, Error::Poisoned { .. }), "{err}");
        let wal_after = std::fs::read(dir.path().join("wal")).unwrap();
        if wal_after != wal_before {
            emptied.push(nth);
        }
        // Poisoned: a second try and the close do not checkpoint: a retried sync never counts.
        assert!(store.checkpoint_now().is_err());
        drop(store);
        assert_eq!(std::fs::read(dir.path().join("wal")).unwrap(), wal_after, "sync #{nth}");
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.load(id).unwrap().unwrap().next_seq, 1);
    }
}

#[test]
fn a_writer_whose_sync_failed_is_never_answered_durable_among_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SledStore::open(dir.path()).unwrap());
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let store = std::sync::Arc::clone(&store);
            std::thread::spawn(move || {
                let id = RunId::new_v7(100 + w as i64, u128::from(w));
                if w == 0 {
                    crate::fault::arm(crate::fault::Site::LogSync, 5);
                }
                let results: Vec<bool> = (0..20).map(|seq| store.append(&run(id, seq + 1, RunStatus::Running), &[event(seq)]).is_ok()).collect();
                (id, results)
            })
        })
        .collect();
    let outcomes: Vec<(RunId, Vec<bool>)> = writers.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(store.poisoned().is_some());
    for (w, (id, results)) in outcomes.iter().enumerate() {
        let acknowledged = results.iter().take_while(|ok| **ok).count();
        assert!(results[acknowledged..].iter().all(|ok| !ok), "writer {w}: an append succeeded after the store was poisoned: {results:?}");
        if w == 0 {
            assert_eq!(acknowledged, 4, "the writer whose 5th sync failed: {results:?}");
        }
        // What readers see is exactly what was acknowledged.
        let seen = store.load(*id).unwrap().map_or(0, |r| r.next_seq);
        assert_eq!(seen, acknowledged as u64, "writer {w}");
    }
}

#[test]
fn the_state_directory_is_private_whatever_the_umask() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("state");
    // The umask is the process's (changing it here would race the other tests):
    // `dr` under `umask 000` is tested in tests/tests/engine/store.rs.
    let store = SledStore::open(&dir).unwrap();
    assert!(store.permission_warning().is_none());
    store.append(&run(RunId::new_v7(1, 1), 1, RunStatus::Running), &[event(0)]).unwrap();
    drop(store);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let mut files = 0;
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                stack.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                files += 1;
            }
        }
    }
    assert!(files >= 4, "wal, LOCK and sled's files were checked: {files}");
}

#[test]
fn a_state_directory_others_can_read_is_reported_and_one_they_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let warning = store.permission_warning().unwrap().to_owned();
    assert!(warning.contains("0755") && warning.contains(&format!("chmod 700 {}", dir.path().display())), "{warning}");
    drop(store);
    let other = tempfile::tempdir().unwrap();
    for mode in [0o777, 0o770, 0o702] {
        std::fs::set_permissions(other.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let err = SledStore::open(other.path()).unwrap_err();
        assert!(matches!(err, Error::InsecureDir { .. }), "{mode:o}: {err}");
        assert!(err.to_string().contains(&format!("{mode:04o}")), "{err}");
        assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0, "nothing written in a refused directory");
    }
}


fn seqs(store: &SledStore, id: RunId) -> Vec<u64> {
    store.events(id).unwrap().iter().map(|e| e.seq).collect()
}

#[test]
fn a_run_spanning_checkpoints_keeps_every_event_once_and_is_sealed_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let id = RunId::new_v7(3, 3);
    let other = RunId::new_v7(4, 4);
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.append(&run(id, 2, RunStatus::Running), &[event(0), event(1)]).unwrap();
        store.append(&run(other, 1, RunStatus::Running), &[event(0)]).unwrap();
        store.checkpoint_now().unwrap();
        assert_eq!(store.history.scan_prefix(id.as_bytes()).count(), 1, "an open run's events go into sled as one chunk");
        store.append(&run(id, 4, RunStatus::Running), &[event(2), event(3)]).unwrap();
        // Read across sled and the memtable.
        assert_eq!(seqs(&store, id), vec![0, 1, 2, 3]);
        store.checkpoint_now().unwrap();
        assert_eq!(store.history.scan_prefix(id.as_bytes()).count(), 2);
        store.append(&run(id, 5, RunStatus::Succeeded), &[event(4)]).unwrap();
        assert_eq!(store.open_runs().unwrap(), vec![other], "a terminal run leaves the open runs before any checkpoint");
        store.checkpoint_now().unwrap();
        assert_eq!(store.history.scan_prefix(id.as_bytes()).count(), 0, "a finished run is sealed whole");
        assert!(store.runs.get(id.as_bytes()).unwrap().is_none());
        assert!(store.archive.get(id.as_bytes()).unwrap().is_some());
        assert_eq!(seqs(&store, id), vec![0, 1, 2, 3, 4]);
        assert_eq!(store.load(id).unwrap().unwrap().status, RunStatus::Succeeded);
        // An ended run still takes events (a report field): the seal is made again with it.
        store.append(&run(id, 6, RunStatus::Succeeded), &[event(5)]).unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(seqs(&store, id), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(store.load(id).unwrap().unwrap().next_seq, 6);
    assert_eq!(seqs(&store, other), vec![0]);
    assert_eq!(store.run_ids().unwrap(), vec![id, other]);
    assert_eq!(store.open_runs().unwrap(), vec![other]);
    let statuses: Vec<RunStatus> = store.summaries().unwrap().into_iter().map(|s| s.unwrap().status).collect();
    assert_eq!(statuses, vec![RunStatus::Succeeded, RunStatus::Running]);
}

#[test]
fn a_store_of_layout_1_is_migrated_at_open_and_keeps_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let id = RunId::new_v7(6, 6);
    {
        // What a dr of layout 1 left: one value per event in `events`, plain snapshots, no `layout`.
        std::fs::create_dir_all(dir.path()).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let db = sled::Config::new().path(dir.path().join("sled")).segment_size(1 << 20).open().unwrap();
        db.open_tree("meta").unwrap().insert("format", &[FORMAT_VERSION]).unwrap();
        let events = db.open_tree("events").unwrap();
        for seq in 0..3 {
            events.insert(event_key(id, seq), encode(&event(seq))).unwrap();
        }
        let record = run(id, 3, RunStatus::Succeeded);
        db.open_tree("runs").unwrap().insert(id.as_bytes(), encode(&record)).unwrap();
        db.open_tree("summaries").unwrap().insert(id.as_bytes(), encode(&record.summary())).unwrap();
        db.open_tree("heads").unwrap().insert(id.as_bytes(), &3u64.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
    {
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(seqs(&store, id), vec![0, 1, 2]);
        assert_eq!(store.load(id).unwrap().unwrap().next_seq, 3);
        assert!(!store.db.tree_names().iter().any(|n| n.as_ref() == b"events"), "the old tree is dropped");
        store.append(&run(id, 4, RunStatus::Succeeded), &[event(3)]).unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(seqs(&store, id), vec![0, 1, 2, 3]);
    let meta = store.db.open_tree("meta").unwrap();
    assert_eq!(meta.get("layout").unwrap().unwrap().as_ref(), [LAYOUT]);
}

#[test]
fn gc_removes_old_finished_histories_keeps_summaries_and_says_so_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let old = RunId::new_v7(7, 7);
    let recent = RunId::new_v7(8, 8);
    let open = RunId::new_v7(9, 9);
    let finished = |id, at| RunRecord { finished_at: Some(at), ..run(id, 2, RunStatus::Succeeded) };
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.append(&finished(old, 10_000), &[event(0), event(1)]).unwrap();
        store.append(&finished(recent, 90_000), &[event(0), event(1)]).unwrap();
        store.append(&RunRecord { started_at: 0, ..run(open, 1, RunStatus::Paused) }, &[event(0)]).unwrap();
        store.record_duration("synthetic", "step-1", 5).unwrap();
        // A dry run chooses and changes nothing.
        let chosen: Vec<RunId> = store.gc(50_000, 100_000, true).unwrap().iter().map(|s| s.id).collect();
        assert_eq!(chosen, vec![old]);
        assert_eq!(seqs(&store, old), vec![0, 1]);
        let chosen: Vec<RunId> = store.gc(50_000, 100_000, false).unwrap().iter().map(|s| s.id).collect();
        assert_eq!(chosen, vec![old]);
        assert!(store.gc(50_000, 100_000, false).unwrap().is_empty(), "a collected run is not chosen again");
    }
    let store = SledStore::open(dir.path()).unwrap();
    let err = store.load(old).unwrap_err();
    assert!(matches!(err, Error::Collected { at: 100_000, .. }), "{err}");
    assert!(err.to_string().contains("dr gc") && err.to_string().contains("1970-01-01 00:01 UTC"), "{err}");
    assert!(matches!(store.events(old).unwrap_err(), Error::Collected { .. }));
    assert!(store.archive.get(old.as_bytes()).unwrap().is_none());
    // The summary, the others and the statistics stay.
    let ids: Vec<RunId> = store.summaries().unwrap().into_iter().map(|s| s.unwrap().id).collect();
    assert_eq!(ids, vec![old, recent, open]);
    assert_eq!(seqs(&store, recent), vec![0, 1]);
    assert_eq!(seqs(&store, open), vec![0]);
    assert_eq!(store.durations("synthetic", "step-1").unwrap(), vec![5]);
}

#[test]
fn appends_after_a_replay_continue_the_same_log_and_a_second_crash_replays_both() {
    let first = tempfile::tempdir().unwrap();
    let id = RunId::new_v7(11, 11);
    let wal_bytes = {
        let store = SledStore::open(first.path()).unwrap();
        store.append(&run(id, 2, RunStatus::Running), &[event(0), event(1)]).unwrap();
        std::fs::read(first.path().join("wal")).unwrap()
    };
    // Crash 1: a store with that log only. Replayed, then one more append.
    let second = tempfile::tempdir().unwrap();
    drop(SledStore::open(second.path()).unwrap());
    std::fs::write(second.path().join("wal"), &wal_bytes).unwrap();
    let after_more = {
        let store = SledStore::open(second.path()).unwrap();
        store.append(&run(id, 3, RunStatus::Succeeded), &[event(2)]).unwrap();
        std::fs::read(second.path().join("wal")).unwrap()
    };
    assert_eq!({ std::fs::write(first.path().join("copy"), &after_more).unwrap(); crate::wal::scan(&first.path().join("copy")).unwrap().records.len() }, 2, "the new record follows the replayed one");
    // Crash 2, before any checkpoint: both records come back.
    let third = tempfile::tempdir().unwrap();
    drop(SledStore::open(third.path()).unwrap());
    std::fs::write(third.path().join("wal"), &after_more).unwrap();
    let store = SledStore::open(third.path()).unwrap();
    assert_eq!(seqs(&store, id), vec![0, 1, 2]);
    assert_eq!(store.load(id).unwrap().unwrap().status, RunStatus::Succeeded);
}
