//! Files for the integration tests: a data directory copied whole (to
//! check a killed or damaged store on a copy, or to start several cases
//! from one store).

use std::path::Path;

/// Copies `from` into `to` (created), folders included.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
