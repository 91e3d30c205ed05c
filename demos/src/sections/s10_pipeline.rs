//! Section 10, "Practical: Real-World Pattern -- Parallel Data Processing": 15 records, every
//! fifth corrupted; `submit` + `as_completed`, successes and failures collected apart.

use std::collections::HashMap;
use std::io::Write;

use cf_executor_api::{as_completed, Future, SubmitError};
use serde::{Deserialize, Serialize};

use concurrent_futures::{Backend, Executor, Pool};

use crate::DemoResult;

/// A processed record (Python's `{"id": .., "status": "processed", "value": ..}`; being an
/// `Ok` is its status).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: u32,
    value: u32,
}

/// Simulates processing a data record. Some records fail, with an error value.
fn process_record(record_id: u32) -> Result<Record, String> {
    if record_id % 5 == 0 {
        return Err(format!("Record {record_id} is corrupted"));
    }
    Ok(Record {
        id: record_id,
        value: record_id * 10,
    })
}

pub(crate) fn run(backend: Backend, out: &mut dyn Write) -> DemoResult {
    let record_ids: Vec<u32> = (1..16).collect();
    let mut successes: Vec<Record> = Vec::new();
    let mut failures: Vec<(u32, String)> = Vec::new();

    {
        let executor = Pool::with_workers(backend, 3)?;
        // Submit all tasks. Futures hash by identity, so they key a map as in Python. (Clippy
        // sees the lock inside and warns of a mutable key; identity never changes.)
        #[allow(clippy::mutable_key_type)]
        let future_to_id: HashMap<Future<Result<Record, String>>, u32> = record_ids
            .iter()
            .map(|&id| Ok((executor.submit(process_record, id)?, id)))
            .collect::<Result<_, SubmitError>>()?;

        // Process results as they complete.
        for future in as_completed(future_to_id.keys(), None) {
            let future = future?;
            let record_id = future_to_id[&future];
            match future.result() {
                Ok(Ok(record)) => successes.push(record.clone()),
                Ok(Err(error)) => failures.push((record_id, error.clone())),
                // The executor's own failure (a panic, a dead worker) is a failure too.
                Err(error) => failures.push((record_id, error.to_string())),
            }
        }
    }

    successes.sort_by_key(|r| r.id);
    writeln!(out, "Processed {} records successfully:", successes.len())?;
    for s in &successes {
        writeln!(out, "  Record {}: value={}", s.id, s.value)?;
    }

    failures.sort();
    writeln!(out)?;
    writeln!(out, "{} records failed:", failures.len())?;
    for (record_id, error) in &failures {
        writeln!(out, "  Record {record_id}: {error}")?;
    }
    Ok(())
}
