//! The store file: strict loading, the lock, atomic writes.

use std::collections::BTreeSet;

use preview_core::id::PreviewId;
use preview_core::ports::PortPools;
use preview_orchestrator::Error;
use preview_orchestrator::store::{SCHEMA_VERSION, Store, StoreFile};

fn open(path: &std::path::Path) -> Result<Store, Error> {
    Store::open(path, PortPools::default())
}

#[tokio::test]
async fn an_absent_file_is_an_empty_store_and_writes_are_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deployments.json");
    let store = open(&path).unwrap();
    assert!(store.list().is_empty());
    let id = PreviewId::parse("a-b-pr-1").unwrap();
    // Ports without a record are not valid in the file; use a record-free write path instead.
    let ((), t) = store.mutate(|s| {
        let _ = s
            .slugs
            .slug_for(&preview_core::id::RepoFullName::parse("a/b").unwrap());
        ((), true)
    });
    t.wait().await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schemaVersion"], SCHEMA_VERSION);
    assert!(v["deployments"].as_object().unwrap().is_empty());
    assert!(v["portAllocations"].as_object().unwrap().is_empty());
    assert_eq!(v["repoSlugs"]["a/b"], "a-b");
    assert!(store.ports(&id).is_none());
}

#[test]
fn a_second_orchestrator_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deployments.json");
    let first = open(&path).unwrap();
    match open(&path) {
        Err(Error::StoreLocked(p)) => assert!(p.ends_with("deployments.json.lock")),
        other => panic!("expected StoreLocked, got {other:?}"),
    }
    drop(first);
    open(&path).expect("the lock is released with the store");
}

#[test]
fn bad_files_stop_startup_and_stay_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deployments.json");
    let cases: Vec<(&str, &str)> = vec![
        ("", "not valid JSON"),
        ("{\"deployments\":{", "not valid JSON"),
        ("[]", "not valid JSON"),
        (
            "{\"deployments\":{},\"portAllocations\":{}}",
            "no schemaVersion",
        ),
        (
            "{\"schemaVersion\":2,\"deployments\":{},\"portAllocations\":{}}",
            "schemaVersion 2",
        ),
        (
            "{\"schemaVersion\":\"1\",\"deployments\":{},\"portAllocations\":{}}",
            "schemaVersion \"1\"",
        ),
        (
            "{\"schemaVersion\":1,\"deployments\":{},\"portAllocations\":{},\"extra\":1}",
            "unknown field",
        ),
        (
            "{\"schemaVersion\":1,\"deployments\":{},\"portAllocations\":{\"a-pr-1\":{\"app\":8000}}}",
            "has no deployment",
        ),
        (
            "{\"schemaVersion\":1,\"deployments\":{\"../x\":{}},\"portAllocations\":{}}",
            "preview id",
        ),
    ];
    for (content, expected) in cases {
        std::fs::write(&path, content).unwrap();
        let err = open(&path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(expected), "{content:?}: {msg}");
        assert!(msg.contains("left untouched"), "{msg}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            content,
            "file was modified"
        );
    }
}

#[tokio::test]
async fn ports_are_unique_and_released() {
    let dir = tempfile::tempdir().unwrap();
    // Above the kernel's ephemeral range (32768-60999): a client socket of another test could
    // hold a port below it, and the pools skip ports taken on the host.
    let pools = PortPools::new(
        "61900-61902".parse().unwrap(),
        "61910-61911".parse().unwrap(),
    )
    .unwrap();
    let store = Store::open(&dir.path().join("d.json"), pools).unwrap();
    let ids: Vec<PreviewId> = (1..=4)
        .map(|n| PreviewId::parse(&format!("a-b-pr-{n}")).unwrap())
        .collect();
    let published = BTreeSet::from([61901]);
    let a = store
        .allocate_ports(&ids[0], true, &published)
        .await
        .unwrap();
    assert_eq!((a.app, a.db), (61900, Some(61910)));
    // Same preview again: same ports.
    assert_eq!(
        store
            .allocate_ports(&ids[0], true, &published)
            .await
            .unwrap(),
        a
    );
    let b = store
        .allocate_ports(&ids[1], false, &published)
        .await
        .unwrap();
    assert_eq!((b.app, b.db), (61902, None));
    let err = store
        .allocate_ports(&ids[2], false, &published)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no free port in the app port pool 61900-61902"),
        "{err}"
    );
    store.release_ports(&ids[0]).await.unwrap();
    let c = store
        .allocate_ports(&ids[2], true, &BTreeSet::new())
        .await
        .unwrap();
    assert_eq!((c.app, c.db), (61900, Some(61910)));
}

/// An update holds a second app port from the pool (`nextApp` in the file) until nginx switches
/// to it; then it is the app port and the old one is free, or, if the update fails, it is given
/// back.
#[tokio::test]
async fn an_update_holds_a_second_app_port_until_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    // Below the kernel's ephemeral ports (32768+), so no test's connection can hold one.
    let pools = PortPools::new(
        "29100-29103".parse().unwrap(),
        "29110-29111".parse().unwrap(),
    )
    .unwrap();
    let path = dir.path().join("d.json");
    let store = Store::open(&path, pools).unwrap();
    let a = PreviewId::parse("a-b-pr-1").unwrap();
    let b = PreviewId::parse("a-b-pr-2").unwrap();
    assert!(
        store
            .allocate_next_app_port(&a, &BTreeSet::new())
            .await
            .is_err(),
        "only a preview that holds ports updates"
    );
    let first = store
        .allocate_ports(&a, false, &BTreeSet::new())
        .await
        .unwrap();
    assert_eq!(first.app, 29100);
    // 29101 is published by some container: skipped.
    let next = store
        .allocate_next_app_port(&a, &BTreeSet::from([29101]))
        .await
        .unwrap();
    assert_eq!(next, 29102);
    assert_eq!(
        store
            .allocate_next_app_port(&a, &BTreeSet::new())
            .await
            .unwrap(),
        next,
        "an unfinished update's port is reused"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["portAllocations"]["a-b-pr-1"]["nextApp"], 29102);
    // Another preview does not get it.
    let other = store
        .allocate_ports(&b, false, &BTreeSet::new())
        .await
        .unwrap();
    assert_eq!(other.app, 29101);
    // The switch: the new port serves, the old one is free for the next update.
    store.switch_to_next_ports(&a, 29102).await.unwrap();
    let switched = store.ports(&a).unwrap();
    assert_eq!((switched.app, switched.next_app), (29102, None));
    assert_eq!(
        store
            .allocate_next_app_port(&a, &BTreeSet::new())
            .await
            .unwrap(),
        29100
    );
    // A failed update gives its port back; a switch to another port changes nothing.
    store.switch_to_next_ports(&a, 29103).await.unwrap();
    assert_eq!(store.ports(&a).unwrap().app, 29102);
    store.release_next_ports(&a).await.unwrap();
    assert_eq!(store.ports(&a).unwrap().next_app, None);
    assert_eq!(store.ports(&a).unwrap().app, 29102);
}

/// A second web service's port (`service`) comes from the app pool, is kept from commit to
/// commit, is never another preview's, and goes back with the other ports or on its own.
#[tokio::test]
async fn a_second_web_service_holds_a_port_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let pools = PortPools::new(
        "29120-29123".parse().unwrap(),
        "29130-29131".parse().unwrap(),
    )
    .unwrap();
    let path = dir.path().join("d.json");
    let store = Store::open(&path, pools).unwrap();
    let a = PreviewId::parse("a-b-pr-1").unwrap();
    let b = PreviewId::parse("a-b-pr-2").unwrap();
    assert!(
        store
            .allocate_service_port(&a, &BTreeSet::new())
            .await
            .is_err(),
        "only a preview that holds ports"
    );
    store
        .allocate_ports(&a, false, &BTreeSet::new())
        .await
        .unwrap();
    // 29121 is published by some container: skipped.
    let port = store
        .allocate_service_port(&a, &BTreeSet::from([29121]))
        .await
        .unwrap();
    assert_eq!(port, 29122);
    assert_eq!(
        store
            .allocate_service_port(&a, &BTreeSet::new())
            .await
            .unwrap(),
        port,
        "the next commit keeps it"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["portAllocations"]["a-b-pr-1"]["service"], 29122);
    let other = store
        .allocate_ports(&b, false, &BTreeSet::new())
        .await
        .unwrap();
    assert_eq!(other.app, 29121, "another preview does not get it");
    let read: preview_core::ports::PortAllocation =
        serde_json::from_value(v["portAllocations"]["a-b-pr-1"].clone()).unwrap();
    assert_eq!(read.service, Some(29122), "read back from the file");
    // A commit without the service gives it back; closing gives back everything.
    store.release_service_port(&a).await.unwrap();
    assert_eq!(store.ports(&a).unwrap().service, None);
    store
        .allocate_service_port(&a, &BTreeSet::new())
        .await
        .unwrap();
    store.release_ports(&a).await.unwrap();
    assert_eq!(store.ports(&a), None);
    assert!(!store.read(|s| s.allocated_ports()).contains(&29122));
}

/// An update of a preview with a second web service holds a second port for it too
/// (`nextService`, from the app pool, never another's): the switch moves both ports at once
/// and gives both old ones back; a failed update gives back both next ports, the serving ones
/// untouched.
#[tokio::test]
async fn an_update_holds_a_second_service_port_and_switches_both() {
    let dir = tempfile::tempdir().unwrap();
    let pools = PortPools::new(
        "29140-29145".parse().unwrap(),
        "29150-29151".parse().unwrap(),
    )
    .unwrap();
    let path = dir.path().join("d.json");
    let store = Store::open(&path, pools).unwrap();
    let a = PreviewId::parse("a-b-pr-1").unwrap();
    assert!(
        store
            .allocate_next_service_port(&a, &BTreeSet::new())
            .await
            .is_err(),
        "only a preview that holds ports updates"
    );
    store
        .allocate_ports(&a, false, &BTreeSet::new())
        .await
        .unwrap();
    let service = store
        .allocate_service_port(&a, &BTreeSet::new())
        .await
        .unwrap();
    assert_eq!(service, 29141);
    let next_app = store
        .allocate_next_app_port(&a, &BTreeSet::new())
        .await
        .unwrap();
    // 29143 is published by some container: skipped.
    let next_service = store
        .allocate_next_service_port(&a, &BTreeSet::from([29143]))
        .await
        .unwrap();
    assert_eq!((next_app, next_service), (29142, 29144));
    assert_eq!(
        store
            .allocate_next_service_port(&a, &BTreeSet::new())
            .await
            .unwrap(),
        next_service,
        "an unfinished update's port is reused"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["portAllocations"]["a-b-pr-1"]["nextService"], 29144);
    let read: preview_core::ports::PortAllocation =
        serde_json::from_value(v["portAllocations"]["a-b-pr-1"].clone()).unwrap();
    assert_eq!(read.next_service, Some(29144), "read back from the file");
    assert!(store.read(|s| s.allocated_ports()).contains(&29144));

    // A failed update: both next ports go back, the serving ones stay.
    store.release_next_ports(&a).await.unwrap();
    let held = store.ports(&a).unwrap();
    assert_eq!(
        (held.app, held.service, held.next_app, held.next_service),
        (29140, Some(29141), None, None)
    );

    // A switch to another app port changes nothing; the right one moves both.
    store
        .allocate_next_app_port(&a, &BTreeSet::new())
        .await
        .unwrap();
    store
        .allocate_next_service_port(&a, &BTreeSet::new())
        .await
        .unwrap();
    store.switch_to_next_ports(&a, 29145).await.unwrap();
    assert_eq!(store.ports(&a).unwrap().service, Some(29141));
    store.switch_to_next_ports(&a, 29142).await.unwrap();
    let held = store.ports(&a).unwrap();
    assert_eq!(
        (held.app, held.service, held.next_app, held.next_service),
        (29142, Some(29143), None, None)
    );
    let allocated = store.read(|s| s.allocated_ports());
    assert!(
        !allocated.contains(&29140) && !allocated.contains(&29141),
        "the old ports are given back: {allocated:?}"
    );
}

fn inode(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn versions_alternate_between_two_files_when_nobody_reads_them() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deployments.json");
    let temp = dir.path().join(".deployments.json.next");
    let mut file = StoreFile::new(&path);
    file.write(b"version 1").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let first = inode(&path);
    file.write(b"version 2, longer").unwrap();
    assert_eq!(
        inode(&temp),
        first,
        "the previous version is the temp file now"
    );
    file.write(b"v3").unwrap();
    assert_eq!(
        inode(&path),
        first,
        "its file was reused, not a new one made"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"v3",
        "shorter content is truncated"
    );
    assert_eq!(std::fs::read(&temp).unwrap(), b"version 2, longer");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the store file's mode is kept");
}

#[test]
fn a_growing_store_file_reserves_its_room_in_one_piece() {
    use std::collections::{BTreeMap, BTreeSet};
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deployments.json");
    let mut file = StoreFile::new(&path);
    // Each file's allocations (in bytes), by inode: versions grow by less than a block each, as
    // a store does while previews are added, yet a file takes room a few times, not every time.
    let mut room: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for len in (1..=40).map(|i| i * 3000) {
        let version = vec![b'x'; len];
        file.write(&version).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            meta.len(),
            len as u64,
            "the size is the content's, not the room's"
        );
        assert!(meta.blocks() * 512 >= len as u64);
        room.entry(meta.ino())
            .or_default()
            .insert(meta.blocks() * 512);
        assert_eq!(std::fs::read(&path).unwrap(), version);
    }
    assert_eq!(room.len(), 2, "two files alternate: {room:?}");
    for (inode, sizes) in &room {
        assert!(
            sizes.len() <= 3,
            "file {inode} took room {} times: {sizes:?}",
            sizes.len()
        );
    }
    file.write(b"short again").unwrap();
    file.write(b"short").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"short");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        5,
        "a shorter version is truncated"
    );
}

#[test]
fn a_reader_keeps_the_version_it_opened() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deployments.json");
    let mut file = StoreFile::new(&path);
    file.write(b"version 1").unwrap();
    let opened = inode(&path);
    let mut reader = std::fs::File::open(&path).unwrap();
    file.write(b"version 2").unwrap();
    // This write would reuse the reader's file; the lease is refused, so it takes a new one.
    file.write(b"version 3").unwrap();
    assert_ne!(inode(&path), opened);
    let mut seen = String::new();
    reader.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "version 1");
    assert_eq!(std::fs::read(&path).unwrap(), b"version 3");
    // Once the reader is gone, files are reused again.
    drop(reader);
    let live = inode(&path);
    file.write(b"version 4").unwrap();
    file.write(b"version 5").unwrap();
    assert_eq!(inode(&path), live);
}
