//! Parsing and validation of the MPM's directive arguments, as pure
//! functions: what httpd's directive handlers (in the cdylib) store is
//! decided here. Errors are the text httpd prints after "file:line".
#![forbid(unsafe_code)]

use crate::ids::Identity;
use crate::ranges::IdRange;

/// prefork's tuning directives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuning {
    StartServers,
    MinSpareServers,
    MaxSpareServers,
    /// `MaxRequestWorkers`, or its deprecated name `MaxClients`.
    MaxRequestWorkers {
        deprecated_name: bool,
    },
    ServerLimit,
}

impl Tuning {
    /// The tuning directive called `name`, if it is one.
    pub fn from_name(name: &str) -> Option<Tuning> {
        Some(match name {
            "StartServers" => Tuning::StartServers,
            "MinSpareServers" => Tuning::MinSpareServers,
            "MaxSpareServers" => Tuning::MaxSpareServers,
            "MaxRequestWorkers" => Tuning::MaxRequestWorkers {
                deprecated_name: false,
            },
            "MaxClients" => Tuning::MaxRequestWorkers {
                deprecated_name: true,
            },
            "ServerLimit" => Tuning::ServerLimit,
            _ => return None,
        })
    }
}

/// The message httpd's prefork logs for `MaxClients`.
pub const MAX_CLIENTS_DEPRECATED: &str = "MaxClients is deprecated, use MaxRequestWorkers instead.";

/// A whole-number directive argument (prefork's atoi, but refusing junk).
pub fn parse_int(directive: &str, arg: &str) -> Result<i32, String> {
    arg.trim()
        .parse::<i32>()
        .map_err(|_| format!("{directive}: '{arg}' is not a whole number"))
}

/// `AssignUserID user group`, once resolved: root is never a vhost's user
/// or group.
pub fn check_assigned(id: &Identity, user: &str, group: &str) -> Result<(), String> {
    if id.uid == 0 {
        return Err(format!(
            "AssignUserID: refusing '{user}': a vhost can never run as root (uid 0)"
        ));
    }
    if id.gid == 0 {
        return Err(format!(
            "AssignUserID: refusing group '{group}': a vhost can never run as gid 0"
        ));
    }
    Ok(())
}

/// `NiceValue n`, clamped to -20..19 with a startup warning (returned), as
/// the C module does.
pub fn nice_value(arg: &str) -> Result<(i32, Option<String>), String> {
    let n = parse_int("NiceValue", arg)?;
    Ok(if n < -20 {
        (
            -20,
            Some(format!(
                "WARNING: NiceValue of {n} is below -20, increasing NiceValue to -20."
            )),
        )
    } else if n > 19 {
        (
            19,
            Some(format!(
                "WARNING: NiceValue of {n} is above 19, lowering NiceValue to 19."
            )),
        )
    } else {
        (n, None)
    })
}

/// `MaxClientsVHost n`: at least 1, and only inside `<VirtualHost>` (in the
/// main server it would silently limit only requests no vhost matched).
pub fn max_clients_vhost(arg: &str, in_virtual_host: bool) -> Result<u32, String> {
    if !in_virtual_host {
        return Err("MaxClientsVHost is only allowed inside <VirtualHost>".into());
    }
    let n = parse_int("MaxClientsVHost", arg)?;
    if n < 1 {
        return Err(format!("MaxClientsVHost: {n} must be at least 1"));
    }
    Ok(n as u32)
}

/// `UserPoolMaxProcesses n`: 1 to [`crate::pools::MAX_PROCESSES`].
pub fn pool_max_processes(n: i32) -> Result<i32, String> {
    let max = crate::pools::MAX_PROCESSES as i32;
    if !(1..=max).contains(&n) {
        return Err(format!(
            "UserPoolMaxProcesses: {n} must be between 1 and {max}"
        ));
    }
    Ok(n)
}

/// `UserPoolIdleTimeout seconds`: at least 1.
pub fn pool_idle_timeout(n: i32) -> Result<i32, String> {
    if n < 1 {
        return Err(format!(
            "UserPoolIdleTimeout: {n} must be at least 1 second"
        ));
    }
    Ok(n)
}

/// `LimitUIDRange` / `LimitGIDRange`.
pub fn id_range(directive: &str, min: &str, max: &str) -> Result<IdRange, String> {
    IdRange::parse(min, max).map_err(|e| format!("{directive}: {e}"))
}

/// `On`/`Off` for flag directives given as TAKE1.
pub fn flag(directive: &str, arg: &str) -> Result<bool, String> {
    match arg.trim().to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{directive} must be On or Off")),
    }
}

/// A `NiceValue` below the server's own nice value cannot be applied
/// without CAP_SYS_NICE: a configuration error naming where it is written.
pub fn check_nice_values(
    values: &[(i32, String)],
    base: i32,
    can_raise_priority: bool,
) -> Result<(), String> {
    if can_raise_priority {
        return Ok(());
    }
    match values.iter().find(|(n, _)| *n < base) {
        Some((n, at)) => Err(format!(
            "NiceValue {n} at {at} is below the server's nice value {base}, which needs \
             CAP_SYS_NICE, and the server was started without it (a container's default \
             capability set?): lower values than {base} cannot be applied"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(uid: u32, gid: u32) -> Identity {
        Identity {
            user: "u".into(),
            uid,
            gid,
            groups: vec![gid],
        }
    }

    #[test]
    fn tuning_names() {
        assert_eq!(
            Tuning::from_name("StartServers"),
            Some(Tuning::StartServers)
        );
        assert_eq!(
            Tuning::from_name("MaxClients"),
            Some(Tuning::MaxRequestWorkers {
                deprecated_name: true
            })
        );
        assert_eq!(
            Tuning::from_name("MaxRequestWorkers"),
            Some(Tuning::MaxRequestWorkers {
                deprecated_name: false
            })
        );
        assert_eq!(Tuning::from_name("ServerLimit"), Some(Tuning::ServerLimit));
        assert_eq!(Tuning::from_name("ThreadsPerChild"), None);
    }

    #[test]
    fn ints() {
        assert_eq!(parse_int("StartServers", " 5 "), Ok(5));
        assert_eq!(parse_int("StartServers", "-3"), Ok(-3));
        let e = parse_int("StartServers", "5x").unwrap_err();
        assert_eq!(e, "StartServers: '5x' is not a whole number");
        assert!(parse_int("StartServers", "").is_err());
        assert!(parse_int("StartServers", "99999999999").is_err());
    }

    #[test]
    fn assigned_identity_never_root() {
        assert!(check_assigned(&id(1000, 1000), "a", "a").is_ok());
        let e = check_assigned(&id(0, 1000), "root", "a").unwrap_err();
        assert!(e.contains("never run as root"), "{e}");
        let e = check_assigned(&id(1000, 0), "a", "root").unwrap_err();
        assert!(e.contains("gid 0"), "{e}");
    }

    #[test]
    fn nice_is_clamped_with_a_warning() {
        assert_eq!(nice_value("5"), Ok((5, None)));
        assert_eq!(nice_value("-20"), Ok((-20, None)));
        assert_eq!(nice_value("19"), Ok((19, None)));
        let (n, w) = nice_value("-25").unwrap();
        assert_eq!(n, -20);
        assert!(w.unwrap().contains("below -20"));
        let (n, w) = nice_value("40").unwrap();
        assert_eq!(n, 19);
        assert!(w.unwrap().contains("above 19"));
        assert!(nice_value("low").is_err());
    }

    #[test]
    fn max_clients_vhost_rules() {
        assert_eq!(max_clients_vhost("3", true), Ok(3));
        assert!(
            max_clients_vhost("0", true)
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(max_clients_vhost("-1", true).is_err());
        assert!(max_clients_vhost("x", true).is_err());
        let e = max_clients_vhost("3", false).unwrap_err();
        assert!(e.contains("only allowed inside <VirtualHost>"), "{e}");
    }

    #[test]
    fn ranges_name_the_directive() {
        assert_eq!(
            id_range("LimitUIDRange", "1000", "2000"),
            Ok(IdRange {
                min: 1000,
                max: 2000
            })
        );
        assert!(
            id_range("LimitUIDRange", "0", "10")
                .unwrap_err()
                .starts_with("LimitUIDRange: ")
        );
        assert!(
            id_range("LimitGIDRange", "20", "10")
                .unwrap_err()
                .starts_with("LimitGIDRange: ")
        );
    }

    #[test]
    fn pool_tuning_bounds() {
        assert_eq!(pool_max_processes(1), Ok(1));
        assert_eq!(pool_max_processes(64), Ok(64));
        assert!(pool_max_processes(0).is_err());
        assert!(pool_max_processes(65).is_err());
        assert_eq!(pool_idle_timeout(5), Ok(5));
        assert!(pool_idle_timeout(0).is_err());
    }

    #[test]
    fn flags() {
        assert_eq!(flag("EnableCapabilities", "On"), Ok(true));
        assert_eq!(flag("EnableCapabilities", "off"), Ok(false));
        assert_eq!(
            flag("NoNewPrivileges", "yes"),
            Err("NoNewPrivileges must be On or Off".into())
        );
    }

    #[test]
    fn nice_values_below_the_base_need_cap_sys_nice() {
        let v = vec![(5, "a.conf:3".to_string()), (-5, "b.conf:7".to_string())];
        assert!(check_nice_values(&v, 0, true).is_ok());
        let e = check_nice_values(&v, 0, false).unwrap_err();
        assert!(e.contains("-5") && e.contains("b.conf:7"), "{e}");
        assert!(check_nice_values(&v, -10, false).is_ok());
        assert!(check_nice_values(&[], 0, false).is_ok());
    }
}
