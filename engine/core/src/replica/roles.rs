//! Role changes inside a relationship: planned and forced promotion of the backup, demotion of
//! the primary, and what happens when the two appliances disagree (split brain).
//!
//! A planned swap never has two appliances accepting configuration writes: the backup first
//! runs a final sync, then proposes a new epoch together with its configuration version; the
//! primary refuses unless its configuration is still exactly that version, steps down to
//! backup, persists, and only then answers; the backup takes over when the answer arrives. The
//! site cannot write configuration for about one round trip. If the answer is lost, the
//! backup completes the swap when it next sees the old primary as a backup in the epoch it
//! proposed. A forced promotion is the operator's word that the primary is gone; if it comes
//! back, both are primary: that is reported on both sides and nothing is synced until an
//! operator demotes one (its configuration then goes to the conflict record) or breaks.

use dyad_wire::{
    Epoch, ErrorMessage, Message, PromotePeer, ReasonCode, Role, RoleSwap, RoleSwapReply,
    StateReport,
};

use super::ports::{ReplicaStore, StoreFault};
use super::role_state::{Disagreement, PendingSwap, PromoteOrigin};
use super::types::{CommandError, CommandId, ConnId};
use super::{LinkKind, Replica, SyncNowCommand};

impl<S: ReplicaStore> Replica<S> {
    pub(super) fn command_promote(&mut self, now_unix_ms: u64, id: CommandId, force: bool) {
        if self.state.role != Role::Backup {
            let text = match self.state.role {
                Role::Primary => "this appliance is already the primary".to_string(),
                _ => "there is no relationship: outside a relationship the appliance that runs \
                      `dyad establish` becomes the primary"
                    .to_string(),
            };
            self.complete(id, Err(CommandError::Refused(text)));
            return;
        }
        let link = self.peer_link();
        if force {
            if link.is_some() {
                self.complete(
                    id,
                    Err(CommandError::Refused(
                        "the primary is reachable; run `dyad promote` without --force for a planned swap that loses nothing".into(),
                    )),
                );
                return;
            }
            let epoch = self.state.next_epoch(self.node.node_id);
            self.state.role = Role::Primary;
            self.advance_epoch(epoch);
            self.state.forced_promotion_unresolved = true;
            if let Err(fault) = self.save_state() {
                self.complete(
                    id,
                    Err(CommandError::Local(format!(
                        "the promotion could not be saved, so this appliance is still the backup: {fault}"
                    ))),
                );
                return;
            }
            let old = self
                .state
                .peer
                .as_ref()
                .map_or("the old primary".to_string(), |peer| peer.name.clone());
            self.complete(
                id,
                Ok(format!(
                    "forced: this appliance is now the primary in epoch {epoch}; point the site address at it. \
                     {old} may still accept writes: demote it (`dyad demote`) or break it off (`dyad break`) as soon as it is reachable"
                )),
            );
            return;
        }
        if link.is_none() {
            let text = format!(
                "{}; to promote without it, run `dyad promote --force` (only if it is really down)",
                self.unreachable_text()
            );
            self.complete(id, Err(CommandError::Peer(text)));
            return;
        }
        self.start_final_sync(now_unix_ms, PromoteOrigin::Command(id));
    }

    /// Runs the final sync of a planned promotion; the swap follows when it succeeds.
    fn start_final_sync(&mut self, now_unix_ms: u64, origin: PromoteOrigin) {
        let id = self.next_internal_command();
        self.promotions.insert(id, origin);
        let request = self.next_request();
        self.sync_now_commands.insert(
            id,
            SyncNowCommand {
                request,
                issued_unix_ms: now_unix_ms,
                local: None,
                remote: None,
                link_deadline_unix_ms: None,
            },
        );
        match self.peer_link() {
            Some(conn) => self.run_sync_now(now_unix_ms, id, conn),
            None => self.complete(id, Err(CommandError::Peer(self.unreachable_text()))),
        }
    }

    /// The final sync of a promotion finished.
    pub(super) fn final_sync_done(
        &mut self,
        now_unix_ms: u64,
        id: CommandId,
        outcome: Result<String, CommandError>,
    ) {
        let Some(origin) = self.promotions.remove(&id) else {
            return;
        };
        if let Err(error) = outcome {
            let text =
                format!("promotion aborted, nothing changed: the final sync failed: {error}");
            self.promotion_failed(origin, text);
            return;
        }
        let (Some(conn), Ok(config_version)) = (self.peer_link(), self.store.config_version())
        else {
            self.promotion_failed(origin, "promotion aborted, nothing changed: the link to the primary was lost after the final sync".into());
            return;
        };
        let epoch = self.state.next_epoch(self.node.node_id);
        // The proposed epoch must be saved before the primary hears of it: a restart that
        // forgot it could propose the same epoch twice.
        if let Err(fault) = self.save_state() {
            self.promotion_failed_locally(
                origin,
                fault,
                "nothing changed: both appliances keep their roles",
            );
            return;
        }
        self.pending_swap = Some(PendingSwap {
            origin,
            epoch,
            sent_unix_ms: now_unix_ms,
        });
        self.send(
            conn,
            Message::RoleSwap(RoleSwap {
                epoch,
                config_version,
            }),
        );
    }

    /// A promotion stopped by this appliance's storage: the operator's command says so (the
    /// peer's link is closed by the fault, so a peer-asked promotion has no one to answer).
    fn promotion_failed_locally(
        &mut self,
        origin: PromoteOrigin,
        fault: StoreFault,
        consequence: &str,
    ) {
        if let PromoteOrigin::Command(command) = origin {
            self.complete(
                command,
                Err(CommandError::Local(format!(
                    "promotion aborted: this appliance could not save its new role: {fault}; {consequence}"
                ))),
            );
        }
    }

    pub(super) fn promotion_failed(&mut self, origin: PromoteOrigin, text: String) {
        match origin {
            PromoteOrigin::Command(command) => {
                self.complete(command, Err(CommandError::Peer(text)))
            }
            PromoteOrigin::Peer { .. } => {
                if let Some(conn) = self.peer_link() {
                    let epoch = self.state.epoch;
                    self.send(
                        conn,
                        Message::RoleSwapReply(RoleSwapReply {
                            epoch,
                            refusal_code: ReasonCode::RelationshipState.as_u16(),
                            text,
                        }),
                    );
                }
            }
        }
    }

    /// On the primary: the backup takes over.
    pub(super) fn on_role_swap(&mut self, now_unix_ms: u64, conn: ConnId, swap: RoleSwap) {
        let peer_node = self
            .links
            .get(&conn)
            .map(|link| link.handshake.hello.node_id);
        let refuse = |replica: &mut Self, code: ReasonCode, text: String| {
            replica.send(
                conn,
                Message::RoleSwapReply(RoleSwapReply {
                    epoch: swap.epoch,
                    refusal_code: code.as_u16(),
                    text,
                }),
            );
        };
        if self.state.role != Role::Primary
            || swap.epoch <= self.state.epoch
            || Some(swap.epoch.node) != peer_node
        {
            let text = format!(
                "a swap to epoch {} does not fit this appliance ({} in epoch {})",
                swap.epoch,
                dyad_wire::Role::name(self.state.role),
                self.state.epoch
            );
            return refuse(self, ReasonCode::StaleEpoch, text);
        }
        match self.store.config_version() {
            Ok(version) if version == swap.config_version => {}
            Ok(version) => {
                let text = format!(
                    "the configuration changed on the primary during the swap (now {}#{}, the backup has {}#{}); run the promotion again",
                    version.epoch, version.sequence, swap.config_version.epoch, swap.config_version.sequence
                );
                return refuse(self, ReasonCode::RelationshipState, text);
            }
            Err(fault) => {
                self.note_fault(&fault);
                return refuse(self, ReasonCode::Internal, fault.to_string());
            }
        }
        if self.job.is_some() {
            self.finish_job(
                now_unix_ms,
                Err(CommandError::Refused("the appliances swapped roles".into())),
            );
        }
        self.state.observe_epoch(swap.epoch);
        self.state.role = Role::Backup;
        self.advance_epoch(swap.epoch);
        if let Err(fault) = self.save_state() {
            // No answer: the backup must not take over while this appliance, after its
            // rollback, is still the primary. The fault closed the link, which ends its wait.
            if let Some((command, _)) = self.pending_demote.take() {
                self.complete(
                    command,
                    Err(CommandError::Local(format!(
                        "demotion aborted: this appliance could not save its new role, so it is still the primary: {fault}"
                    ))),
                );
            }
            return;
        }
        self.send(
            conn,
            Message::RoleSwapReply(RoleSwapReply {
                epoch: swap.epoch,
                refusal_code: 0,
                text: String::new(),
            }),
        );
        self.next_sync_unix_ms = Some(now_unix_ms + self.config.sync_interval_ms);
        if let Some((command, _)) = self.pending_demote.take() {
            let peer = self
                .state
                .peer
                .as_ref()
                .map_or("the peer".to_string(), |peer| peer.name.clone());
            self.complete(
                command,
                Ok(format!(
                    "demoted: {peer} is now the primary in epoch {}; point the site address at it",
                    swap.epoch
                )),
            );
        }
    }

    /// On the backup: the old primary's answer to our swap.
    pub(super) fn on_role_swap_reply(&mut self, now_unix_ms: u64, reply: RoleSwapReply) {
        if let Some((command, _)) = self.pending_demote.take() {
            // We asked the backup to take over and it could not.
            if reply.refusal_code != 0 {
                self.complete(
                    command,
                    Err(CommandError::Peer(format!(
                        "the backup could not take over: {}",
                        reply.text
                    ))),
                );
            } else {
                self.pending_demote = Some((command, 0));
            }
            return;
        }
        let Some(pending) = self.pending_swap.take() else {
            return;
        };
        if reply.epoch != pending.epoch {
            self.pending_swap = Some(pending);
            return;
        }
        if reply.refusal_code != 0 {
            let text = format!(
                "the primary refused the swap ({:?}): {}",
                ReasonCode::from_u16(reply.refusal_code),
                reply.text
            );
            self.promotion_failed(pending.origin, text);
            return;
        }
        self.take_over(now_unix_ms, pending);
    }

    /// Becomes the primary in the swap's epoch.
    fn take_over(&mut self, now_unix_ms: u64, pending: PendingSwap) {
        self.state.role = Role::Primary;
        self.advance_epoch(pending.epoch);
        self.state.forced_promotion_unresolved = false;
        if let Err(fault) = self.save_state() {
            self.promotion_failed_locally(
                pending.origin,
                fault,
                "the primary has already stepped down, so restart this appliance: it completes \
                 the swap when it next reaches the old primary",
            );
            return;
        }
        self.next_sync_unix_ms = Some(now_unix_ms + self.config.sync_interval_ms);
        let gap_ms = now_unix_ms.saturating_sub(pending.sent_unix_ms);
        match pending.origin {
            PromoteOrigin::Command(command) => self.complete(
                command,
                Ok(format!(
                    "promoted: this appliance is now the primary in epoch {}; point the site address at it. \
                     Configuration writes were unavailable for at most {gap_ms} ms",
                    pending.epoch
                )),
            ),
            PromoteOrigin::Peer { .. } => {}
        }
    }

    /// When a link shows the old primary as backup in the epoch we proposed, our swap was
    /// accepted and only its answer was lost.
    pub(super) fn complete_lost_swap(&mut self, now_unix_ms: u64, peer_epoch: Epoch) -> bool {
        let proposed = self.pending_swap.as_ref().map(|pending| pending.epoch);
        if peer_epoch.node != self.node.node_id || proposed.is_some_and(|epoch| epoch != peer_epoch)
        {
            return false;
        }
        let pending = self.pending_swap.take().unwrap_or(PendingSwap {
            origin: PromoteOrigin::Peer { request: 0 },
            epoch: peer_epoch,
            sent_unix_ms: now_unix_ms,
        });
        self.take_over(
            now_unix_ms,
            PendingSwap {
                epoch: peer_epoch,
                ..pending
            },
        );
        true
    }

    /// On the backup: the primary asks us to take over.
    pub(super) fn on_promote_peer(&mut self, now_unix_ms: u64, request: PromotePeer) {
        if self.state.role != Role::Backup || self.pending_swap.is_some() {
            if let Some(conn) = self.peer_link() {
                let text = format!(
                    "this appliance is {}, not a backup ready to take over",
                    dyad_wire::Role::name(self.state.role)
                );
                let epoch = self.state.epoch;
                self.send(
                    conn,
                    Message::RoleSwapReply(RoleSwapReply {
                        epoch,
                        refusal_code: ReasonCode::RelationshipState.as_u16(),
                        text,
                    }),
                );
            }
            return;
        }
        self.start_final_sync(
            now_unix_ms,
            PromoteOrigin::Peer {
                request: request.request,
            },
        );
    }

    pub(super) fn command_demote(&mut self, now_unix_ms: u64, id: CommandId) {
        if self.state.role != Role::Primary {
            self.complete(
                id,
                Err(CommandError::Refused(format!(
                    "this appliance is {}, not the primary",
                    dyad_wire::Role::name(self.state.role)
                ))),
            );
            return;
        }
        // Split brain: the peer is primary too; this one gives way.
        let disagreeing = self
            .links
            .iter()
            .find(|(_, link)| {
                link.kind == LinkKind::Disagreement && link.handshake.hello.role == Role::Primary
            })
            .map(|(conn, link)| {
                (
                    *conn,
                    link.handshake.hello.epoch,
                    link.handshake.hello.node_name.clone(),
                )
            });
        if let Some((conn, peer_epoch, peer_name)) = disagreeing {
            self.state.observe_epoch(peer_epoch);
            self.state.role = Role::Backup;
            self.state.epoch = peer_epoch;
            self.state.forced_promotion_unresolved = false;
            if let Err(fault) = self.save_state() {
                self.complete(
                    id,
                    Err(CommandError::Local(format!(
                        "the demotion could not be saved, so this appliance is still the primary: {fault}"
                    ))),
                );
                return;
            }
            self.disagreement = None;
            // Reconnect so that both sides classify the link afresh.
            let stale: Vec<ConnId> = self
                .links
                .iter()
                .filter(|(other, link)| **other != conn && link.kind == LinkKind::Disagreement)
                .map(|(other, _)| *other)
                .collect();
            for other in stale {
                self.close(other, None);
            }
            self.close(conn, None);
            self.next_dial_unix_ms = now_unix_ms;
            self.next_sync_unix_ms = Some(now_unix_ms);
            self.complete(
                id,
                Ok(format!(
                    "demoted: this appliance is now the backup of {peer_name} in epoch {peer_epoch}; its sessions are kept and \
                     sent to {peer_name}; where its configuration differs it is saved in `dyad conflicts` and replaced at the next sync"
                )),
            );
            return;
        }
        let Some(conn) = self.peer_link() else {
            let text = format!(
                "{}; to fail over without it, run `dyad promote --force` on the backup",
                self.unreachable_text()
            );
            self.complete(id, Err(CommandError::Peer(text)));
            return;
        };
        let request = self.next_request();
        self.pending_demote = Some((id, request));
        self.send(conn, Message::PromotePeer(PromotePeer { request }));
    }

    /// The two appliances disagree about the relationship: report it on both sides and sync
    /// nothing until an operator resolves it.
    pub(super) fn enter_disagreement(&mut self, now_unix_ms: u64, conn: ConnId) {
        if self
            .links
            .iter()
            .any(|(other, link)| *other != conn && link.kind == LinkKind::Disagreement)
        {
            // One open link is enough to report the disagreement and to act on it.
            self.close(conn, None);
            return;
        }
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        link.kind = LinkKind::Disagreement;
        let hello = link.handshake.hello.clone();
        self.disagreement = Some(Disagreement {
            peer_name: hello.node_name.clone(),
            peer_role: hello.role,
            peer_epoch: hello.epoch,
            peer_config_version: None,
            peer_sessions_held: None,
            detected_unix_ms: now_unix_ms,
        });
        let text = format!(
            "split brain: {} is {} in epoch {} while this appliance is {} in epoch {}; demote one (`dyad demote`) or break and re-establish",
            hello.node_name,
            dyad_wire::Role::name(hello.role),
            hello.epoch,
            dyad_wire::Role::name(self.state.role),
            self.state.epoch
        );
        tracing::warn!("{text}");
        self.last_refusal = Some(text);
        if let (Ok(config_version), Ok(sessions_held)) =
            (self.store.config_version(), self.store.session_count())
        {
            let report = StateReport {
                role: self.state.role,
                epoch: self.state.epoch,
                config_version,
                sessions_held,
            };
            self.send(conn, Message::StateReport(report));
        }
    }

    pub(super) fn on_state_report(&mut self, report: StateReport) {
        if let Some(disagreement) = &mut self.disagreement {
            disagreement.peer_role = report.role;
            disagreement.peer_epoch = report.epoch;
            disagreement.peer_config_version = Some(report.config_version);
            disagreement.peer_sessions_held = Some(report.sessions_held);
        }
    }

    /// Refuses a message that only a relationship link may carry.
    pub(super) fn refuse_outside_relationship(&mut self, conn: ConnId) {
        let text = "this appliance is not in an agreed relationship with the sender; see `dyad status` on both appliances";
        self.send(
            conn,
            Message::Error(ErrorMessage::new(ReasonCode::RelationshipState, text)),
        );
    }
}
