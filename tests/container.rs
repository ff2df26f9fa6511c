//! Issue 15: httpd in a container with Docker's default capability set (no
//! CAP_SYS_ADMIN, CAP_SYS_NICE or CAP_DAC_READ_SEARCH), simulated without a
//! container runtime: the test starts httpd with only those capabilities in
//! its bounding set, so root's exec gets no others. It starts, warns about
//! each missing capability, serves every vhost as its user, refuses a
//! NiceValue it cannot apply, and every process holds what the README's
//! container table says.

mod harness;
use harness::*;
use std::time::{Duration, Instant};

/// The docker default set as /proc prints it.
fn docker_mask() -> String {
    format!(
        "{:016x}",
        DOCKER_DEFAULT_CAPS.iter().fold(0u64, |m, c| m | 1 << c)
    )
}

/// CAP_SETGID and CAP_SETUID: what a worker keeps of its four here.
const TWO_CAPS: &str = "00000000000000c0";
const NO_CAPS: &str = "0000000000000000";

fn field(pid: i32, name: &str) -> String {
    status_field(&proc_status(pid), name).unwrap_or_default()
}

fn container_server(
    alice: &TestUser,
    bob: &TestUser,
    extra: &[&str],
) -> (Server, std::path::PathBuf) {
    let mut setup = Setup::new();
    let (da, db) = (setup.docroot("a"), setup.docroot("b"));
    for d in [&da, &db] {
        write(&d.join("who.php"), WHOAMI_PHP, 0o644);
        write(
            &d.join("status.php"),
            "<?php echo file_get_contents('/proc/self/status');",
            0o644,
        );
    }
    for g in extra {
        setup = setup.global(*g);
    }
    let dir = setup.dir.clone();
    let srv = setup.vhost(VHost::of("alice.test", &da, alice)).vhost(
        VHost::of("bob.test", &db, bob).line(format!(
            "<Directory {}>\n    NiceValue 5\n  </Directory>",
            db.display()
        )),
    );
    // SAFETY: bounding_set_only makes prctl calls only.
    let srv = unsafe { srv.start_with(bounding_set_only(&DOCKER_DEFAULT_CAPS)) };
    (srv, dir)
}

#[test]
fn starts_warns_and_serves_with_dockers_default_capabilities() {
    let alice = TestUser::create(false);
    let bob = TestUser::create(false);
    let (srv, _) = container_server(&alice, &bob, &[]);
    let log = srv.error_log();
    for needle in [
        "started without CAP_DAC_READ_SEARCH",
        "started without CAP_SYS_NICE",
        "started without CAP_SYS_ADMIN",
    ] {
        assert_eq!(
            log.lines()
                .filter(|l| l.contains(needle) && l.contains(":warn]"))
                .count(),
            1,
            "one warning with {needle:?}:\n{log}"
        );
    }
    // each vhost as its user (NiceValue 5, a raise, is applied)
    for (host, u) in [("alice.test", &alice), ("bob.test", &bob)] {
        let r = srv.get(host, "/who.php");
        assert_eq!(r.status, 200, "{host}: {}\n{}", r.body, srv.error_log());
        assert!(
            r.body.starts_with(&format!("{0} {0} ", u.uid)),
            "{host}: {}",
            r.body
        );
    }

    // the README's table for this mode
    let parent = srv.parent_pid();
    assert_eq!(field(parent, "CapEff"), docker_mask(), "parent");
    assert_eq!(field(parent, "CapBnd"), docker_mask(), "parent");
    let deadline = Instant::now() + Duration::from_secs(5);
    let workers = loop {
        let w = srv.worker_pids();
        if !w.is_empty() && w.iter().all(|p| field(*p, "CapEff") == TWO_CAPS) {
            break w;
        }
        assert!(Instant::now() < deadline, "workers: {w:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for w in workers {
        assert_eq!(
            field(w, "Uid"),
            format!("{} 33 0 33", worker_real_uid()),
            "worker {w}"
        );
        assert_eq!(field(w, "CapPrm"), TWO_CAPS, "worker {w}");
        assert_eq!(field(w, "CapBnd"), NO_CAPS, "worker {w}");
        assert_eq!(field(w, "Seccomp"), "2", "worker {w}");
        // forced: without CAP_SYS_ADMIN the filter needs no_new_privs
        assert_eq!(field(w, "NoNewPrivs"), "1", "worker {w}");
    }
    let r = srv.get("alice.test", "/status.php");
    let f = |k: &str| status_field(&r.body, k).unwrap_or_default();
    assert_eq!(f("Uid"), format!("{0} {0} {0} {0}", alice.uid));
    for k in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
        assert_eq!(f(k), NO_CAPS, "PHP {k}");
    }
    assert_eq!((f("Seccomp"), f("NoNewPrivs")), ("2".into(), "1".into()));
}

/// Without CAP_DAC_READ_SEARCH the worker cannot search a document root
/// that only the vhost user may enter: 403 before the switch (README).
#[test]
fn documents_only_the_vhost_user_can_reach_get_403_without_dac_read_search() {
    let alice = TestUser::create(false);
    let bob = TestUser::create(false);
    // The classic path, where the worker (User, without the capability)
    // maps the URL to the file before the switch. (A user process of
    // alice's runs as alice from the start: it serves such a tree.)
    let (srv, dir) = container_server(&alice, &bob, &["UserPools Off"]);
    let da = dir.join("docs/a");
    chown(&da, alice.uid, alice.gid);
    std::fs::set_permissions(&da, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    assert_eq!(srv.get("alice.test", "/who.php").status, 403);
    // with the capability (outside a container) the same tree is served
    // as alice: identity.rs and confinement.rs
}

#[test]
fn a_nice_value_below_the_servers_is_refused_at_startup_without_cap_sys_nice() {
    let setup = Setup::new().vhost(VHost::new("nice.test").line("NiceValue -5"));
    let conf = setup.conf_path().display().to_string();
    let pre = bounding_set_only(&DOCKER_DEFAULT_CAPS);
    // SAFETY: bounding_set_only makes prctl calls only.
    let f = unsafe { setup.start_expecting_failure(10, pre) };
    assert_eq!(f.status.and_then(|s| s.code()), Some(1), "{f:?}");
    assert!(!f.answered);
    let all = format!("{}{}", f.stderr, f.error_log);
    assert!(
        all.contains("NiceValue -5 at ") && all.contains(&conf) && all.contains("CAP_SYS_NICE"),
        "the refusal names the directive, its file and line, and the capability:\n{all}"
    );
}
