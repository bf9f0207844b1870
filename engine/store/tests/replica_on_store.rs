//! The replica on a real store: what only the two together show (the replica's own tests run
//! without a store; the simulator runs both under faults).

use dyad_core::replica::{LocalNode, Replica, ReplicaConfig};
use dyad_wire::{NodeId, SoftwareVersion, Version};

#[test]
fn status_shows_a_store_stopped_by_work_the_replica_did_not_route() {
    use dyad_store::disk::sim::SimDisk;
    use dyad_store::{ImportInfo, Store};
    let disk = SimDisk::new(11);
    let store = Store::open_or_create_with_format(disk.clone(), dyad_store::FORMAT_VERSION)
        .expect("a fresh store");
    let node = LocalNode {
        node_id: NodeId([1; 16]),
        predecessors: Vec::new(),
        name: "a".into(),
        software: SoftwareVersion {
            app: Version {
                major: 1,
                minor: 0,
                patch: 0,
            },
            base: Version {
                major: 3,
                minor: 1,
                patch: 0,
            },
        },
        site_hostname: None,
    };
    let replica = Replica::open(store, node, ReplicaConfig::default(), 0).expect("a fresh replica");
    assert_eq!(replica.status(0).storage_failure, None);
    // An import is the store's own work: its fsync fails, which stops the store.
    disk.fail_next_sync();
    let info = ImportInfo {
        origin: NodeId([1; 16]),
        started_unix_ms: 0,
        ended_unix_ms: 1,
        ended_normally: true,
        expected_len: None,
        expected_root: None,
    };
    assert!(replica
        .store()
        .import_recording(&[7u8; 1000][..], info)
        .is_err());
    let failure = replica.status(0).storage_failure.expect("shown at once");
    assert!(failure.contains("restart"), "{failure}");
}
