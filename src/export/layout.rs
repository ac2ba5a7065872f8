//! Where a job's bundles and state objects live in the export bucket.

use super::*;

/// Where a job's bundles and state objects live in the export bucket.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dest: S3Location,
    pub job: String,
    /// Volumes are sealed with age (`.zip.age`).
    pub sealed: bool,
}

impl Layout {
    pub fn bundle_prefix(&self, seq: u64) -> String {
        self.dest.key(&format!("{}/{seq:08}/", self.job))
    }
    pub fn volume_name(&self, seq: u64, index: u32) -> String {
        let suffix = if self.sealed {
            crate::format::seal::SUFFIX
        } else {
            ""
        };
        format!("{}-{seq:08}-{index:04}.zip{suffix}", self.job)
    }
    pub fn state_prefix(&self, seq: u64) -> String {
        self.dest.key(&format!("_state/{}/{seq:08}/", self.job))
    }
    /// Where the plaintext copies of a bundle's manifests go (its review report's input).
    pub fn manifests_prefix(&self, seq: u64) -> String {
        format!("{}manifests/", self.state_prefix(seq))
    }
    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.dest.bucket)
    }
    /// The inventory and the plan a run writes carry its name: a run that lost its lease
    /// while planning cannot overwrite the new holder's.
    pub(super) fn inventory_key(&self, seq: u64, owner: &str) -> String {
        format!("{}inventory-{owner}.jsonl.gz", self.state_prefix(seq))
    }
    /// The inventory of what the bundle shipped (the listing's, settled by the commit).
    pub(super) fn settled_inventory_key(&self, seq: u64, owner: &str) -> String {
        format!(
            "{}inventory-{owner}.shipped.jsonl.gz",
            self.state_prefix(seq)
        )
    }
    pub(super) fn plan_key(&self, seq: u64, owner: &str) -> String {
        format!("{}plan-{owner}.json", self.state_prefix(seq))
    }
    /// Every put candidate as the listing found it (renames not yet paired).
    pub(super) fn candidates_key(&self, seq: u64, owner: &str) -> String {
        format!("{}plan-{owner}.candidates.jsonl.gz", self.state_prefix(seq))
    }
    /// The plan's puts once renames are paired.
    pub(super) fn puts_key(&self, seq: u64, owner: &str) -> String {
        format!("{}plan-{owner}.puts.jsonl.gz", self.state_prefix(seq))
    }
    /// Where checkpoints written before plans carried their run's name kept the plan.
    /// Shard `k`'s puts (a contiguous key range of the plan's).
    pub(super) fn shard_puts_key(&self, seq: u64, owner: &str, k: u32) -> String {
        format!(
            "{}plan-{owner}.shard-{k:04}.jsonl.gz",
            self.state_prefix(seq)
        )
    }

    pub(super) fn legacy_plan_key(&self, seq: u64) -> String {
        format!("{}plan.json", self.state_prefix(seq))
    }
    pub(super) fn checkpoint_key(&self, seq: u64) -> String {
        format!("{}checkpoint.json", self.state_prefix(seq))
    }
    /// Shard `k`'s progress: written only by the worker shipping that shard.
    pub(super) fn shard_doc_key(&self, seq: u64, k: usize) -> String {
        format!("{}shard-{k:04}.json", self.state_prefix(seq))
    }
    /// The list of shards the plan step hands to the Distributed Map (`[{"shard": 0}, …]`).
    pub fn shard_list_key(&self, seq: u64) -> String {
        format!("{}shards.json", self.state_prefix(seq))
    }
}
