//! Free-space maps and first-fit allocation over UDL entries.
//!
//! Free space is never stored: it is the entry's page range minus the VTOC tables placed on
//! it, so it cannot drift from what is allocated. These functions are pure; the device
//! feeds them its UDL and VTOC.

use qm_common::device::{FreeRun, UdlEntry, VtocEntry};

/// The free runs of `entry`, in address order, given every VTOC table.
pub fn free_runs(entry: &UdlEntry, vtoc: &[VtocEntry]) -> Vec<FreeRun> {
    let mut used: Vec<(u64, u64)> = vtoc
        .iter()
        .filter(|t| t.device == entry.index)
        .map(|t| (t.offset, t.offset + t.pages))
        .collect();
    used.sort_unstable();
    let mut free = Vec::new();
    let mut cursor = entry.start;
    for (start, end) in used {
        let start = start.max(entry.start);
        if start > cursor {
            free.push(FreeRun { addr: cursor, size: start - cursor });
        }
        cursor = cursor.max(end);
    }
    if entry.end() > cursor {
        free.push(FreeRun { addr: cursor, size: entry.end() - cursor });
    }
    free
}

/// The first run of `pages` contiguous free pages among `entries`, in the order given:
/// the entry's index and the run's first page.
pub fn first_fit<'a>(
    entries: impl IntoIterator<Item = &'a UdlEntry>,
    vtoc: &[VtocEntry],
    pages: u64,
) -> Option<(u8, u64)> {
    entries.into_iter().find_map(|entry| {
        free_runs(entry, vtoc)
            .into_iter()
            .find(|run| run.size >= pages)
            .map(|run| (entry.index, run.addr))
    })
}

/// The largest free run among `entries`, for error messages.
pub fn largest_run<'a>(entries: impl IntoIterator<Item = &'a UdlEntry>, vtoc: &[VtocEntry]) -> u64 {
    entries
        .into_iter()
        .flat_map(|entry| free_runs(entry, vtoc))
        .map(|run| run.size)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(index: u8, start: u64, size: u64) -> UdlEntry {
        UdlEntry { index, name: format!("/dev{index}"), start, size }
    }

    fn table(index: u8, device: u8, offset: u64, pages: u64) -> VtocEntry {
        VtocEntry { index, name: format!("t{index}"), extent: Some(0), device, offset, pages }
    }

    #[test]
    fn runs_around_tables() {
        let e = entry(0, 0, 100);
        let vtoc = vec![table(0, 0, 0, 7), table(1, 0, 7, 28), table(2, 0, 50, 10)];
        assert_eq!(
            free_runs(&e, &vtoc),
            vec![FreeRun { addr: 35, size: 15 }, FreeRun { addr: 60, size: 40 }]
        );
        assert_eq!(first_fit([&e], &vtoc, 16), Some((0, 60)));
        assert_eq!(first_fit([&e], &vtoc, 15), Some((0, 35)));
        assert_eq!(first_fit([&e], &vtoc, 41), None);
        assert_eq!(largest_run([&e], &vtoc), 40);
    }

    /// One operation of a random allocation history.
    #[derive(Debug, Clone)]
    enum Op {
        Alloc(u64),
        Free(usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![(1u64..40).prop_map(Op::Alloc), (0usize..20).prop_map(Op::Free)],
            0..60,
        )
    }

    proptest! {
        /// After any history of allocations and frees, the free map is exactly the pages no
        /// table holds, tables never overlap, and first fit takes the lowest fitting run.
        #[test]
        fn free_map_is_exact(ops in ops()) {
            let entries = [entry(0, 0, 120), entry(1, 200, 60)];
            let mut vtoc = vec![table(0, 0, 0, 7), table(1, 0, 7, 28)];
            let mut next = 2u8;
            for op in ops {
                match op {
                    Op::Alloc(pages) => {
                        if let Some((dev, addr)) = first_fit(&entries, &vtoc, pages) {
                            vtoc.push(table(next, dev, addr, pages));
                            next = next.wrapping_add(1);
                        }
                    }
                    Op::Free(i) => {
                        if vtoc.len() > 2 {
                            vtoc.remove(2 + i % (vtoc.len() - 2));
                        }
                    }
                }
                for e in &entries {
                    let mut used = vec![false; e.size as usize];
                    for t in vtoc.iter().filter(|t| t.device == e.index) {
                        for p in t.offset..t.offset + t.pages {
                            let slot = &mut used[(p - e.start) as usize];
                            prop_assert!(!*slot, "page {} allocated twice", p);
                            *slot = true;
                        }
                    }
                    let mut expected = Vec::new();
                    let mut p = 0;
                    while p < used.len() {
                        if used[p] { p += 1; continue; }
                        let start = p;
                        while p < used.len() && !used[p] { p += 1; }
                        expected.push(FreeRun { addr: e.start + start as u64, size: (p - start) as u64 });
                    }
                    prop_assert_eq!(free_runs(e, &vtoc), expected);
                }
            }
        }
    }
}
