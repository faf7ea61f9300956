mod common;
use common::*;

#[tokio::test]
async fn a_box_runs_a_command() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let out = b.ok("echo hello; id; hostname; pwd; ls /").await;
    println!("{out}");
    assert!(out.contains("hello"));
}

#[tokio::test]
async fn timing_probe() {
    let Some(rt) = runtime() else { return };
    for i in 0..5 {
        let t = std::time::Instant::now();
        let b = rt.create(&boxd_runtime::BoxSpec::new(unique("t"))).unwrap();
        let t1 = t.elapsed();
        b.exec(boxd_agent::protocol::SpawnRequest::argv(["/bin/true"])).await.unwrap();
        let t2 = t.elapsed();
        rt.destroy(b).unwrap();
        println!("{i}: create {:?} first-exec {:?} destroy {:?}", t1, t2, t.elapsed());
    }
}
