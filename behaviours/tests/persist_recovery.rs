//! Recovery: torn tails, corruption, locking, segments.

mod persist_common;

use persist_common::*;
use ringvisor_behaviours::persist::{OpenError, Options, RECORD_HEADER_BYTES};
use ringvisor_runtime::backend_tests;

fn record_offsets(count: u64) -> Vec<u64> {
    let mut offsets = vec![0];
    for i in 1..=count {
        let last = *offsets.last().unwrap();
        offsets.push(last + (RECORD_HEADER_BYTES + payload(i).len()) as u64);
    }
    offsets
}

backend_tests! {
    fn empty_dir_is_created_and_recovers_nothing(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("fresh");
        let mut lp = new_loop(backend);
        let (store, recovered) = open(&mut lp, &dir, Options::default()).unwrap();
        assert!(dir.is_dir());
        assert_eq!(recovered.next_seq, 1);
        assert!(recovered.entries.is_empty() && recovered.snapshot.is_none());
        assert_eq!(store.next_seq(), 1);
        close(&mut lp, &store).unwrap();
    }

    fn entries_survive_reopen_in_order(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        let payloads: Vec<_> = (1..=10).map(payload).collect();
        assert_eq!(append_all(&mut lp, &store, &payloads), (1..=10).collect::<Vec<_>>());
        close(&mut lp, &store).unwrap();
        let (store, recovered) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        let expected: Vec<_> = (1..=10).map(|i| (i, payload(i))).collect();
        assert_eq!(recovered.entries, expected);
        assert_eq!(recovered.next_seq, 11);
        assert_eq!(recovered.torn_tail, None);
        assert_eq!(append_all(&mut lp, &store, &[payload(11)]), vec![11]);
    }

    fn torn_tail_is_cut_at_every_offset_of_the_last_record(backend) {
        let count = 4;
        let offsets = record_offsets(count);
        let (last_start, end) = (offsets[count as usize - 1], offsets[count as usize]);
        let mut lp = new_loop(backend);
        for cut in last_start..end {
            let tmp = tempfile::tempdir().unwrap();
            let (store, _) = open(&mut lp, tmp.path(), Options::default()).unwrap();
            let payloads: Vec<_> = (1..=count).map(payload).collect();
            append_all(&mut lp, &store, &payloads);
            close(&mut lp, &store).unwrap();
            let segment = only_segment(tmp.path());
            let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
            file.set_len(cut).unwrap();
            drop(file);

            let (store, recovered) = open(&mut lp, tmp.path(), Options::default()).unwrap();
            let intact: Vec<_> = (1..count).map(|i| (i, payload(i))).collect();
            assert_eq!(recovered.entries, intact, "cut at {cut}");
            assert_eq!(recovered.next_seq, count);
            let torn = recovered.torn_tail.as_ref().map(|t| (t.offset, t.bytes));
            let expected_torn = (cut > last_start).then_some((last_start, cut - last_start));
            assert_eq!(torn, expected_torn, "cut at {cut}");
            // The next append lands where the torn record began.
            let fresh = b"after the cut".to_vec();
            assert_eq!(append_all(&mut lp, &store, std::slice::from_ref(&fresh)), vec![count]);
            close(&mut lp, &store).unwrap();
            let bytes = std::fs::read(&segment).unwrap();
            let new_at = last_start as usize;
            assert_eq!(&bytes[new_at + RECORD_HEADER_BYTES..][..fresh.len()], &fresh[..]);

            let (store, recovered) = open(&mut lp, tmp.path(), Options::default()).unwrap();
            assert_eq!(recovered.entries.len() as u64, count);
            assert_eq!(recovered.entries.last().unwrap(), &(count, fresh));
            assert_eq!(recovered.torn_tail, None, "the cut tail was zeroed");
            close(&mut lp, &store).unwrap();
        }
    }

    fn flipped_byte_in_a_middle_record_is_corruption_with_its_offset(backend) {
        let count = 6;
        let offsets = record_offsets(count);
        let mut lp = new_loop(backend);
        // Flip in the length field, the CRC, the seq, and the payload of record 3.
        let victim = 2usize;
        for within in [0usize, 5, 9, RECORD_HEADER_BYTES] {
            let tmp = tempfile::tempdir().unwrap();
            let (store, _) = open(&mut lp, tmp.path(), Options::default()).unwrap();
            append_all(&mut lp, &store, &(1..=count).map(payload).collect::<Vec<_>>());
            close(&mut lp, &store).unwrap();
            let segment = only_segment(tmp.path());
            let mut bytes = std::fs::read(&segment).unwrap();
            bytes[offsets[victim] as usize + within] ^= 0x10;
            std::fs::write(&segment, &bytes).unwrap();

            match open(&mut lp, tmp.path(), Options::default()) {
                Err(OpenError::Corrupt { file, offset, reason }) => {
                    assert_eq!(file, segment);
                    assert_eq!(offset, offsets[victim], "flip at +{within}: {reason}");
                    let message = OpenError::Corrupt { file, offset, reason }.to_string();
                    assert!(message.contains(&format!("offset {}", offsets[victim])), "{message}");
                }
                other => panic!("flip at +{within}: expected corruption, got {other:?}"),
            }
            // Refusing did not "repair" anything: the file is untouched.
            assert_eq!(std::fs::read(&segment).unwrap(), bytes);
        }
    }

    fn second_open_of_a_locked_dir_is_refused_naming_it(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        let error = open(&mut lp, tmp.path(), Options::default()).unwrap_err();
        assert!(matches!(&error, OpenError::Locked { dir } if dir == tmp.path()), "{error:?}");
        assert!(error.to_string().contains(&tmp.path().display().to_string()));
        close(&mut lp, &store).unwrap();
        // Closing released the lock.
        let (store, _) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        drop(store);
        // So does dropping an idle store.
        let (store, _) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        close(&mut lp, &store).unwrap();
    }

    fn damaged_snapshot_is_corruption(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        append_all(&mut lp, &store, &[payload(1)]);
        snapshot(&mut lp, &store, b"state".to_vec(), 1).unwrap();
        close(&mut lp, &store).unwrap();
        let path = tmp.path().join(ringvisor_behaviours::persist::SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let error = open(&mut lp, tmp.path(), Options::default()).unwrap_err();
        assert!(matches!(&error, OpenError::Corrupt { file, .. } if *file == path), "{error:?}");
    }

    fn small_segment_limit_rolls_segments_and_recovers_across_them(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let options = Options {
            record_bytes_max: 64,
            batch_bytes_max: 256,
            pending_bytes_max: 4096,
            segment_bytes_max: 256,
            ..Options::default()
        };
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), options.clone()).unwrap();
        for chunk in (1..=60u64).collect::<Vec<_>>().chunks(5) {
            append_all(&mut lp, &store, &chunk.iter().map(|&i| payload(i)).collect::<Vec<_>>());
        }
        close(&mut lp, &store).unwrap();
        let segments = segments(tmp.path());
        assert!(segments.len() > 3, "segments: {segments:?}");
        for segment in &segments {
            assert!(std::fs::metadata(segment).unwrap().len() <= 256);
        }
        assert_eq!(store.stats().segments_created, segments.len() as u64);
        let (_store, recovered) = open(&mut lp, tmp.path(), options).unwrap();
        let expected: Vec<_> = (1..=60).map(|i| (i, payload(i))).collect();
        assert_eq!(recovered.entries, expected);
    }

    fn missing_middle_segment_is_a_gap(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let options = Options {
            record_bytes_max: 64,
            batch_bytes_max: 128,
            pending_bytes_max: 4096,
            segment_bytes_max: 128,
            ..Options::default()
        };
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), options.clone()).unwrap();
        for i in 1..=20 {
            append_all(&mut lp, &store, &[payload(i)]);
        }
        close(&mut lp, &store).unwrap();
        let segments = segments(tmp.path());
        assert!(segments.len() >= 3);
        std::fs::remove_file(&segments[1]).unwrap();
        let error = open(&mut lp, tmp.path(), options).unwrap_err();
        assert!(
            matches!(&error, OpenError::Corrupt { file, reason, .. } if *file == segments[2] && reason.contains("gap")),
            "{error:?}"
        );
    }
}
