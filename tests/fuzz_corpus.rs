//! Replays the fuzz corpora (`fuzz/corpus/<target>/`: the seeds, what the fuzzer kept,
//! and every input that once crashed a target) through the same functions the fuzz
//! targets call, so a parser bug the fuzzer found stays fixed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn every_fuzz_corpus_replays_without_a_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, target) in keygate::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(
            inputs.len() >= 5,
            "{name}: a corpus of {} inputs",
            inputs.len()
        );
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            let replay = std::panic::catch_unwind(|| target(&data));
            assert!(replay.is_ok(), "{name}: {} fails", input.display());
        }
        // Every target has its fuzz target file, and the other way round.
        let shim = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        assert!(shim.exists(), "no fuzz target for {name}");
    }
    let shims = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets"))
        .unwrap()
        .count();
    assert_eq!(shims, keygate::fuzzing::TARGETS.len());
}
