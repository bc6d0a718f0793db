//! The JSON Schema of scenario files (`docs/scenario.schema.json`).

use super::RawFile;

/// The JSON Schema of scenario files, generated from the types the parser uses.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RawFile);
    serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n"
}
