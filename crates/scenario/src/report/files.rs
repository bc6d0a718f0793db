//! A report on disk: `report.json`, `report.html` and the evidence files.

use std::path::Path;

use super::Report;

impl Report {
    /// Writes `report.json`, `report.html`, on failure `<node>.info.json` and `<node>.log`, and
    /// with the profile's `crash_patterns` each node's whole log as `logs/<node>.log`, into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(self).expect("report serializes"),
        )?;
        std::fs::write(dir.join("report.html"), crate::report::html::render(self))?;
        for e in &self.evidence {
            std::fs::write(
                dir.join(format!("{}.info.json", e.node)),
                serde_json::to_string_pretty(&e.info).unwrap(),
            )?;
            std::fs::write(dir.join(format!("{}.log", e.node)), &e.log_tail)?;
        }
        if !self.node_logs.is_empty() {
            std::fs::create_dir_all(dir.join("logs"))?;
            for (node, log) in &self.node_logs {
                std::fs::write(dir.join("logs").join(format!("{node}.log")), log)?;
            }
        }
        Ok(())
    }
}
