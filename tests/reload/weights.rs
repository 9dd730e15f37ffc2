//! A changed weight takes effect at once: the balancer of the new snapshot spreads by it.

use std::net::SocketAddr;

use crate::support::reload::{who_answers, Reloadable, ADMIN};
use crate::support::TestBackend;

fn weighted(a: SocketAddr, wa: u32, b: SocketAddr, wb: u32) -> String {
    format!(
        r#"{ADMIN}
[log]
access_log = false

[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[route]]
pool = "app"

[pool.app]
algorithm = "weighted_round_robin"
backends = [{{ address = "{a}", weight = {wa} }}, {{ address = "{b}", weight = {wb} }}]
"#
    )
}

/// How many of `n` requests `a` answers.
fn share_of_a(addr: SocketAddr, n: usize) -> usize {
    (0..n).filter(|_| who_answers(addr, "/") == "a").count()
}

#[test]
fn a_changed_weight_takes_effect_on_the_next_requests() {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let sluice = Reloadable::start(&weighted(a.addr, 1, b.addr, 1));
    // Smooth weighted round robin is exact over whole cycles; a cycle started before the
    // reload may leave one pick off.
    assert_eq!(share_of_a(sluice.addr(), 20), 10);
    let reload = sluice.reload_ok(&weighted(a.addr, 3, b.addr, 1));
    assert_eq!(
        reload.changes("backends", "changed"),
        [format!("app/{}", a.addr)]
    );
    let share = share_of_a(sluice.addr(), 40);
    assert!(
        (29..=31).contains(&share),
        "a answered {share} of 40 at 3:1"
    );
    sluice.reload_ok(&weighted(a.addr, 1, b.addr, 4));
    let share = share_of_a(sluice.addr(), 50);
    assert!((9..=11).contains(&share), "a answered {share} of 50 at 1:4");
    assert_eq!(
        crate::support::admin::backend(sluice.admin(), "app", &b.addr.to_string())["weight"],
        4
    );
}
