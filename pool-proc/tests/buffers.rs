//! Large `Buffer`s through shared memory: what the conformance scenario (`buffers_round_trip`)
//! does not reach. Concurrent senders sharing the pool's regions, buffers inside `map` chunks,
//! a worker that cannot export its result, a worker that dies holding a lent region,
//! descriptors that stay flat once regions are warm, and byte strings that the codec places in
//! regions directly.
//!
//! Its own test binary, so the descriptor counts see no other test's pools.

mod common;

use std::fs::File;
use std::sync::Mutex;
use std::time::Duration;

use cf_pool_proc::{Buffer, CodecStage, Executor, MapOptions, ProcessPoolExecutor, TaskError};
use serde_bytes::ByteBuf;

const LIMIT: Duration = Duration::from_secs(60);

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 ^ seed.wrapping_mul(0x9e37_79b9)).wrapping_mul(7) as u8)
        .collect()
}

/// Returns the checksum of the input and a transformed copy of it.
fn digest(b: Buffer) -> (u64, Buffer) {
    let sum = b.iter().map(|&x| u64::from(x)).sum();
    (
        sum,
        Buffer::from(b.iter().map(|x| x ^ 0x5a).collect::<Vec<u8>>()),
    )
}

fn echo(b: Buffer) -> Buffer {
    b
}

#[test]
fn concurrent_senders_get_their_own_bytes_back() {
    let _guard = common::exclusive();
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let pool = &pool;
            s.spawn(move || {
                for i in 0..25u64 {
                    let seed = t * 1000 + i;
                    let len = 64 * 1024 + ((seed * 7919) % (2 << 20)) as usize;
                    let bytes = pattern(seed, len);
                    let (sum, back) = pool
                        .submit(digest, Buffer::from(bytes.clone()))
                        .unwrap()
                        .result_timeout(LIMIT)
                        .unwrap()
                        .clone();
                    assert_eq!(sum, bytes.iter().map(|&x| u64::from(x)).sum::<u64>());
                    assert!(back.iter().zip(&bytes).all(|(b, x)| *b == x ^ 0x5a));
                    assert_eq!(back.len(), len, "seed {seed}");
                }
            });
        }
    });
}

#[test]
fn buffers_inside_map_chunks() {
    let _guard = common::exclusive();
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let inputs: Vec<Buffer> = (0..40u64)
        .map(|i| Buffer::from(pattern(i, 70_000 + i as usize * 1000)))
        .collect();
    let out: Vec<Buffer> = pool
        .map(
            echo,
            inputs.clone(),
            MapOptions::new().chunksize(8).timeout(LIMIT),
        )
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(out, inputs);
}

/// Descriptors held by the worker's stash (see [`exhaust_descriptors`]).
static STASH: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// Opens files until the process runs out of descriptors, then returns a buffer large enough
/// to need a shared-memory region, which the worker then cannot create.
fn exhaust_descriptors(len: usize) -> Buffer {
    let mut stash = STASH.lock().unwrap();
    while let Ok(f) = File::open("/dev/null") {
        stash.push(f);
    }
    Buffer::from(vec![1u8; len])
}

fn release_descriptors(_: ()) -> usize {
    let mut stash = STASH.lock().unwrap();
    let n = stash.len();
    stash.clear();
    n
}

#[test]
fn a_result_that_cannot_reach_shared_memory_fails_alone_with_the_reason() {
    let _guard = common::exclusive();
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let err = pool
        .submit(exhaust_descriptors, 1 << 20)
        .unwrap()
        .result_timeout(LIMIT)
        .unwrap_err();
    match &err {
        TaskError::Codec { stage, message } => {
            assert_eq!(*stage, CodecStage::SerializeResult);
            assert!(message.contains("shared memory"), "{message}");
        }
        other => panic!("expected a Codec error, got {other:?}"),
    }
    // The same worker goes on: it frees its descriptors, then moves buffers again.
    let freed = *pool
        .submit(release_descriptors, ())
        .unwrap()
        .result_timeout(LIMIT)
        .unwrap();
    assert!(freed > 0);
    let b = Buffer::from(pattern(3, 1 << 20));
    let back = pool.submit(echo, b.clone()).unwrap();
    assert_eq!(back.result_timeout(LIMIT).unwrap(), &b);
}

fn hold_then_abort(b: Buffer) -> usize {
    if b[0] == 0xff {
        std::process::abort();
    }
    b.len()
}

#[test]
fn a_worker_dying_with_a_lent_region_costs_nothing_else() {
    let _guard = common::exclusive();
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let mut doomed = vec![0xffu8; 1 << 20];
    doomed[1] = 0;
    let f = pool.submit(hold_then_abort, Buffer::from(doomed)).unwrap();
    assert!(
        matches!(
            f.exception_timeout(LIMIT),
            Ok(Some(TaskError::WorkerDied { .. }))
        ),
        "{:?}",
        f.exception_timeout(LIMIT)
    );
    for i in 0..5u64 {
        let b = Buffer::from(pattern(i, 1 << 20));
        let n = pool.submit(hold_then_abort, b).unwrap();
        assert_eq!(*n.result_timeout(LIMIT).unwrap(), 1 << 20);
    }
}

/// Regions are reused: after 20 round trips, 200 more add at most one descriptor, where a
/// region per task would add 200. Not exactly none: once, on a machine loaded by a benchmark,
/// the count came out one higher than after the warm-up (the cause was not found; the message
/// lists what appeared).
fn assert_regions_reused(round_trips: impl Fn(u64)) {
    round_trips(20);
    let warm = common::open_fds();
    round_trips(200);
    let after = common::open_fds();
    let added: Vec<_> = after
        .iter()
        .filter(|(fd, _)| !warm.contains_key(fd))
        .collect();
    assert!(
        after.len() <= warm.len() + 1,
        "regions are reused, not created per task: {} descriptors after the warm-up, {} after \
         200 more round trips; new: {added:?}",
        warm.len(),
        after.len()
    );
}

/// One worker, so that no second worker's socket and regions count.
#[test]
fn descriptors_stay_flat_once_regions_are_warm() {
    let _guard = common::exclusive();
    let snapshot = common::Snapshot::take();
    {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(1)
            .build()
            .unwrap();
        let round_trips = |n: u64| {
            for i in 0..n {
                let b = Buffer::from(pattern(i, (1 << 20) + (i as usize % 3) * 4096));
                let back = pool.submit(echo, b.clone()).unwrap();
                assert_eq!(back.result_timeout(LIMIT).unwrap(), &b);
            }
        };
        assert_regions_reused(round_trips);
    }
    // Everything, regions included, goes with the pool.
    snapshot.assert_restored();
}

/// Checks its input against the pattern its first 8 bytes name, then answers with a new
/// pattern of another length: fresh bytes both ways.
fn verify_and_answer(b: Buffer) -> Result<Buffer, String> {
    let seed = u64::from_le_bytes(b[..8].try_into().unwrap());
    if b[8..] != pattern(seed, b.len())[8..] {
        return Err(format!("task {seed}: its argument arrived altered"));
    }
    std::thread::sleep(Duration::from_micros(seed % 2000));
    Ok(Buffer::from(pattern(
        !seed,
        64 * 1024 + (seed as usize % 7) * 50_000,
    )))
}

/// Workers SIGKILLed at random while buffers flow both ways: every future is the right bytes or
/// `WorkerDied`, regions lent to the dead are forgotten without harm, nothing hangs or leaks
/// (`zz_no_leaks` checks the descriptors at the end).
#[test]
fn buffers_survive_workers_killed_at_random() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let _guard = common::exclusive();
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let stop = AtomicBool::new(false);
    let mut kills = 0;
    let (values, deaths) = std::thread::scope(|s| {
        // Stops the killer however this closure ends: a panic here must fail the test, not
        // leave the scope waiting for the killer for ever.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let stopper = StopOnDrop(&stop);
        let killer = s.spawn(|| {
            let mut rng = common::Rng::from_env("CF_CHAOS_SEED");
            let mut killed = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(30));
                let fresh: Vec<u32> = pool
                    .worker_pids()
                    .into_iter()
                    .filter(|p| !killed.contains(p))
                    .collect();
                if !fresh.is_empty() {
                    let victim = fresh[rng.below(fresh.len() as u64) as usize];
                    if common::sigkill_child(victim) {
                        killed.push(victim);
                    }
                }
            }
            killed.len()
        });
        let futures: Vec<_> = (0..300u64)
            .map(|seed| {
                let mut bytes = pattern(seed, 64 * 1024 + (seed as usize % 5) * 100_000);
                bytes[..8].copy_from_slice(&seed.to_le_bytes());
                pool.submit(verify_and_answer, Buffer::from(bytes)).unwrap()
            })
            .collect();
        let (mut values, mut deaths) = (0, 0);
        for (seed, f) in (0..300u64).zip(&futures) {
            match f.result_timeout(LIMIT) {
                Ok(Ok(b)) => {
                    assert_eq!(**b, *pattern(!seed, b.len()), "task {seed}: wrong bytes");
                    values += 1;
                }
                Ok(Err(e)) => panic!("{e}"),
                Err(TaskError::WorkerDied { .. }) => deaths += 1,
                Err(e) => panic!("task {seed}: {e:?}"),
            }
        }
        drop(stopper);
        kills = killer.join().unwrap();
        (values, deaths)
    });
    assert_eq!(values + deaths, 300);
    assert!(kills > 0 || deaths == 0, "deaths without kills");
    // The pool goes on, with regions that work.
    let b = Buffer::from(pattern(9, 1 << 20));
    assert_eq!(
        pool.submit(echo, b.clone())
            .unwrap()
            .result_timeout(LIMIT)
            .unwrap(),
        &b
    );
    eprintln!("{values} values, {deaths} deaths, {kills} kills");
}

/// [`digest`] for a byte string, which the codec places in shared memory itself.
fn digest_bytes(b: ByteBuf) -> (u64, ByteBuf) {
    let sum = b.iter().map(|&x| u64::from(x)).sum();
    (
        sum,
        ByteBuf::from(b.iter().map(|x| x ^ 0x5a).collect::<Vec<u8>>()),
    )
}

fn echo_bytes(b: ByteBuf) -> ByteBuf {
    b
}

#[test]
fn byte_strings_placed_in_shared_memory_come_back_intact_and_reuse_regions() {
    let _guard = common::exclusive();
    let snapshot = common::Snapshot::take();
    {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(2)
            .build()
            .unwrap();
        // Concurrent submitters and two workers: an argument placed in a region of the worker
        // that was idle is often sent to the other one after all (and copied there).
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let pool = &pool;
                s.spawn(move || {
                    for i in 0..25u64 {
                        let seed = t * 1000 + i;
                        let len = 64 * 1024 + ((seed * 7919) % (2 << 20)) as usize;
                        let bytes = pattern(seed, len);
                        let (sum, back) = pool
                            .submit(digest_bytes, ByteBuf::from(bytes.clone()))
                            .unwrap()
                            .result_timeout(LIMIT)
                            .unwrap()
                            .clone();
                        assert_eq!(sum, bytes.iter().map(|&x| u64::from(x)).sum::<u64>());
                        assert_eq!(back.len(), len, "seed {seed}");
                        assert!(back.iter().zip(&bytes).all(|(b, x)| *b == x ^ 0x5a));
                    }
                });
            }
        });
        // One submitter: placed regions go back to their worker and are reused.
        let round_trips = |n: u64| {
            for i in 0..n {
                let b = ByteBuf::from(pattern(i, (1 << 20) + (i as usize % 3) * 4096));
                let back = pool.submit(echo_bytes, b.clone()).unwrap();
                assert_eq!(back.result_timeout(LIMIT).unwrap(), &b);
            }
        };
        assert_regions_reused(round_trips);
    }
    snapshot.assert_restored();
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
