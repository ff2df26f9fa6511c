//! prefork's `perform_idle_server_maintenance` arithmetic, without the
//! scoreboard: given the slot states, decide whether to kill one idle worker,
//! spawn some, or do nothing, and how the spawn rate evolves.
#![forbid(unsafe_code)]

/// prefork's MAX_SPAWN_RATE.
pub const MAX_SPAWN_RATE: usize = 32;

/// A scoreboard slot as the maintenance sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    Dead,
    /// SERVER_STARTING or SERVER_READY: counts as idle.
    Idle,
    Busy,
}

/// The configured limits (after check_config's corrections).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub min_spare: usize,
    pub max_spare: usize,
    /// MaxRequestWorkers.
    pub daemons_limit: usize,
}

/// What the parent should do this cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Too many idle workers: signal one through the pipe of death.
    KillOne,
    /// Too few idle workers: start workers in these slots.
    Spawn(Vec<usize>),
    /// Too few idle workers but every slot is taken (MaxRequestWorkers).
    AtLimit,
    Nothing,
}

/// The result of one maintenance pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub action: Action,
    pub idle: usize,
    pub total: usize,
    /// New `max_daemons_limit` (last non-dead slot + 1).
    pub max_daemons_limit: usize,
    /// New idle spawn rate.
    pub spawn_rate: usize,
    /// New hold-off counter (after a graceful restart).
    pub hold_off: usize,
}

/// One pass of perform_idle_server_maintenance. `slots` holds the states of
/// slots `0..daemons_limit`; `max_daemons_limit` and `spawn_rate` come from
/// the retained data.
pub fn plan(
    slots: &[SlotState],
    limits: Limits,
    max_daemons_limit: usize,
    spawn_rate: usize,
    hold_off: usize,
) -> Plan {
    let spawn_rate = spawn_rate.clamp(1, MAX_SPAWN_RATE);
    let mut free = Vec::new();
    let (mut idle, mut total) = (0, 0);
    let mut last_non_dead: Option<usize> = None;
    for (i, st) in slots.iter().take(limits.daemons_limit).enumerate() {
        if i >= max_daemons_limit && free.len() == spawn_rate {
            break;
        }
        match st {
            SlotState::Dead => {
                if free.len() < spawn_rate {
                    free.push(i);
                }
            }
            s => {
                if *s == SlotState::Idle {
                    idle += 1;
                }
                total += 1;
                last_non_dead = Some(i);
            }
        }
    }
    let max_daemons_limit = last_non_dead.map_or(0, |i| i + 1);
    let mut out = Plan {
        action: Action::Nothing,
        idle,
        total,
        max_daemons_limit,
        spawn_rate: 1,
        hold_off,
    };
    if idle > limits.max_spare {
        out.action = Action::KillOne;
    } else if idle < limits.min_spare {
        if free.is_empty() {
            out.action = Action::AtLimit;
        } else {
            out.action = Action::Spawn(free);
            // Twice as many next time if this was not enough, unless we
            // just did a graceful restart.
            if hold_off > 0 {
                out.hold_off = hold_off - 1;
                out.spawn_rate = spawn_rate;
            } else {
                out.spawn_rate = (spawn_rate * 2).min(MAX_SPAWN_RATE);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use SlotState::*;

    const L: Limits = Limits {
        min_spare: 2,
        max_spare: 4,
        daemons_limit: 8,
    };

    #[test]
    fn kills_one_when_too_many_idle() {
        let p = plan(
            &[Idle, Idle, Idle, Idle, Idle, Dead, Dead, Dead],
            L,
            5,
            4,
            0,
        );
        assert_eq!(p.action, Action::KillOne);
        assert_eq!(p.spawn_rate, 1);
        assert_eq!(p.max_daemons_limit, 5);
    }

    #[test]
    fn spawns_with_exponential_rampup() {
        let slots = [Busy, Busy, Busy, Dead, Dead, Dead, Dead, Dead];
        let p = plan(&slots, L, 3, 1, 0);
        assert_eq!(p.action, Action::Spawn(vec![3]));
        assert_eq!(p.spawn_rate, 2);
        let p = plan(&slots, L, 3, 2, 0);
        assert_eq!(p.action, Action::Spawn(vec![3, 4]));
        assert_eq!(p.spawn_rate, 4);
        // hold-off after a graceful restart: no doubling
        let p = plan(&slots, L, 3, 2, 3);
        assert_eq!(p.spawn_rate, 2);
        assert_eq!(p.hold_off, 2);
    }

    #[test]
    fn reports_limit_when_no_free_slot() {
        let p = plan(&[Busy; 8], L, 8, 8, 0);
        assert_eq!(p.action, Action::AtLimit);
        assert_eq!(p.spawn_rate, 1);
    }

    #[test]
    fn steady_state_does_nothing() {
        let p = plan(
            &[Idle, Idle, Idle, Busy, Dead, Dead, Dead, Dead],
            L,
            4,
            8,
            0,
        );
        assert_eq!(p.action, Action::Nothing);
        assert_eq!(p.spawn_rate, 1);
        assert_eq!((p.idle, p.total), (3, 4));
    }
}
