//! What a tenant may do to a system's status, decided without I/O: pause, resume, decommission.
//!
//! Decommissioning is final. Asking for the status a system already has is not an error and
//! records nothing, so a retried command is harmless.

use events_schema::{FleetEvent, SystemDecommissioned, SystemPaused, SystemResumed};

use crate::registry::SystemStatus;

/// A status command of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusCommand {
    /// Refuse the system's reports until resumed.
    Pause {
        /// Why, for the audit trail.
        reason: Option<String>,
    },
    /// Accept its reports again.
    Resume,
    /// Retire it for good.
    Decommission {
        /// Why, for the audit trail.
        reason: Option<String>,
    },
}

/// The outcome of a status command.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusDecision {
    /// The status the system has after the command.
    pub status: SystemStatus,
    /// The event to record; `None` when the system already has that status.
    pub event: Option<FleetEvent>,
}

/// Why a status command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatusRefusal {
    /// Nothing but decommissioning again is possible after decommissioning.
    #[error("the system is decommissioned")]
    Decommissioned,
}

/// Decides a status command against the system's current status.
pub fn decide(
    current: SystemStatus,
    command: StatusCommand,
) -> Result<StatusDecision, StatusRefusal> {
    use SystemStatus::{Active, Decommissioned, Paused};
    let (status, event): (SystemStatus, FleetEvent) = match (current, command) {
        (Decommissioned, StatusCommand::Decommission { .. }) => {
            return Ok(StatusDecision {
                status: Decommissioned,
                event: None,
            })
        }
        (Decommissioned, _) => return Err(StatusRefusal::Decommissioned),
        (_, StatusCommand::Pause { reason }) => (Paused, SystemPaused { reason }.into()),
        (_, StatusCommand::Resume) => (Active, SystemResumed {}.into()),
        (_, StatusCommand::Decommission { reason }) => {
            (Decommissioned, SystemDecommissioned { reason }.into())
        }
    };
    Ok(StatusDecision {
        status,
        event: (current != status).then_some(event),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause() -> StatusCommand {
        StatusCommand::Pause {
            reason: Some("maintenance".into()),
        }
    }

    fn decommission() -> StatusCommand {
        StatusCommand::Decommission { reason: None }
    }

    #[test]
    fn an_active_system_is_paused_and_a_paused_one_resumed() {
        let paused = decide(SystemStatus::Active, pause()).unwrap();
        assert_eq!(paused.status, SystemStatus::Paused);
        assert!(
            matches!(paused.event, Some(FleetEvent::SystemPaused(ref e)) if e.reason.as_deref() == Some("maintenance"))
        );
        let resumed = decide(SystemStatus::Paused, StatusCommand::Resume).unwrap();
        assert_eq!(resumed.status, SystemStatus::Active);
        assert!(matches!(resumed.event, Some(FleetEvent::SystemResumed(_))));
    }

    #[test]
    fn asking_for_the_status_a_system_has_records_nothing() {
        for (current, command) in [
            (SystemStatus::Paused, pause()),
            (SystemStatus::Active, StatusCommand::Resume),
            (SystemStatus::Decommissioned, decommission()),
        ] {
            let decision = decide(current, command).unwrap();
            assert_eq!(decision.status, current);
            assert_eq!(decision.event, None);
        }
    }

    #[test]
    fn any_live_system_can_be_decommissioned_and_then_nothing_else() {
        for current in [SystemStatus::Active, SystemStatus::Paused] {
            let decision = decide(current, decommission()).unwrap();
            assert_eq!(decision.status, SystemStatus::Decommissioned);
            assert!(matches!(
                decision.event,
                Some(FleetEvent::SystemDecommissioned(_))
            ));
        }
        for command in [pause(), StatusCommand::Resume] {
            assert_eq!(
                decide(SystemStatus::Decommissioned, command),
                Err(StatusRefusal::Decommissioned)
            );
        }
    }
}
