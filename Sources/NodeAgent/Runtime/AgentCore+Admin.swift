import KeyrackCore
import Logging
import TrustQuorum

// The admin API: what each command does to the node, and its answer.

extension AgentCore {
    // MARK: - Admin API

    mutating func admin(_ command: AdminCommand, _ request: RequestID) {
        if let halted, !command.allowedWhenHalted {
            emit(.reply(request, AdminResponse(error: AdminError(.halted, halted))))
            return
        }
        switch command {
        case .status:
            emit(.reply(request, AdminResponse(status: status())))
        case .reconfigure(let ticket):
            let reconfigure = ticket.ticket
            do {
                try node.reconfigure(ticket, using: &random)
            } catch {
                emit(.reply(request, AdminResponse(error: AdminError(AdminError.Code(error.code), error.reason))))
                return
            }
            log(
                .notice, "coordinating a reconfiguration",
                [
                    "epoch": "\(reconfigure.epoch)", "members": "\(reconfigure.members.count)",
                    "threshold": "\(reconfigure.threshold)",
                ])
            flush(request: request)
        case .commit(let epoch, let signature):
            committing(request) { (node: inout Node) throws(CommitError) in
                try node.commit(epoch, signature: signature)
            }
        case .prepareAndCommit(let signed):
            committing(request) { (node: inout Node) throws(CommitError) in try node.prepareAndCommit(signed) }
        case .expunge(let signed):
            committing(request) { (node: inout Node) throws(CommitError) in try node.expunge(signed) }
            if let expunged = node.persistentState.expunged {
                log(.notice, "the operator removed this node from the rack", ["epoch": "\(expunged.epoch)"])
            }
        case .setPeers(let learnt):
            setPeers(learnt, request)
        case .diskRekeyed(let disk, let epoch):
            diskRekeyed(disk: disk, epoch: epoch, request)
        case .diskKey(let disk, let epoch, let scheme):
            emit(.reply(request, diskKey(disk: disk, epoch: epoch, scheme: scheme)))
        case .luksBind, .luksFormat:
            // The shell's volume manager runs cryptsetup; a core without one cannot.
            emit(.reply(request, AdminResponse(error: AdminError(.request, "this node manages no LUKS2 volumes"))))
        case .setPolicy:
            // The shell's policy store holds the measurement policy; the core never appraises evidence.
            emit(
                .reply(request, AdminResponse(error: AdminError(.request, "this node has no measurement policy store")))
            )
        }
    }

    mutating func committing(
        _ request: RequestID,
        _ body: (inout Node) throws(CommitError) -> Void
    ) {
        let before = node.persistentState.latestCommittedEpoch
        do {
            try body(&node)
        } catch {
            flush(request: nil)
            emit(.reply(request, AdminResponse(error: AdminError(AdminError.Code(error.code), error.description))))
            return
        }
        if let after = node.persistentState.latestCommittedEpoch, after != before {
            log(.notice, "committed", ["epoch": "\(after)"])
        }
        flush(request: request)
    }

    mutating func setPeers(_ learnt: [PlatformId: PeerAddress], _ request: RequestID) {
        // The configuration file wins for the peers it names (as at start).
        // Compared with what is on disk, so that a request repeated after a failed write writes again.
        let added = learnt.filter {
            settings.configuredPeers[$0.key] == nil && agentState.peers[$0.key.description] != $0.value.description
        }
        guard !added.isEmpty else {
            emit(.reply(request, AdminResponse()))
            return
        }
        let before = agentState.peers
        for (platform, address) in added {
            addressBook[platform] = address
            agentState.peers[platform.description] = address.description
        }
        startDialers()
        saveAgentState()
        pending = .agentState(generation: agentState.generation, undo: .peers(before), request: request)
    }

    /// The operator re-keyed `disk` to `epoch`'s key (of the current scheme:
    /// what `diskKey` gives): record it, so that re-keying is reported from
    /// there on.
    mutating func diskRekeyed(disk: String, epoch: Epoch, _ request: RequestID) {
        let refuse = { (code: AdminError.Code, reason: String) in
            Action.reply(request, AdminResponse(error: AdminError(code, reason)))
        }
        guard settings.disks.contains(disk) else {
            emit(refuse(.diskUnknown, "'\(disk)' is not one of this node's disks"))
            return
        }
        guard node.persistentState.committedEpochs.contains(epoch) else {
            emit(refuse(.request, "epoch \(epoch) is not committed on this node"))
            return
        }
        let now = DiskKeyVersion(epoch)
        let before = agentState.keyed(disk)
        if let before, now < before {
            emit(refuse(.request, "'\(disk)' is already keyed under \(before); it cannot go back to \(now)"))
            return
        }
        guard before != now else {
            emit(.reply(request, AdminResponse()))
            return
        }
        agentState.setKeyed(disk, now)
        saveAgentState()
        pending = .agentState(generation: agentState.generation, undo: .disk(disk, before, now: now), request: request)
    }

    mutating func diskKey(disk: String, epoch: Epoch?, scheme: DiskKeyScheme) -> AdminResponse {
        guard settings.disks.contains(disk) else {
            return AdminResponse(error: AdminError(.diskUnknown, "'\(disk)' is not one of this node's disks"))
        }
        // An earlier release's key is the same on every node for a disk of this name (review L10): it is
        // given only while this disk is keyed under it, to re-key from.
        if scheme != .current, agentState.keyed(disk)?.scheme != scheme {
            return AdminResponse(
                error: AdminError(
                    .request,
                    "'\(disk)' is not keyed under a \(scheme) key; only the current (\(DiskKeyScheme.current)) key is given"
                ))
        }
        do {
            let key = try derivedKey(disk: disk, epoch: epoch, scheme: scheme)
            return AdminResponse(key: key.key.withUnsafeBytes { $0.hexString }, keyEpoch: key.epoch)
        } catch {
            return AdminResponse(error: error)
        }
    }

    /// The key of `disk` at `epoch` (the latest committed one if nil): the
    /// one derivation behind the admin API's `diskKey` and the volumes' keys.
    /// Refused once expunged, before any commit, and until the latest
    /// committed epoch's rack secret is loaded.
    mutating func derivedKey(disk: String, epoch: Epoch?, scheme: DiskKeyScheme = .current) throws(AdminError)
        -> DiskKey
    {
        if let expunged = node.persistentState.expunged {
            throw AdminError(.expunged, "this node was removed from the rack at epoch \(expunged.epoch)")
        }
        guard let latest = node.persistentState.latestCommittedEpoch else {
            throw AdminError(.notCommitted, "this node has committed no configuration")
        }
        guard unlockedEpoch == latest else {
            throw AdminError(.locked, "the rack secret is not loaded yet (waiting for shares)")
        }
        let wanted = epoch ?? latest
        let secret: RackSecret?
        do {
            secret = try node.loadRackSecret(wanted)
        } catch {
            throw AdminError(AdminError.Code(error.code), error.description)
        }
        guard let secret else { throw AdminError(.locked, "the rack secret is not loaded yet") }
        return DiskKey(
            secret: secret, epoch: wanted, rackId: settings.rackId, platform: settings.platform,
            diskId: Array(disk.utf8), scheme: scheme)
    }

    func haltedOrOK() -> AdminResponse {
        halted.map { AdminResponse(error: AdminError(.halted, $0)) } ?? AdminResponse()
    }
}
