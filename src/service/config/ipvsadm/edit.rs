//! Edits: the table-changing commands (`-A -E -D -a -e -d -C --set`, and `-Z`'s check)
//! applied to a [`Config`], all or nothing.

use super::{IpvsCommand, IpvsError};
use crate::service::config::error::{validate_real, validate_service, Fault};
use crate::service::{Config, ServiceKey, VirtualService, DEFAULT_MH_TABLE_SIZE};

/// Applies a table-changing command. On error `config` is unchanged.
///
/// New real servers go to the **end** of their service's list (configuration order; with
/// `dest_order = "kernel"` the schedulers walk it from the other end, the kernel's
/// newest-first list). `-Z` only checks that the service exists: counters live in the data
/// path, not in the [`Config`].
pub fn apply(config: &mut Config, cmd: &IpvsCommand) -> Result<(), IpvsError> {
    let find =
        |config: &Config, key: &ServiceKey| config.services.iter().position(|s| s.key == *key);
    match cmd {
        IpvsCommand::AddService(spec) => {
            if find(config, &spec.key).is_some() {
                return Err(IpvsError::ServiceExists);
            }
            let svc = VirtualService {
                key: spec.key,
                scheduler: spec.scheduler,
                flags: spec.flags,
                mh_table_size: DEFAULT_MH_TABLE_SIZE,
                persistence: spec.persistence,
                reals: Vec::new(),
            };
            validate_service(&svc, config.services.len()).map_err(IpvsError::Invalid)?;
            config.services.push(svc);
        }
        IpvsCommand::EditService(spec) => {
            let i = find(config, &spec.key).ok_or(IpvsError::NoSuchService)?;
            let old = &config.services[i];
            // Validate a shell with the real servers borrowed, not cloned: they cannot
            // change validity except through the family, which the key fixes.
            let shell = VirtualService {
                key: spec.key,
                scheduler: spec.scheduler,
                flags: spec.flags,
                mh_table_size: old.mh_table_size,
                persistence: spec.persistence,
                reals: Vec::new(),
            };
            validate_service(&shell, i).map_err(IpvsError::Invalid)?;
            let svc = &mut config.services[i];
            svc.scheduler = spec.scheduler;
            svc.flags = spec.flags;
            svc.persistence = spec.persistence;
        }
        IpvsCommand::DeleteService(key) => {
            let i = find(config, key).ok_or(IpvsError::NoSuchService)?;
            config.services.remove(i);
        }
        IpvsCommand::AddServer { service, server } => {
            let i = find(config, service).ok_or(IpvsError::ServiceNotDefined)?;
            let svc = &config.services[i];
            if svc
                .reals
                .iter()
                .any(|r| r.addr == server.addr && r.port == server.port)
            {
                return Err(IpvsError::DestinationExists);
            }
            validate_real(server, service.is_ipv6(), Fault::Real(i, svc.reals.len()))
                .map_err(IpvsError::Invalid)?;
            config.services[i].reals.push(server.clone());
        }
        IpvsCommand::EditServer { service, server } => {
            let i = find(config, service).ok_or(IpvsError::ServiceNotDefined)?;
            let j = config.services[i]
                .reals
                .iter()
                .position(|r| r.addr == server.addr && r.port == server.port)
                .ok_or(IpvsError::NoSuchDestination)?;
            validate_real(server, service.is_ipv6(), Fault::Real(i, j))
                .map_err(IpvsError::Invalid)?;
            config.services[i].reals[j] = server.clone();
        }
        IpvsCommand::DeleteServer {
            service,
            addr,
            port,
        } => {
            let i = find(config, service).ok_or(IpvsError::ServiceNotDefined)?;
            let reals = &mut config.services[i].reals;
            let j = reals
                .iter()
                .position(|r| r.addr == *addr && r.port == *port)
                .ok_or(IpvsError::NoSuchDestination)?;
            reals.remove(j);
        }
        IpvsCommand::Clear => config.services.clear(),
        IpvsCommand::SetTimeouts { tcp, tcpfin, udp } => {
            let t = &mut config.timeouts;
            for (slot, v) in [
                (&mut t.tcp, tcp),
                (&mut t.tcpfin, tcpfin),
                (&mut t.udp, udp),
            ] {
                if *v != 0 {
                    *slot = *v;
                }
            }
        }
        IpvsCommand::Zero(Some(key)) => {
            find(config, key).ok_or(IpvsError::NoSuchService)?;
        }
        IpvsCommand::Zero(None) => {}
        IpvsCommand::List(_)
        | IpvsCommand::Save { .. }
        | IpvsCommand::Restore
        | IpvsCommand::Help
        | IpvsCommand::Version
        | IpvsCommand::StartDaemon { .. }
        | IpvsCommand::StopDaemon(_) => return Err(IpvsError::NotAChange),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::super::examples::{cmd, run, EXAMPLE_1};
    use super::super::parse_rules;
    use super::*;
    use crate::service::ForwardMethod;
    use crate::service::SchedulerKind;

    #[test]
    fn table_errors_use_ipvsadm_texts_and_leave_config_unchanged() {
        let mut c = parse_rules(EXAMPLE_1, Path::new("x")).unwrap();
        let before = c.clone();
        let cases = [
            ("-A -t 207.175.44.110:80 -s wlc", "Service already exists"),
            ("-E -t 207.175.44.111:80 -s wlc", "No such service"),
            ("-D -t 207.175.44.111:80", "No such service"),
            (
                "-a -t 207.175.44.111:80 -r 192.168.10.1:80 -m",
                "Service not defined",
            ),
            (
                "-a -t 207.175.44.110:80 -r 192.168.10.1:80 -m",
                "Destination already exists",
            ),
            (
                "-e -t 207.175.44.110:80 -r 192.168.10.9:80 -m",
                "No such destination",
            ),
            (
                "-d -t 207.175.44.110:80 -r 192.168.10.9",
                "No such destination",
            ),
            (
                "-d -t 207.175.44.111:80 -r 192.168.10.1",
                "Service not defined",
            ),
            // The -m server is on port 80; -d without a port means port 80 too.
            (
                "-a -t 207.175.44.110:80 -r 192.168.10.6:80 -m -x 5 -y 6",
                "lower_threshold: lower threshold 6 is higher than upper threshold 5",
            ),
            (
                "-a -t 207.175.44.110:80 -r 224.0.0.1:80 -m",
                "address: 224.0.0.1 is not a unicast address",
            ),
        ];
        for (line, msg) in cases {
            assert_eq!(run(&mut c, line).unwrap_err().to_string(), msg, "{line}");
            assert_eq!(c, before, "{line}");
        }
    }

    #[test]
    fn edit_and_delete() {
        let mut c = parse_rules(EXAMPLE_1, Path::new("x")).unwrap();
        // -E replaces every setting: no -s means wlc again, no -p means not persistent.
        run(&mut c, "-E -t 207.175.44.110:80 -s sh -b sh-port -p 60").unwrap();
        assert_eq!(c.services[0].scheduler, SchedulerKind::Sh);
        assert!(c.services[0].flags.sh_port);
        assert_eq!(c.services[0].reals.len(), 5);
        run(&mut c, "-E -t 207.175.44.110:80").unwrap();
        assert_eq!(c.services[0].scheduler, SchedulerKind::Wlc);
        assert_eq!(c.services[0].persistence, None);
        // -e replaces the whole real server: forwarding method back to -g.
        run(&mut c, "-e -t 207.175.44.110:80 -r 192.168.10.2:80 -w 5").unwrap();
        assert_eq!(c.services[0].reals[1].weight, 5);
        assert_eq!(c.services[0].reals[1].method, ForwardMethod::DirectRouting);
        run(&mut c, "-d -t 207.175.44.110:80 -r 192.168.10.1").unwrap();
        assert_eq!(c.services[0].reals.len(), 4);
        run(&mut c, "-D -t 207.175.44.110:80").unwrap();
        assert!(c.services.is_empty());
        run(&mut c, "-A -t 1.2.3.4:80").unwrap();
        run(&mut c, "-C").unwrap();
        assert!(c.services.is_empty());
    }

    proptest! {
        /// A failing command never changes the table.
        #[test]
        fn failed_apply_changes_nothing(line in "(-[aedAED] -t 10\\.0\\.0\\.[12]:80( -r 10\\.0\\.1\\.[12](:8[01])?)?( -[mgi])?( -w [0-9]{1,6})?( -x [0-9])?( -y [0-9])?( -p)?)") {
            let mut c = parse_rules("-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.0.1.1 -m -x 5\n", Path::new("x")).unwrap();
            let before = c.clone();
            if let Ok(command) = cmd(&line) {
                if apply(&mut c, &command).is_err() {
                    prop_assert_eq!(c, before);
                }
            }
        }
    }
}
