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
