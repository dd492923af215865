//! The guide's post-recovery checklist (復旧後チェックリスト) as data.
//!
//! Each item is either checked by `dr` — its evidence is the result of the
//! workflows' verification steps named here (nodes, pods, ArgoCD, ingress;
//! etcd's trial restore, members and health) — or confirmed by an operator,
//! recorded in the run's history (`dr report ID --confirm ITEM`, a
//! `check:ITEM` report field) with who and when. An item `dr` can check in
//! one workflow may need a person in another (a pod recovery restores no
//! data): without evidence it falls back to a confirmation.
//!
//! Confirmations are history events, not gates at the end of the run: the
//! run ends when the platform is back, so the RTO does not count the
//! paperwork.

/// How an item is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// By the success of any of these steps (its summary is the evidence);
    /// else by a confirmation.
    Steps(&'static [&'static str]),
    /// By an operator-filled report field (its text is the evidence); else
    /// by a confirmation.
    Field(&'static str),
    /// By a confirmation only.
    Confirm,
}

/// One item of the checklist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    /// What `--confirm` takes.
    pub id: &'static str,
    pub ja: &'static str,
    pub en: &'static str,
    pub check: Check,
}

/// The guide's eight items, in its order.
pub const ITEMS: [Item; 8] = [
    Item {
        id: "services",
        ja: "全サービス稼働確認",
        en: "All services running",
        check: Check::Steps(&["verify", "verify-nodes", "verify-apps", "verify-ingress", "verify-host", "health", "test-ready"]),
    },
    Item {
        id: "data",
        ja: "データ整合性確認",
        en: "Data integrity",
        check: Check::Steps(&["trial-restore", "verify-etcd", "verify-members", "verify-health"]),
    },
    Item { id: "backups", ja: "バックアップ再設定", en: "Backups set up again", check: Check::Confirm },
    Item { id: "alerts", ja: "監視アラート確認", en: "Monitoring alerts checked", check: Check::Confirm },
    Item { id: "logs", ja: "ログ収集・分析", en: "Logs collected and analysed", check: Check::Confirm },
    Item { id: "report", ja: "インシデントレポート作成", en: "Incident report written", check: Check::Field("cause") },
    Item { id: "improvements", ja: "改善点の特定", en: "Improvements identified", check: Check::Field("lessons") },
    Item { id: "drp", ja: "DRPの更新", en: "DR plan updated", check: Check::Confirm },
];

/// The item `id` names, if any.
pub fn item(id: &str) -> Option<&'static Item> {
    ITEMS.iter().find(|i| i.id == id)
}

/// The report field a confirmation of `id` is recorded as.
pub fn field_of(id: &str) -> String {
    format!("check:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_has_a_distinct_id_and_both_texts() {
        let mut ids: Vec<&str> = ITEMS.iter().map(|i| i.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ITEMS.len());
        assert!(ITEMS.iter().all(|i| !i.ja.is_empty() && !i.en.is_empty()));
        assert_eq!(item("data").map(|i| i.en), Some("Data integrity"));
        assert_eq!(item("nope"), None);
        assert_eq!(field_of("drp"), "check:drp");
    }
}
