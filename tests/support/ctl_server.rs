//! A ctl server turning a control loop over a real Director in a thread of the test process
//! (the ctl socket, then the reconcile step, every 2 ms), for the tests that drive `fastlb
//! ctl` or an `ipvsadm` link against it. Included with `#[path]` by those tests only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use fastlb::conn::ConnTable;
use fastlb::control::ctl::CtlServer;
use fastlb::control::{DataPlane, Director};
use fastlb::forward::nexthop::NextHops;
use fastlb::service::{Config, DestRegistry};
use fastlb::stats::WorkerStats;

/// Serves `server` over an empty Director until the flag is set; the thread returns the
/// Director as it was left.
pub fn serve(mut server: CtlServer) -> (Arc<AtomicBool>, thread::JoinHandle<Director>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = thread::spawn(move || {
        let registry = Arc::new(DestRegistry::new(64));
        let plane = DataPlane {
            conns: Arc::new(ConnTable::new(1024, 1, Arc::clone(&registry))),
            registry,
            workers: vec![Arc::new(WorkerStats::new(64))],
            nexthops: Arc::new(NextHops::default()),
            standby: Default::default(),
        };
        let mut director = Director::new(Config::default(), plane).unwrap();
        while !flag.load(Ordering::Relaxed) {
            server.poll(&mut director).unwrap();
            director.reconcile();
            thread::sleep(Duration::from_millis(2));
        }
        director
    });
    (stop, thread)
}
