//! Malformed configurations fail `apache2 -t` with file, line and reason.

mod harness;
use harness::*;

fn check(extra: &str, expect: &str) {
    let setup = Setup::new().global(extra);
    let (ok, out) = setup.config_test();
    let conf = setup.conf_path().display().to_string();
    let _ = std::fs::remove_dir_all(&setup.dir);
    assert!(!ok, "`{extra}` was accepted: {out}");
    assert!(
        out.contains(expect),
        "`{extra}`: expected `{expect}` in: {out}"
    );
    assert!(
        out.contains(&conf) || out.contains("AssignUserID at"),
        "`{extra}`: no file named: {out}"
    );
}

#[test]
fn malformed_directives_fail_the_config_test() {
    check(
        "AssignUserID nosuchuserxyz nosuchgroupxyz",
        "no such user 'nosuchuserxyz'",
    );
    check(
        "AssignUserID www-data nosuchgroupxyz",
        "no such group 'nosuchgroupxyz'",
    );
    check("AssignUserID www-data", "AssignUserID takes two arguments");
    check("AssignUserID root root", "can never run as root");
    check(
        "AssignUserIDExpr %{",
        "AssignUserIDExpr: cannot parse expression",
    );
    check(
        "LimitUIDRange 2000 1000",
        "minimum 2000 is greater than maximum 1000",
    );
    check("LimitUIDRange abc 1000", "'abc' is not a number");
    check("LimitGIDRange 0 1000", "must not include 0");
    check(
        "<VirtualHost 127.0.0.1:1>\nLimitUIDRange 1000 2000\n</VirtualHost>",
        "cannot occur within <VirtualHost> section",
    );
    check(
        "<VirtualHost 127.0.0.1:1>\nMaxClientsVHost abc\n</VirtualHost>",
        "MaxClientsVHost: 'abc' is not a whole number",
    );
    check("NiceValue abc", "NiceValue: 'abc' is not a whole number");
    check(
        "EnableCapabilities maybe",
        "EnableCapabilities must be On or Off",
    );
    check(
        "StartServers many",
        "StartServers: 'many' is not a whole number",
    );
    check(
        "LimitUIDRange 3000 4000\nAssignUserID www-data www-data\n<VirtualHost 127.0.0.1:1>\nAssignUserID #2500 #3500\n</VirtualHost>",
        "outside LimitUIDRange",
    );
}

#[test]
fn assign_user_id_in_htaccess_is_refused() {
    let setup = Setup::new();
    let d = setup.dir.join("docs");
    write(&d.join(".htaccess"), "AssignUserID nobody nogroup\n", 0o644);
    write(&d.join("a.txt"), "a", 0o644);
    let setup = setup.global(format!(
        "<Directory {}>\n  AllowOverride All\n</Directory>",
        d.display()
    ));
    let srv = setup.start();
    assert_eq!(srv.get("localhost", "/a.txt").status, 500);
    assert!(
        srv.error_log().contains("AssignUserID not allowed here"),
        "{}",
        srv.error_log()
    );
}

#[test]
fn nice_value_out_of_range_is_clamped_with_a_warning() {
    let setup = Setup::new().global("NiceValue 99");
    let (ok, out) = setup.config_test();
    let _ = std::fs::remove_dir_all(&setup.dir);
    assert!(ok, "{out}");
    assert!(out.contains("lowering NiceValue to 19"), "{out}");
}

#[test]
fn max_clients_vhost_outside_a_virtual_host_is_refused() {
    check(
        "MaxClientsVHost 5",
        "MaxClientsVHost is only allowed inside <VirtualHost>",
    );
    // inside one it is fine
    let setup = Setup::new().vhost(VHost::new("a.test").line("MaxClientsVHost 5"));
    let (ok, out) = setup.config_test();
    let _ = std::fs::remove_dir_all(&setup.dir);
    assert!(ok, "{out}");
}
